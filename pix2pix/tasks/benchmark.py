"""task=benchmark: time the configured training step and project the whole training run.

Runs the real train-step Cell on the configured dataset (synthetic pairs of the same shape when
the dataset is not on this machine) for `benchmark.warmup_steps` untimed and `benchmark.steps`
timed steps, and writes `benchmark.json` into the run folder. A multi-device configuration
(parallel=8pcs) is measured on one device and projected with each device taking its share of
the steps (ideal data-parallel scaling: an upper bound on the speed-up).
"""

from __future__ import annotations

import json
import logging
import math
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import mindspore as ms
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from pix2pix import checkpoint
from pix2pix.backend.runtime import describe_cpu_kernels, seed_everything, setup_device
from pix2pix.data.aligned import AlignedData
from pix2pix.data.sizes import height_width
from pix2pix.data.synthetic import SyntheticData
from pix2pix.errors import Pix2PixError
from pix2pix.models.layers import count_params
from pix2pix.tasks.common import build_dataset
from pix2pix.tasks.train import build_train_step
from pix2pix.track.files import write_text

log = logging.getLogger(__name__)


def benchmark_data(cfg: DictConfig) -> tuple[AlignedData, int, str]:
    """The dataset to time on, the number of training pairs to project with, and where they came from."""
    data = build_dataset(cfg)
    if data.download or isinstance(data, SyntheticData):
        data.ensure_present()  # generate, or download as asked; a missing dataset otherwise gets a stand-in
    if data.train_dir.is_dir():
        data.prepare()
        return data, len(data.files("train")), "real"
    pairs = cfg.dataset.dataset_size
    if not pairs:
        raise Pix2PixError(f"{data.train_dir}: no data, and dataset.dataset_size is not set to project with")
    needed = cfg.dataset.batch_size * (cfg.benchmark.warmup_steps + cfg.benchmark.steps + 1)
    stand_in = SyntheticData(
        root=str(Path(cfg.paths.data_dir) / "synthetic"),
        image_size=max(data.crop_size),
        num_train=min(needed, 64),
        num_val=1,
        name=f"synthetic stand-in for {data.name}",
        direction=data.direction,
        load_size=list(data.load_size),
        crop_size=list(data.crop_size),
        preprocess=data.preprocess_mode,
        fit=data.fit,
        batch_size=data.batch_size,
        flip=data.flip,
        seed=cfg.seed,
    )
    stand_in.prepare()
    log.info("%s is not here: timing on synthetic pairs of the same shape, projecting %d pairs", data.train_dir, pairs)
    return stand_in, pairs, "synthetic (same shape)"


def checkpoint_sizes(step) -> dict[str, float]:
    """Sizes of the generator alone (the ModelZoo's "checkpoint for fine tuning") and of the full training state."""
    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, state in (
            ("checkpoint_mb", checkpoint.network_state("G", step.G)),
            ("training_checkpoint_mb", checkpoint.training_state(step)),
        ):
            path = checkpoint.save(Path(tmp) / f"{key}.ckpt", state, {})
            sizes[key] = round(path.stat().st_size / 2**20, 1)
            path.unlink()
    return sizes


def device_memory_mb() -> float | None:
    """Peak device memory where the backend reports it (GPU, Ascend); None on the CPU."""
    try:
        peak = ms.runtime.max_memory_allocated()
    except (AttributeError, RuntimeError, ValueError):
        return None
    return round(peak / 2**20, 1) if peak else None


def resident_mb() -> float | None:
    """This process's resident memory now (Linux), to tell what earlier jobs in the process left behind."""
    statm = Path("/proc/self/statm")
    if not statm.is_file():
        return None
    return round(int(statm.read_text().split()[1]) * resource.getpagesize() / 2**20, 1)


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or platform.machine()


def hardware(device: str) -> str:
    if device == "cpu":
        return f"{cpu_model()} ({describe_cpu_kernels()})"
    return f"{device} {ms.get_context('device_id')}"


def experiment_name() -> str | None:
    return HydraConfig.get().runtime.choices.get("experiment") if HydraConfig.initialized() else None


def time_steps(step, data: AlignedData, total: int) -> list[float]:
    """Seconds of each of `total` steps (the first includes graph compilation)."""
    epochs = math.ceil(total / data.steps_per_epoch())
    batches = data.train_dataset(1, epochs).create_tuple_iterator(num_epochs=1)
    times = []
    step.set_train(True)
    for real_A, real_B in batches:
        start = time.perf_counter()
        losses = step.losses(real_A, real_B)
        times.append(time.perf_counter() - start)
        if not step.skipped_last and not all(math.isfinite(x) for x in losses):  # amp skips overflows
            raise Pix2PixError(f"benchmark step {len(times)}: a loss is not finite ({losses})")
        if len(times) == total:
            break
    return times


