"""The one checkpoint format: G, D, both optimizers' states and where the run stood (ResumePoint, the
meta keys), in one MindSpore .ckpt file written atomically (temporary file, fsync, rename) with a CRC.

MindSpore is imported where tensors are read or written: `read_meta` reads a checkpoint's scalars
without it, for the decisions made before Hydra starts (does a resume continue its run or fork it?).
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pix2pix.errors import Pix2PixError
from pix2pix.track.files import fsync_file, fsync_folder, write_failed

if TYPE_CHECKING:
    import mindspore as ms
    from mindspore import nn

log = logging.getLogger(__name__)

LOSS_SCALE_STATE = ("scale", "good_steps", "skipped_steps")  # checkpointed as loss_scale.<name>
OPTIMIZER_SLOTS = ("moment1", "moment2")
OPTIMIZER_SCALARS = ("global_step", "learning_rate", "beta1_power", "beta2_power")


@dataclass(frozen=True)
class ResumePoint:
    """Where a checkpoint left a run (its meta keys): epochs completed, steps into the next, global step."""

    epoch: int
    step_in_epoch: int
    global_step: int
    val_L1_before: float
    device_num: int = 1  # the ranks that trained it (steps per epoch depend on it)
    batch_size: int | None = None  # None: a checkpoint written before these were recorded
    train_files: str | None = None  # the training split's fingerprint (AlignedData.fingerprint)
    seed: int = 0

    def meta(self) -> dict[str, int | float | str]:
        return {key: value for key, value in asdict(self).items() if value is not None}

    @classmethod
    def from_entries(cls, entries: dict) -> ResumePoint:
        """From a loaded checkpoint (MindSpore parameters) or read_meta's plain values; absent keys take
        the values of a checkpoint written before they were recorded."""

        def number(key: str, default: float) -> float:
            value = entries.get(key, default)
            return float(value.asnumpy() if hasattr(value, "asnumpy") else value)

        train_files = entries.get("train_files")
        return cls(
            epoch=int(number("epoch", 0)),
            step_in_epoch=int(number("step_in_epoch", 0)),
            global_step=int(number("global_step", 0)),
            val_L1_before=number("val_L1_before", float("nan")),
            device_num=int(number("device_num", 1)),
            batch_size=int(number("batch_size", 0)) or None,
            train_files=train_files if isinstance(train_files, str) else None,
            seed=int(number("seed", 0)),
        )


def mid_epoch_change(resume: ResumePoint, device_num: int, batch_size: int, train_files: str) -> str | None:
    """What differs from the run that wrote a mid-epoch checkpoint, in a way that changes the epoch's steps
    or pairs (the rest of the epoch could not be replayed); None when nothing does."""
    if resume.device_num != device_num:
        return f"parallel.device_num={resume.device_num} then, {device_num} now"
    if resume.batch_size is not None and resume.batch_size != batch_size:
        return f"dataset.batch_size={resume.batch_size} then, {batch_size} now"
    if resume.train_files is not None and resume.train_files != train_files:
        return f"the training split's files differ (then {resume.train_files}, now {train_files})"
    return None


def check_mid_epoch_resume(resume: ResumePoint, device_num: int, batch_size: int, train_files: str) -> None:
    """A checkpoint written mid-epoch continues exactly only with the device count, batch size and files
    that wrote it: they decide the epoch's steps and the pairs of each. From the end of an epoch any is fine."""
    if not resume.step_in_epoch:
        return
    change = mid_epoch_change(resume, device_num, batch_size, train_files)
    if change:
        epoch = resume.epoch + 1
        raise Pix2PixError(
            f"the checkpoint stopped at step {resume.step_in_epoch} of epoch {epoch}, and {change}, so the rest "
            f"of that epoch cannot be replayed: resume with the settings and files it had, or add "
            f"checkpoint.resume=next_epoch to go on at epoch {epoch + 1} (skipping the rest of epoch {epoch}), "
            f"or resume from the end of epoch {resume.epoch} (checkpoints/epoch_{resume.epoch:03d}.ckpt, if kept)"
        )


AMP_WRAPPER = "_backbone."  # the child of MindSpore's AMP output casts (training.amp.mixed_precision)


def network_state(prefix: str, net: nn.Cell) -> dict[str, ms.Parameter]:
    """Parameters (and BatchNorm running stats) by their place in the network, e.g.
    G.down.1.1.weight: stable whatever container the network is attached to, and at every AMP level."""
    return {f"{prefix}.{name}": param for name, param in named_parameters(net)}


def named_parameters(net: nn.Cell) -> list[tuple[str, ms.Parameter]]:
    """net.parameters_and_names() without the AMP wrappers' level in the names."""
    return [(name.replace(AMP_WRAPPER, ""), param) for name, param in net.parameters_and_names()]


