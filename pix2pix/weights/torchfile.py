"""Read the tensors of a PyTorch file (`torch.save`) without PyTorch, and without running anything in it.

Both of torch.save's formats: the zip archive (`<name>/data.pkl` + one `data/<key>` entry per storage)
and the legacy stream (three small pickles, the object pickle, its storage keys, then each storage's
bytes). The object pickle is read by an unpickler that resolves only what a state_dict is made of
(OrderedDict, the tensor-rebuild functions, storage types, dtypes), each to a function of ours; any
other name (a class, a function, os.system) is refused before anything is called. This is PyTorch's
own `weights_only=True` rule, the default of torch.load since 2.6, so a file that loads there loads here.

Tensors come back as numpy arrays read straight from the file into their own buffer (one copy).
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pix2pix.errors import Pix2PixError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
ZIP_MAGIC = b"PK\x03\x04"
BFLOAT16 = "bfloat16"  # numpy has none: read as uint16, widened to float32

STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": BFLOAT16,
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}
TORCH_DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool")
LARGEST_EXPANSION = 50  # a compressed zip entry may not claim more than this many times its size


class RefusedPickle(Pix2PixError):
    """The file's pickle names something a state_dict never holds."""


def is_torch_file(path: Path) -> bool:
    """Whether `path` starts like either of torch.save's formats (zip, or a pickle of the legacy magic)."""
    with open(path, "rb") as f:
        head = f.read(16)
    return head.startswith(ZIP_MAGIC) or head.startswith(b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19")


def read_torch_file(path: Path, read_tensors: bool = True) -> Any:
    """The object `torch.save` wrote (dicts, lists, numbers, strings), its tensors as numpy arrays; with
    read_tensors=False, as LazyTensors (their `size` known, their bytes not read)."""
    try:
        with open(path, "rb") as f:
            if f.read(4) == ZIP_MAGIC:
                return _read_zip(path, read_tensors)
            f.seek(0)
            return _read_legacy(f, path, read_tensors)
    except RefusedPickle as refused:
        raise RefusedPickle(
            f"{path}: refused: its pickle asks for {refused}, which a file of weights never holds, and nothing of "
            "it was run; only tensors and plain containers are read here (load the file in PyTorch, if you trust "
            "it, and save its state_dict)"
        ) from None
    except Pix2PixError:
        raise
    except (OSError, EOFError, ValueError, KeyError, TypeError, IndexError, AttributeError, pickle.UnpicklingError,
            zipfile.BadZipFile, struct.error) as err:  # fmt: skip
        raise Pix2PixError(f"{path}: not a readable PyTorch file ({type(err).__name__}: {err})") from None


@dataclass
class Storage:
    """One storage of the file; its bytes are read once all of the pickle is (the legacy format puts them after)."""

    key: str
    dtype: np.dtype | str
    numel: int
    array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        raise RefusedPickle("state for a storage")

    @property
    def itemsize(self) -> int:
        return 2 if self.dtype == BFLOAT16 else self.dtype.itemsize

    def allocate(self) -> np.ndarray:
        self.array = np.empty(self.numel, np.uint16 if self.dtype == BFLOAT16 else self.dtype)
        return self.array


@dataclass
class LazyTensor:
    """A tensor as the pickle describes it: a view (offset, size, stride) of a storage."""

    storage: Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    extra: dict = field(default_factory=dict)

    def __setstate__(self, state: Any) -> None:
        raise RefusedPickle("state for a tensor")

    def materialize(self) -> np.ndarray:
        flat = self.storage.array
        if flat is None:
            raise ValueError(f"storage {self.storage.key} has no data")
        count = int(np.prod(self.size)) if self.size else 1
        contiguous = tuple(int(np.prod(self.size[i + 1 :])) for i in range(len(self.size)))
        if count and self.offset + _last_index(self.size, self.stride) >= len(flat):
            raise ValueError(f"a tensor reaches past the end of storage {self.storage.key}")
        if self.stride == contiguous or count <= 1:
            array = flat[self.offset : self.offset + count].reshape(self.size)
        else:
            strides = tuple(s * flat.itemsize for s in self.stride)
            view = np.lib.stride_tricks.as_strided(flat[self.offset :], self.size, strides, writeable=False)
            array = np.ascontiguousarray(view)
        if self.storage.dtype == BFLOAT16:
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return array


def _last_index(size: tuple[int, ...], stride: tuple[int, ...]) -> int:
    return sum((n - 1) * s for n, s in zip(size, stride))


def _rebuild_tensor(storage: Storage, offset: int, size: tuple, stride: tuple, *rest: Any) -> LazyTensor:
    """torch._utils._rebuild_tensor and _rebuild_tensor_v2 (the later arguments: requires_grad, hooks, metadata)."""
    if not isinstance(storage, Storage):
        raise ValueError("a tensor without a storage")
    return LazyTensor(storage, int(offset), tuple(int(n) for n in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data: LazyTensor, requires_grad: bool = False, hooks: Any = None, *rest: Any) -> LazyTensor:
    return data


class _StorageType:
    """What a storage class name (torch.FloatStorage) resolves to: its element type, nothing callable."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = STORAGE_DTYPES[name]

    def __setstate__(self, state: Any) -> None:
        raise RefusedPickle(f"state for torch.{self.name}")


SAFE_NAMES: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch", "Size"): tuple,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
    **{("torch", name): f"torch.{name}" for name in TORCH_DTYPES},  # dtypes: only ever compared, kept as names
}


class _WeightsUnpickler(pickle.Unpickler):
    """pickle.Unpickler that resolves only SAFE_NAMES; the storages it meets are collected in `storages`."""

    def __init__(self, file: io.BufferedIOBase, storages: dict[str, Storage] | None = None):
        super().__init__(file, encoding="utf-8")
        self.storages = storages if storages is not None else {}

    def find_class(self, module: str, name: str) -> Any:
        found = SAFE_NAMES.get((module, name))
        if found is None:
            raise RefusedPickle(f"{module}.{name}")
        return found

    def persistent_load(self, pid: Any) -> Storage:
        # zip: ('storage', type, key, location, numel); legacy: (..., numel, view_metadata)
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage" or not isinstance(pid[1], _StorageType):
            raise RefusedPickle(f"a persistent object {str(pid)[:60]!r}")
        if len(pid) > 5 and pid[5] is not None:
            raise ValueError("a storage view (PyTorch before 0.4); re-save the file with a current PyTorch")
        key, numel = str(pid[2]), int(pid[4])
        if numel < 0:
            raise ValueError(f"storage {key} has a negative size")
        storage = self.storages.get(key)
        if storage is None:
            storage = self.storages[key] = Storage(key, pid[1].dtype, numel)
        return storage


def materialize(obj: Any) -> Any:
    """The unpickled object with every LazyTensor replaced by its array (containers rebuilt as they were)."""
    if isinstance(obj, LazyTensor):
        return obj.materialize()
    if isinstance(obj, dict):
        out = type(obj)() if isinstance(obj, OrderedDict) else {}
        for key, value in obj.items():
            out[key] = materialize(value)
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(materialize(value) for value in obj)
    return obj


def _read_zip(path: Path, read_tensors: bool) -> Any:
    with zipfile.ZipFile(path) as archive:
        pickles = [name for name in archive.namelist() if name.endswith("/data.pkl") and name.count("/") == 1]
        if len(pickles) != 1:
            raise ValueError("a zip archive without one <name>/data.pkl: not a torch.save file")
        prefix = pickles[0][: -len("data.pkl")]
        if archive.namelist().count(f"{prefix}byteorder") and archive.read(f"{prefix}byteorder") != b"little":
            raise ValueError("big-endian tensors; re-save the file on a little-endian machine")
        unpickler = _WeightsUnpickler(io.BytesIO(archive.read(pickles[0])))
        obj = unpickler.load()
        if not read_tensors:
            return obj
        for key, storage in unpickler.storages.items():
            info = archive.getinfo(f"{prefix}data/{key}")
            nbytes = storage.numel * storage.itemsize
            if info.file_size != nbytes:
                raise ValueError(f"storage {key} holds {info.file_size} bytes, its tensors need {nbytes}")
            if info.compress_type != zipfile.ZIP_STORED and nbytes > LARGEST_EXPANSION * info.compress_size + 2**20:
                raise ValueError(f"storage {key} expands {nbytes // max(info.compress_size, 1)} times")
            with archive.open(info) as entry:
                _read_exactly(entry, storage.allocate(), key)
    return materialize(obj)


def _read_legacy(f: io.BufferedIOBase, path: Path, read_tensors: bool) -> Any:
    if _WeightsUnpickler(f).load() != LEGACY_MAGIC:
        raise ValueError("not a torch.save file (neither a zip archive nor the legacy magic number)")
    if _WeightsUnpickler(f).load() != LEGACY_PROTOCOL:
        raise ValueError("an unknown legacy protocol version")
    sys_info = _WeightsUnpickler(f).load()
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", True):
        raise ValueError("big-endian tensors; re-save the file on a little-endian machine")
    unpickler = _WeightsUnpickler(f)
    obj = unpickler.load()
    if not read_tensors:
        return obj
    keys = _WeightsUnpickler(f).load()
    if not isinstance(keys, list) or set(map(str, keys)) != set(unpickler.storages):
        raise ValueError("the storage list does not match the tensors")
    remaining = path.stat().st_size - f.tell()
    for key in map(str, keys):
        storage = unpickler.storages[key]
        (numel,) = struct.unpack("<q", _read_bytes(f, 8))
        nbytes = numel * storage.itemsize
        remaining -= 8 + nbytes
        if numel != storage.numel or remaining < 0:
            raise ValueError(f"storage {key}: {numel} elements on file, {storage.numel} expected (a damaged file?)")
        _read_exactly(f, storage.allocate(), key)
    return materialize(obj)


def _read_bytes(f: io.BufferedIOBase, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise EOFError("the file ends early")
    return data


def _read_exactly(f: io.BufferedIOBase, array: np.ndarray, key: str) -> None:
    view = memoryview(array).cast("B")
    done = 0
    while done < len(view):
        n = f.readinto(view[done:])
        if not n:
            raise EOFError(f"the file ends inside storage {key}")
        done += n