def run(cfg: DictConfig) -> float:
    """task=benchmark; the median ms/step, what a sweep over settings minimises."""
    return benchmark(cfg)["ms_per_step"]["median"]


def benchmark(cfg: DictConfig) -> dict:
    warmup, steps = cfg.benchmark.warmup_steps, cfg.benchmark.steps
    if warmup < 1 or steps < 1:
        raise Pix2PixError("benchmark.warmup_steps and benchmark.steps must be 1 or more (the first step compiles)")
    memory_before = resident_mb()
    device = setup_device(**cfg.device)
    seed_everything(cfg.seed)
    data, pairs, source = benchmark_data(cfg)
    step = build_train_step(cfg)
    times = time_steps(step, data, warmup + steps)
    result = {
        **setup_facts(cfg, device, step, data_dir=data.train_dir, source=source),
        "warmup_steps": warmup,
        "timed_steps": steps,
        "first_step_s": round(times[0], 3),
        "amp_skipped_steps": int(step.loss_scale.skipped_steps.asnumpy()) if step.scaled else 0,
        **timing_and_projection(times[warmup:], cfg.dataset.batch_size, cfg.parallel.device_num, pairs, cfg),
        # The process's peak: in a multirun with the basic launcher it includes earlier jobs' leftovers
        # (host_memory_before_mb says how much); one process per benchmark gives the clean figure.
        "peak_host_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "host_memory_before_mb": memory_before,
        "peak_device_memory_mb": device_memory_mb(),
        **checkpoint_sizes(step),
        "command": " ".join(["python launch.py", *sys.argv[1:]]),
    }
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "benchmark.json", json.dumps(result, indent=2) + "\n")
    log.info(
        "%s on %s: %.1f ms/step median (p10 %.1f, p90 %.1f), %.2f img/s, first step %.1f s, peak RSS %.0f MB; "
        "%d epochs x %d steps on %d device(s) -> %.2f h projected",
        *(result["experiment"] or cfg.dataset.name, device, *result["ms_per_step"].values(), result["images_per_s"]),
        *(times[0], result["peak_host_memory_mb"], result["epochs"], result["steps_per_epoch"], result["devices"]),
        result["projected_total_h"],
    )
    return result


def setup_facts(cfg: DictConfig, device: str, step, data_dir: Path, source: str) -> dict:
    """What was timed: the experiment, the machine, the software, the data and the networks."""
    data_shape = height_width(cfg.dataset.crop_size, "dataset.crop_size")
    return {
        "experiment": experiment_name(),
        "device": device,
        "hardware": hardware(device),
        "mindspore_version": ms.__version__,
        "python_version": platform.python_version(),
        "dataset": cfg.dataset.name,
        "data": source,
        "data_dir": str(data_dir),
        "crop_size": list(data_shape) if data_shape[0] != data_shape[1] else data_shape[0],  # (height, width)
        "preprocess": cfg.dataset.get("preprocess", "resize_and_crop"),
        "amp": cfg.get("amp", "O0"),
        "batch_size": cfg.dataset.batch_size,
        "devices": cfg.parallel.device_num,
        "learning_rate": cfg.optimizer.learning_rate,
        "pad_mode": cfg.model.pad_mode,
        "gan_mode": cfg.model.gan_mode,
        "generator": type(step.G).__name__,
        "generator_params": count_params(step.G),
        "discriminator_params": count_params(step.D),
    }


def timing_and_projection(seconds: list[float], batch: int, devices: int, pairs: int, cfg: DictConfig) -> dict:
    """The timed steps' median, p10 and p90, the rates, and the whole run projected from the median (each
    device taking its share of the steps: ideal data-parallel scaling, an upper bound on the speed-up)."""
    timed = np.array(seconds) * 1000
    median = float(np.median(timed))
    steps_per_epoch = pairs // (batch * devices)
    epochs = cfg.schedule.epoch_num
    return {
        "ms_per_step": {
            "median": round(median, 2),
            "p10": round(float(np.percentile(timed, 10)), 2),
            "p90": round(float(np.percentile(timed, 90)), 2),
        },
        "images_per_s": round(1000 * batch / median, 3),
        "job_images_per_s": round(1000 * batch * devices / median, 3),
        "epochs": epochs,
        "train_pairs": pairs,
        "steps_per_epoch": steps_per_epoch,
        "projected_total_h": round(epochs * steps_per_epoch * median / 1000 / 3600, 3),
    }