def optimizer_state(prefix: str, optimizer: nn.Optimizer, net: nn.Cell) -> dict[str, ms.Parameter]:
    """Adam's moments keyed by the network name of the parameter they belong to, plus its scalars."""
    place = {id(param): name for name, param in named_parameters(net)}
    state = {f"{prefix}.{attr}": getattr(optimizer, attr) for attr in OPTIMIZER_SCALARS if hasattr(optimizer, attr)}
    for slot in OPTIMIZER_SLOTS:
        for param, moment in zip(optimizer.parameters, getattr(optimizer, slot, ())):
            state[f"{prefix}.{slot}.{place[id(param)]}"] = moment
    return state


def loss_scale_state(step: nn.Cell) -> dict[str, ms.Parameter]:
    """The dynamic loss scale and its counters of a mixed-precision step (none at amp=O0)."""
    if not getattr(step, "scaled", False):
        return {}
    return {f"loss_scale.{name}": getattr(step.loss_scale, name) for name in LOSS_SCALE_STATE}


def training_state(step: nn.Cell) -> dict[str, ms.Parameter]:
    """Everything a Pix2PixTrainStep needs to continue: G, D, optimizer_G, optimizer_D (and the loss scale)."""
    return {
        **network_state("G", step.G),
        **network_state("D", step.D),
        **optimizer_state("optimizer_G", step.optimizer_G, step.G),
        **optimizer_state("optimizer_D", step.optimizer_D, step.D),
        **loss_scale_state(step),
    }


def save(
    path: Path,
    state: dict[str, ms.Parameter],
    meta: dict[str, int | float | str],
    before_rename: Callable[[], None] | None = None,
    replace: bool = True,
    advice: str = "or lower checkpoint.keep_last",
) -> Path:
    """Write `state` and `meta` to `path` without ever leaving a half-written file there; with
    replace=False, never over a file already at `path` (one line says it exists).

    The file gets the permissions of any file its owner writes (the umask), not MindSpore's
    owner-only read-only mode, so a run folder shared with a group stays readable. A failed write
    (disk full, file-size limit, permissions) removes the partial file, leaves any earlier file at
    `path` untouched, and is raised as one line that names the folder.
    """
    import mindspore as ms

    tmp = path.with_name(f".{path.stem}.partial-{os.getpid()}.ckpt")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        entries = [{"name": name, "data": param} for name, param in state.items()]
        ms.save_checkpoint(entries, str(tmp), append_dict=dict(meta), crc_check=True)
        os.chmod(tmp, 0o666 & ~current_umask())
        fsync_file(tmp)
        if before_rename:  # fault injection (tests): a kill between the write and the rename
            before_rename()
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails, atomically, where a file already is
        fsync_folder(path.parent)
    except FileExistsError:
        raise Pix2PixError(f"{path}: already exists; choose another file name (or remove it)") from None
    except OSError as err:
        raise write_failed(path, err, "writing the checkpoint", advice) from None
    finally:
        for leftover in (tmp, tmp.with_suffix(".tmp")):  # MindSpore writes <name>.tmp before its own rename
            leftover.unlink(missing_ok=True)
    return path


