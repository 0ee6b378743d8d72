"""The one checkpoint format: G, D, both optimizers' states and the epoch, in one
MindSpore .ckpt file written atomically (temporary file, fsync, rename) with a CRC."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import mindspore as ms
from mindspore import nn

from pix2pix.errors import Pix2PixError

OPTIMIZER_SLOTS = ("moment1", "moment2")
OPTIMIZER_SCALARS = ("global_step", "learning_rate", "beta1_power", "beta2_power")


def network_state(prefix: str, net: nn.Cell) -> dict[str, ms.Parameter]:
    """Parameters (and BatchNorm running stats) by their place in the network, e.g.
    G.down.1.1.weight: stable whatever container the network is attached to."""
    return {f"{prefix}.{name}": param for name, param in net.parameters_and_names()}


def optimizer_state(prefix: str, optimizer: nn.Optimizer, net: nn.Cell) -> dict[str, ms.Parameter]:
    """Adam's moments keyed by the network name of the parameter they belong to, plus its scalars."""
    place = {id(param): name for name, param in net.parameters_and_names()}
    state = {f"{prefix}.{attr}": getattr(optimizer, attr) for attr in OPTIMIZER_SCALARS if hasattr(optimizer, attr)}
    for slot in OPTIMIZER_SLOTS:
        for param, moment in zip(optimizer.parameters, getattr(optimizer, slot, ())):
            state[f"{prefix}.{slot}.{place[id(param)]}"] = moment
    return state


def training_state(step: nn.Cell) -> dict[str, ms.Parameter]:
    """Everything a Pix2PixTrainStep needs to continue: G, D, optimizer_G, optimizer_D."""
    return {
        **network_state("G", step.G),
        **network_state("D", step.D),
        **optimizer_state("optimizer_G", step.optimizer_G, step.G),
        **optimizer_state("optimizer_D", step.optimizer_D, step.D),
    }


def save(
    path: Path,
    state: dict[str, ms.Parameter],
    meta: dict[str, int | float | str],
    before_rename: Callable[[], None] | None = None,
) -> Path:
    """Write `state` and `meta` to `path` without ever leaving a half-written file there.

    A failed write (disk full, file-size limit, permissions) removes the partial file, leaves any
    earlier file at `path` untouched, and is raised as one line that names the folder.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial-{os.getpid()}.ckpt")
    try:
        entries = [{"name": name, "data": param} for name, param in state.items()]
        ms.save_checkpoint(entries, str(tmp), append_dict=dict(meta), crc_check=True)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if before_rename:  # fault injection (tests): a kill between the write and the rename
            before_rename()
        os.replace(tmp, path)
    except OSError as err:
        kept = f"{path.name} is unchanged" if path.exists() else "no earlier checkpoint was there"
        raise Pix2PixError(
            f"{path}: writing the checkpoint failed ({err.strerror or err}); the partial file was removed and "
            f"{kept}; free space in {path.parent} (or lower checkpoint.keep_last)"
        ) from None
    finally:
        for leftover in (tmp, tmp.with_suffix(".tmp")):  # MindSpore writes <name>.tmp before its own rename
            leftover.unlink(missing_ok=True)
    return path


def partial_files(folder: Path) -> list[Path]:
    """Temporary files of checkpoint writes that never finished (the process was killed)."""
    return sorted(folder.glob(".*.partial-*")) if folder.is_dir() else []


def prune(folder: Path, keep_last: int | None) -> list[Path]:
    """Delete all but the `keep_last` newest epoch_NNN.ckpt files (last.ckpt is never touched)."""
    if not keep_last:
        return []
    periodic = sorted(folder.glob("epoch_*.ckpt"), key=lambda p: int(p.stem.split("_")[1]))
    doomed = periodic[:-keep_last]
    for old in doomed:
        old.unlink()
    return doomed


def load(path: Path) -> dict[str, ms.Parameter]:
    """Read a checkpoint, checking its CRC; a missing, truncated or foreign file gets one line."""
    if not path.is_file():
        raise Pix2PixError(f"ckpt={path}: no such checkpoint file")
    try:
        return ms.load_checkpoint(str(path), crc_check=True)
    except (ValueError, RuntimeError, OSError, TypeError) as err:
        raise Pix2PixError(f"{path}: not a readable pix2pix checkpoint ({str(err).splitlines()[0]})") from None


def restore(state: dict[str, ms.Parameter], loaded: dict[str, ms.Parameter], path: Path) -> None:
    """Copy every entry of `state` from `loaded`; refuse missing keys or other shapes."""
    missing = [name for name in state if name not in loaded]
    if missing:
        raise Pix2PixError(
            f"{path}: lacks {len(missing)} of the {len(state)} entries this model needs (first: {missing[0]}); "
            "use the model config the checkpoint was trained with"
        )
    for name, param in state.items():
        value = loaded[name]
        if tuple(value.shape) != tuple(param.shape):
            raise Pix2PixError(
                f"{path}: {name} has shape {tuple(value.shape)}, the model expects {tuple(param.shape)}; "
                "use the model config the checkpoint was trained with"
            )
        param.set_data(value)


def restore_generator(generator: nn.Cell, path: Path) -> dict[str, int]:
    """Load the generator's weights (the `G.` entries) from a training checkpoint; returns its epoch and step."""
    loaded = load(path)
    state = network_state("G", generator)
    extra = sorted(name for name in loaded if name.startswith("G.") and name not in state)
    if extra:
        raise Pix2PixError(
            f"{path}: holds {len(extra)} generator entries this model lacks (first: {extra[0]}); "
            "use the model config the checkpoint was trained with"
        )
    restore(state, loaded, path)
    return {key: int(loaded[key].asnumpy()) for key in ("epoch", "global_step") if key in loaded}
