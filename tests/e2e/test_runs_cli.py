"""A received run folder (a copy of a trained TINY run, altered) is data: its recorded config cannot run
code and links inside it are refused, through the command line and the Python API."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from PIL import Image

from pix2pix.errors import Pix2PixError
from pix2pix.runs import (
    RECORDED_CONFIG,
)
from tests.helpers import run_launch

# case: (where the node is planted, the node, the key the refusal names)
PLANTED = {
    "shutil.copyfile at depth": (
        "model.generator.extra",
        {"_target_": "shutil.copyfile", "src": "{secret}", "dst": "{victim}"},
        "model.generator.extra._target_",
    ),
    "builtins.open in a list": (
        "model.discriminator.layers",
        [{"_target_": "builtins.open", "file": "{victim}", "mode": "w"}],
        "model.discriminator.layers.0._target_",
    ),
    "an interpolated target": ("dataset._target_", "${oc.env:HOME}", "dataset._target_"),
    "a node oc.create builds": ("model.generator", "${oc.create:{_target_: os.getcwd}}", "model.generator"),
}


def plant(run: Path, tmp_path: Path, case: str) -> Path:
    """A copy of a trained run whose recorded config carries a node of the sender's choosing."""
    hostile = tmp_path / "received-run"
    shutil.copytree(run, hostile, ignore=shutil.ignore_patterns("predict", "eval", "export"))
    secret, victim = tmp_path / "secret.txt", tmp_path / "victim.txt"
    secret.write_text("the sender's file\n")
    victim.write_text("my file\n")
    key, node, _ = PLANTED[case]
    text = json.dumps(node).replace("{secret}", str(secret)).replace("{victim}", str(victim))
    cfg = OmegaConf.load(hostile / RECORDED_CONFIG)
    OmegaConf.update(cfg, key, json.loads(text), force_add=True)
    OmegaConf.save(cfg, hostile / RECORDED_CONFIG)
    return hostile


# Every planted node with predict, and every task that reads a run folder with one of them.
CASES = [(case, "predict") for case in PLANTED] + [("shutil.copyfile at depth", t) for t in ("eval", "export", "train")]


@pytest.mark.parametrize("case,task", CASES)
def test_a_received_run_folder_cannot_run_code(trained_run, tmp_path, case, task):
    hostile = plant(trained_run, tmp_path, case)
    photo = tmp_path / "photo.png"
    Image.new("RGB", (16, 16)).save(photo)
    args = [f"task={task}", f"ckpt={hostile}", "device=cpu", *([f"predict.input={photo}"] if task == "predict" else [])]
    result = run_launch(args, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "Traceback" not in output, output[-3000:]
    (line,) = [line for line in output.splitlines() if "nothing was run" in line]
    assert f"{hostile / RECORDED_CONFIG}: {PLANTED[case][2]}: " in line
    assert (tmp_path / "victim.txt").read_text() == "my file\n"
    assert not any(hostile.glob(f"{task}/*")) or task == "train"


def test_the_python_api_refuses_it_too(trained_run, tmp_path):
    from pix2pix.api import load_generator

    hostile = plant(trained_run, tmp_path, "shutil.copyfile at depth")
    with pytest.raises(
        Pix2PixError, match=r"model.generator.extra._target_: shutil.copyfile is not one of the classes"
    ):
        load_generator(hostile, device="cpu")
    assert (tmp_path / "victim.txt").read_text() == "my file\n"


@pytest.mark.parametrize("link", ["eval", ".hydra/config.yaml", ".run.lock", "predict"])
def test_a_received_run_folder_with_a_link_is_refused(trained_run, tmp_path, link):
    """Tasks write into a run folder (eval/, .hydra/, launch.log, .run.lock): through a link they would
    write wherever the sender pointed it."""
    hostile = shutil.copytree(trained_run, tmp_path / "received", ignore=shutil.ignore_patterns("eval", "predict"))
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "notes.txt").write_text("mine\n")
    path = hostile / link
    if path.exists():
        target = tmp_path / "moved"
        path.rename(target)
        path.symlink_to(target)  # the same content, through a link
    else:
        path.symlink_to(victim if "." not in link else victim / "notes.txt")
    result = run_launch(["task=eval", f"ckpt={hostile}", "device=cpu"], cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "Traceback" not in output, output[-3000:]
    assert f"{path}: a link inside a run folder" in output
    assert sorted(p.name for p in victim.iterdir()) == ["notes.txt"] and (victim / "notes.txt").read_text() == "mine\n"
