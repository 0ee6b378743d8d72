"""Every `python launch.py ...` command in the README and docs/ passes the command-line check, as it
would before a run (pix2pix.config.checks.check_overrides); where the docs show the `error:` line a
command gets, the check gives that line."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from pix2pix import checkpoint
from pix2pix.config.checks import check_overrides
from pix2pix.errors import Pix2PixError
from tests.helpers import ROOT, TINY, compose_config

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# What the docs write for a run folder (or a checkpoint in one): the test puts a run folder there, and for
# received/run one whose recorded config was tampered with, as the docs' example says.
RUN_PLACEHOLDERS = ("outputs/DATE/TIME", "outputs/2026-11-25/10-00-00", "outputs/...", "received/run")
WHOLE_VALUE_PLACEHOLDERS = {"ckpt=RUN": "ckpt=outputs/DATE/TIME", "ckpt=...": "ckpt=outputs/DATE/TIME"}
# Published files the docs name, in the folder a command runs in: the fixtures of their formats.
PUBLISHED_FILES = {
    "latest_net_G.pth": "unet_256.zip.pth",
    "latest_net_D.pth": "basic_d.zip.pth",
    "pix2pix_facades.pth": "unet_256.mmagic.pth",
    "Generator_200.ckpt": "Generator_200.ckpt",
    "facades.ckpt": "Generator_200.ckpt",
}
FIXTURES = ROOT / "tests" / "fixtures" / "published"
EXPERIMENT_PLACEHOLDERS = ("experiment=$e", "experiment=NAME")  # a shell loop over every experiment
COMMAND = re.compile(r"^(?:\$ )?python launch\.py(?P<args>(?: .*)?)$")
INLINE = re.compile(r"`(?:\$ )?python launch\.py(?P<args>(?: [^`]*)?)`")


def lines_of(path: Path) -> list[str]:
    """The file's lines, with shell continuations (a trailing backslash) joined."""
    out: list[str] = []
    for line in path.read_text().splitlines():
        if out and out[-1].endswith("\\"):
            out[-1] = out[-1][:-1].rstrip() + " " + line.strip()
        else:
            out.append(line.strip())
    return out


def documented_commands() -> list[tuple[str, str, str | None]]:
    """(where, the arguments, the documented `error:` line or None) of every command in the docs."""
    found = []
    for path in DOCS:
        lines = lines_of(path)
        for number, line in enumerate(lines):
            match = COMMAND.match(line.split("  #")[0].strip())
            spans = [match] if match else list(INLINE.finditer(line))
            after = lines[number + 1] if number + 1 < len(lines) else ""
            error = after if match and line.startswith("$ ") and after.startswith("error: ") else None
            found += [(f"{path.name}:{number + 1}", span["args"].strip(), error) for span in spans]
    return found


def runnable(args: str) -> list[str] | None:
    """The overrides launch.py would check, a sweep shrunk to its first job; None when the command is not
    one the check sees (Hydra's own flags, a shell substitution)."""
    if "$(" in args:
        return None
    for placeholder in EXPERIMENT_PLACEHOLDERS:
        args = args.replace(placeholder, "experiment=facades_gpu_1pc")
    items = [WHOLE_VALUE_PLACEHOLDERS.get(item, item) for item in shlex.split(args)]
    if "-m" in items:
        items = [item for item in items if item != "-m"]
        items = [re.sub(r"=([^,=]*),.*$", r"=\1", item) for item in items]  # the first value of each sweep
    if any(item.startswith("-") or "glob(" in item for item in items):
        return None
    return items


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Run folders as training leaves them, by the placeholder they stand for: a recorded config, a last.ckpt
    and an older epoch_050.ckpt (scalars only: the check reads no tensors)."""
    work = tmp_path_factory.mktemp("docs")
    cfg = compose_config(TINY, work)
    folders = {}
    for placeholder in RUN_PLACEHOLDERS:
        folder = work / placeholder.replace("/", "_")
        (folder / ".hydra").mkdir(parents=True)
        if placeholder == "received/run":
            cfg = cfg.copy()
            OmegaConf.update(cfg, "model.generator.extra", {"_target_": "shutil.copyfile"}, force_add=True)
        OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
        for name, step in (("last.ckpt", 8), ("epoch_050.ckpt", 4)):
            point = checkpoint.ResumePoint(epoch=step // 4, step_in_epoch=0, global_step=step, val_L1_before=0.5)
            checkpoint.save(folder / "checkpoints" / name, {}, point.meta())
        folders[placeholder] = folder
    return folders


def with_runs(text: str, runs: dict[str, Path]) -> str:
    for placeholder, folder in runs.items():
        text = text.replace(placeholder, str(folder))
    return text


def test_the_docs_hold_commands():
    commands = documented_commands()
    assert len(commands) > 30 and sum(error is not None for _, _, error in commands) >= 4


@pytest.mark.parametrize("where,args,error", documented_commands(), ids=lambda x: x if isinstance(x, str) else "")
def test_every_documented_command_passes_the_check(where, args, error, runs, tmp_path, monkeypatch):
    overrides = runnable(args)
    if overrides is None:
        return  # not a command the check sees: Hydra handles --help, --cfg and shell substitutions
    monkeypatch.chdir(tmp_path)
    for name, fixture in PUBLISHED_FILES.items():
        shutil.copyfile(FIXTURES / fixture, tmp_path / name)
    overrides = [with_runs(item, runs) for item in overrides]
    if error is None:
        check_overrides(overrides)
        return
    with pytest.raises(Pix2PixError) as raised:
        check_overrides(overrides)
    expected = re.escape(with_runs(error, runs)).replace(re.escape("(...)"), ".*").replace(re.escape("..."), ".*")
    assert re.fullmatch(expected, f"error: {raised.value}"), f"{where}: {raised.value}"
