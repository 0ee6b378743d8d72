"""task=convert: published weights (a generator, and a discriminator when given) as a pix2pix-ms checkpoint,
written atomically, then read back and compared tensor by tensor."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import mindspore as ms
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from pix2pix import checkpoint
from pix2pix.backend.runtime import setup_device
from pix2pix.config.implied import apply_implied
from pix2pix.errors import Pix2PixError
from pix2pix.tasks.common import command_line_overrides
from pix2pix.weights.mapping import weights_for
from pix2pix.weights.published import IMPLIED_FORMS, IMPLIED_META, Published, describe, has_discriminator, is_ours

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> None:
    """Check the keys and files (an existing output is never replaced), then convert."""
    conv = cfg.convert
    source = existing_file("convert.input", conv.input)
    if is_ours(source):
        raise Pix2PixError(f"convert.input={conv.input}: already a pix2pix-ms checkpoint; use it as ckpt= as it is")
    if not conv.output:
        raise Pix2PixError("task=convert needs convert.output=FILE.ckpt: the pix2pix-ms checkpoint to write")
    output = Path(conv.output).expanduser()
    if output.exists():
        raise Pix2PixError(f"convert.output={conv.output}: already exists; choose another file name (or remove it)")
    d_file = existing_file("convert.discriminator", conv.discriminator) if conv.discriminator else None
    if d_file is None and has_discriminator(source):
        d_file = source  # an MMagic file holds both
    convert(cfg, source, d_file, output)


def existing_file(key: str, value: str) -> Path:
    """The file `key` names; one line when it is not given or not there."""
    if not value:
        raise Pix2PixError(f"task=convert needs {key}=FILE (a published .pth or .ckpt)")
    path = Path(value).expanduser()
    if not path.is_file():
        raise Pix2PixError(f"{key}={value}: no such file")
    return path


def convert(cfg: DictConfig, source: Path, d_file: Path | None, output: Path) -> dict[str, str]:
    """Write `output` from the published G at `source` (and D at `d_file`); returns its meta."""
    published = [describe(source, "G"), *([describe(d_file, "D")] if d_file else [])]
    overrides = command_line_overrides()
    cfg = apply_implied(cfg, merged_overrides(published), overrides)
    setup_device(**cfg.device)
    networks = {"G": instantiate(cfg.model.generator)}
    if d_file:
        networks["D"] = instantiate(cfg.model.discriminator)
    arrays = {}
    for pub in published:
        log.info("%s", pub.describe())
        for note in pub.notes:
            log.info("%s", note)
        for name, array in weights_for(pub, networks[pub.role]).items():
            arrays[f"{pub.role}.{name}"] = array
    state = {
        name: param for role, net in networks.items() for name, param in checkpoint.network_state(role, net).items()
    }
    for name, param in state.items():
        param.set_data(ms.Tensor(arrays[name]))
    meta = {
        IMPLIED_META: " ".join(recorded_overrides(cfg, published, overrides)),
        "converted_from": str(source.absolute()),
    }
    checkpoint.save(output, state, meta, replace=False, advice="or check that you may write there")
    verify(output, arrays)
    roles = " and ".join(f"{pub.role} ({pub.table.network})" for pub in published)
    log.info(
        "wrote %s: %s, every tensor read back equal to the file's; its config: %s", output, roles, meta[IMPLIED_META]
    )
    log.info("use it with: python launch.py task=predict ckpt=%s predict.input=IMAGES", output)
    return meta


def merged_overrides(published: list[Published]) -> list[str]:
    """G's implied overrides, then D's where they add a key; one line when the two files disagree."""
    merged: dict[str, str] = {}
    for pub in published:
        for item in pub.implied:
            key, _, value = item.partition("=")
            if key in merged and merged[key] != value:
                raise Pix2PixError(
                    f"{pub.path}: implies {key}={value}, and {published[0].path} {key}={merged[key]}: "
                    "a generator and discriminator of one model agree"
                )
            merged[key] = value
    return [f"{key}={value}" for key, value in merged.items()]


def recorded_overrides(cfg: DictConfig, published: list[Published], overrides: list[str]) -> list[str]:
    """What the checkpoint records for its later use: the files' implied keys with the values the networks were
    built with (the command line's where it set them), and its own choices of the same kinds."""
    chosen = {item.partition("=")[0]: item for item in overrides if any(re.fullmatch(f, item) for f in IMPLIED_FORMS)}
    recorded = {}
    for item in merged_overrides(published):
        key = item.partition("=")[0]
        if "/" in key:
            recorded[key] = chosen.get(key, item)
        else:
            value = OmegaConf.select(cfg, key)
            recorded[key] = f"{key}={str(value).lower() if isinstance(value, bool) else value}"
    for key, item in chosen.items():
        recorded.setdefault(key, item)
    return list(recorded.values())


def verify(output: Path, arrays: dict[str, np.ndarray]) -> None:
    """Read `output` back: every tensor equal to what was written, and its recorded overrides there."""
    loaded = checkpoint.load(output)
    for name, array in arrays.items():
        if name not in loaded or not np.array_equal(loaded[name].asnumpy(), array):
            raise Pix2PixError(f"{output}: {name} did not read back as written; the disk may be failing")
    if checkpoint.read_meta(output).get(IMPLIED_META) is None:
        raise Pix2PixError(f"{output}: its {IMPLIED_META} entry did not read back")
