"""The OmegaConf resolvers the configs use, registered once per process."""

from __future__ import annotations

from omegaconf import OmegaConf

from pix2pix.runs import hydra_record_dir, task_output_dir


def register_resolvers() -> None:
    """`${add:a,b}` sums numbers (D's input channels, epoch_num); `${task_dir:task,ckpt,default}`
    puts eval/predict/export of a run into `<run>/<task>` (see pix2pix.runs.task_output_dir);
    `${record_dir:task,ckpt}` keeps a resumed run's own record (pix2pix.runs.hydra_record_dir)."""
    for name, resolver in (
        ("add", lambda *xs: sum(xs)),
        ("task_dir", task_output_dir),
        ("record_dir", hydra_record_dir),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