def current_umask() -> int:
    """The process's umask, read without changing it (os.umask can only be read by setting it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
    import mindspore as ms

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


def restore_training(step: nn.Cell, path: Path) -> ResumePoint:
    """Restore G, D and both optimizers of a Pix2PixTrainStep from `path`, and its loss scale where the file
    has one (a float32 run resumed with amp= starts from the configured scale); where the run stood then."""
    loaded = load(path)
    state = training_state(step)
    scale = {name: param for name, param in state.items() if name.startswith("loss_scale.")}
    restore({name: param for name, param in state.items() if name not in scale}, loaded, path)
    if scale and all(name in loaded for name in scale):
        restore(scale, loaded, path)
    elif scale:
        log.info("%s has no loss scale (trained at amp=O0): mixed precision starts from loss_scale.initial", path)
    return ResumePoint.from_entries(loaded)


# The scalar entries of a checkpoint as MindSpore writes them: one protobuf `Checkpoint` message per
# entry, `value {tag: name, tensor {dims, tensor_type, tensor_content}}`, then b"crc_num" and 10 bytes.
SCALAR_FORMATS = {"Int64": "<q", "Int32": "<i", "Float32": "<f", "Float64": "<d", "Bool": "<?"}
LARGEST_SCALAR_ENTRY = 4096  # bytes; larger entries are tensors and are skipped unread


def read_varint(data: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if at >= len(data) or shift > 63:
            raise ValueError("a damaged varint")
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if not byte & 0x80:
            return value, at


def fields(data: bytes):
    """(field number, value) of one protobuf message: ints for varints, bytes for length-delimited fields."""
    at = 0
    while at < len(data):
        key, at = read_varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = read_varint(data, at)
        elif wire == 2:
            size, at = read_varint(data, at)
            value, at = data[at : at + size], at + size
        else:
            raise ValueError(f"wire type {wire}")
        yield number, value


def bytes_field(parts: dict, number: int) -> bytes:
    value = parts.get(number, b"")
    if not isinstance(value, bytes):
        raise ValueError(f"field {number} is not length-delimited")
    return value


def scalar_entry(entry: bytes) -> tuple[str, int | float | str] | None:
    """(name, value) of a `Checkpoint.Value` that holds a scalar (no dims) or a string; None for a tensor."""
    parts = dict(fields(entry))
    tensor = dict(fields(bytes_field(parts, 2)))
    kind, content = bytes_field(tensor, 2).decode(errors="replace"), bytes_field(tensor, 3)
    name = bytes_field(parts, 1).decode(errors="replace")
    if kind == "str":
        return name, content.decode("utf-32-le").rstrip("\x00")
    if kind in SCALAR_FORMATS and 1 not in tensor and len(content) == struct.calcsize(SCALAR_FORMATS[kind]):
        return name, struct.unpack(SCALAR_FORMATS[kind], content)[0]
    return None


def _entries(path: Path, whole: bool = False):
    """(size, bytes) of each top-level `Checkpoint.Value` of the file: all of it when it is at most
    LARGEST_SCALAR_ENTRY bytes, else only its head (name, dims and type come before the tensor's bytes).
    whole: an entry that runs past the end of the file (a cut download) is an error."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        while f.tell() < size:
            head = f.read(11)
            if not head or head[0] != 0x0A:  # not field 1 (length-delimited): the CRC trailer
                break
            length, start = read_varint(head, 1)
            begin = f.tell() - len(head) + start
            if whole and begin + length > size:
                raise ValueError(f"the file ends inside an entry, {begin + length - size} bytes short (cut short?)")
            f.seek(begin)
            yield length, f.read(min(length, LARGEST_SCALAR_ENTRY))
            f.seek(begin + length)


def read_meta(path: Path) -> dict[str, int | float | str]:
    """The scalar entries of a checkpoint (epoch, global_step, ...), without MindSpore and without reading
    its tensors (a 700 MB checkpoint is read in a few hundred small reads). No CRC check: `load` does that."""
    meta: dict[str, int | float | str] = {}
    try:
        for length, entry in _entries(path):
            found = scalar_entry(entry) if length <= LARGEST_SCALAR_ENTRY else None
            if found:
                meta[found[0]] = found[1]
    except (OSError, ValueError, UnicodeDecodeError, struct.error) as err:
        raise Pix2PixError(f"{path}: not a readable pix2pix checkpoint ({err})") from None
    return meta


def read_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """The name and shape of every tensor of a MindSpore checkpoint (scalars: ()), read as read_meta reads."""
    shapes: dict[str, tuple[int, ...]] = {}
    try:
        for _, entry in _entries(path, whole=True):
            name, shape = tensor_head(entry)
            if shape is not None:
                shapes[name] = shape
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise Pix2PixError(f"{path}: not a readable MindSpore checkpoint ({err})") from None
    return shapes


def tensor_head(entry: bytes) -> tuple[str, tuple[int, ...] | None]:
    """(name, dims) of a `Checkpoint.Value` from its first bytes; dims None for a string entry."""
    key, at = read_varint(entry, 0)
    length, at = read_varint(entry, at)
    if key != 0x0A:
        raise ValueError("an entry without a name")
    name, at = entry[at : at + length].decode(), at + length
    key, at = read_varint(entry, at)
    if key != 0x12:
        raise ValueError(f"entry {name} has no tensor")
    _, at = read_varint(entry, at)  # the tensor's size; its fields follow
    dims: list[int] = []
    while at < len(entry):
        key, at = read_varint(entry, at)
        if key == 0x08:  # dims, one varint each (proto2)
            value, at = read_varint(entry, at)
            dims.append(value)
        elif key == 0x0A:  # dims, packed
            length, at = read_varint(entry, at)
            end = at + length
            while at < end:
                value, at = read_varint(entry, at)
                dims.append(value)
        elif key == 0x12:  # tensor_type: the dims are all read
            length, at = read_varint(entry, at)
            kind = entry[at : at + length].decode()
            return name, None if kind == "str" else tuple(dims)
        else:
            break
    raise ValueError(f"entry {name}: no tensor type")


def read_resume_point(path: Path) -> ResumePoint:
    """Where the checkpoint at `path` left its run, read without MindSpore (see read_meta)."""
    return ResumePoint.from_entries(read_meta(path))
