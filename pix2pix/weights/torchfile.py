"""Read the tensors of a PyTorch file (`torch.save`) without PyTorch, and without running anything in it.

Both of torch.save's formats: the zip archive (`<name>/data.pkl` + one `data/<key>` entry per storage)
and the legacy stream (three small pickles, the object pickle, its storage keys, then each storage's
bytes). The object pickle is read by an unpickler that resolves only what a state_dict is made of
(OrderedDict, the tensor-rebuild functions, storage types, dtypes), each to a function of ours; any
other name (a class, a function, os.system) is refused before anything is called: a subset of PyTorch's
own `weights_only=True` rule (torch.load's default since 2.6). Before unpickling, the pickle's opcodes
are checked against an allow-list (no INST/OBJ/NEWOBJ/EXT, memo indices in order), so that neither a
declared size nor a memo index can make the unpickler allocate what the file does not hold.

Tensors come back as numpy arrays read straight from the file into their own buffer (one copy); each
view must lie inside its storage, and each storage's bytes must be in the file (checked before any
allocation, also when only shapes are read).

A TorchScript archive (`torch.jit.save`) is read the same way, with one more kind of object: each module
of its pickle (a `__torch__.` class) becomes a ScriptObject, its class name and its attributes (tensors,
numbers, sub-modules) as data. The archive's code (`code/*.py`) is never read, let alone run.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
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
LARGEST_PICKLE = 64 * 2**20  # bytes of the object pickle (a unet_256 state_dict's is about 10 kB)
# The opcodes a state_dict's pickle is made of (protocols 2 to 4); anything else is refused unread.
SAFE_OPCODES = frozenset(
    "PROTO FRAME STOP MARK POP POP_MARK DUP NONE NEWTRUE NEWFALSE INT BININT BININT1 BININT2 LONG LONG1 LONG4 "
    "FLOAT BINFLOAT STRING BINSTRING SHORT_BINSTRING UNICODE BINUNICODE SHORT_BINUNICODE BINUNICODE8 "
    "BINBYTES SHORT_BINBYTES BINBYTES8 EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3 EMPTY_LIST LIST APPEND APPENDS "
    "EMPTY_DICT DICT SETITEM SETITEMS EMPTY_SET ADDITEMS FROZENSET GLOBAL STACK_GLOBAL REDUCE BUILD "
    "PERSID BINPERSID PUT BINPUT LONG_BINPUT MEMOIZE GET BINGET LONG_BINGET".split()
)


SCRIPT_OPCODES = SAFE_OPCODES | {"NEWOBJ"}  # a TorchScript module: NEWOBJ of its __torch__. class, then BUILD
SCRIPT_PREFIX = "__torch__."


class RefusedPickle(Pix2PixError):
    """The file's pickle names something a state_dict never holds."""


LEGACY_HEAD = b"\x80\x02\x8a\x0a" + LEGACY_MAGIC.to_bytes(10, "little")  # PROTO 2, LONG1 of the magic number


def is_torch_file(path: Path) -> bool:
    """Whether `path` starts like either of torch.save's formats (zip, or a pickle of the legacy magic)."""
    with open(path, "rb") as f:
        head = f.read(len(LEGACY_HEAD))
    return head.startswith(ZIP_MAGIC) or head == LEGACY_HEAD


def is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(ZIP_MAGIC)) == ZIP_MAGIC


def read_torch_file(path: Path, read_tensors: bool = True) -> Any:
    """The object `torch.save` wrote (dicts, lists, numbers, strings), its tensors as numpy arrays; with
    read_tensors=False, as LazyTensors (their `size` known, their bytes not read)."""
    return _read(path, lambda: _read_zip(path, read_tensors) if is_zip(path) else _read_legacy_file(path, read_tensors))


def _read_legacy_file(path: Path, read_tensors: bool) -> Any:
    with open(path, "rb") as f:
        return _read_legacy(f, path, read_tensors)


def _read(path: Path, read: Callable[[], Any]) -> Any:
    """`read()`, its failures as one Pix2PixError naming the file."""
    try:
        return read()
    except RefusedPickle as refused:
        raise RefusedPickle(
            f"{path}: refused: its pickle asks for {refused}, which a file of weights never holds, and nothing of "
            "it was run; only tensors and plain containers are read here (load the file in PyTorch, if you trust "
            "it, and save its state_dict)"
        ) from None
    except Pix2PixError:
        raise
    except (OSError, EOFError, ValueError, KeyError, TypeError, IndexError, AttributeError, pickle.UnpicklingError,
            zipfile.BadZipFile, struct.error, OverflowError, RecursionError, NotImplementedError) as err:  # fmt: skip
        raise Pix2PixError(f"{path}: not a readable PyTorch file ({type(err).__name__}: {str(err)[:200]})") from None
    except MemoryError:
        raise Pix2PixError(f"{path}: not a readable PyTorch file (it asks for more memory than there is)") from None


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

    def __setstate__(self, state: Any) -> None:
        raise RefusedPickle("state for a tensor")

    def materialize(self) -> np.ndarray:
        flat = self.storage.array
        if flat is None:
            raise ValueError(f"storage {self.storage.key} has no data")
        count = _count(self.size)
        contiguous = tuple(_count(self.size[i + 1 :]) for i in range(len(self.size)))
        if self.stride == contiguous or count <= 1:
            array = flat[self.offset : self.offset + count].reshape(self.size)
        else:
            strides = tuple(s * flat.itemsize for s in self.stride)
            view = np.lib.stride_tricks.as_strided(flat[self.offset :], self.size, strides, writeable=False)
            array = np.ascontiguousarray(view)
        if self.storage.dtype == BFLOAT16:
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return array


def _count(size: tuple[int, ...]) -> int:
    count = 1
    for n in size:
        count *= n
    return count


def _rebuild_tensor(storage: Storage, offset: int, size: tuple, stride: tuple, *rest: Any) -> LazyTensor:
    """torch._utils._rebuild_tensor and _rebuild_tensor_v2 (the later arguments: requires_grad, hooks, metadata).
    The view must lie inside its storage and hold no more elements than it: weights never overlap."""
    if not isinstance(storage, Storage) or not isinstance(size, tuple) or not isinstance(stride, tuple):
        raise ValueError("a tensor without a storage, size or stride")
    offset, size, stride = int(offset), tuple(int(n) for n in size), tuple(int(s) for s in stride)
    if len(size) != len(stride) or offset < 0 or min((*size, *stride, 0)) < 0:
        raise ValueError(f"a tensor of storage {storage.key} with a negative or mismatched offset, size or stride")
    count = _count(size)
    reach = offset + sum((n - 1) * s for n, s in zip(size, stride)) if count else offset
    if count > storage.numel or (count and reach >= storage.numel):
        raise ValueError(f"a tensor reaches outside storage {storage.key} ({storage.numel} elements)")
    return LazyTensor(storage, offset, size, stride)


def _rebuild_parameter(data: LazyTensor, requires_grad: bool = False, hooks: Any = None, *rest: Any) -> LazyTensor:
    return data


class _Safe:
    """One of our rebuild functions as the pickle sees it: callable, with no attributes a BUILD could set."""

    __slots__ = ("function",)

    def __init__(self, function: Any):
        self.function = function

    def __call__(self, *args: Any) -> Any:
        return self.function(*args)

    def __setstate__(self, state: Any) -> None:
        raise RefusedPickle("state for a rebuild function")


class _StorageType:
    """What a storage class name (torch.FloatStorage) resolves to: its element type, nothing callable."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = STORAGE_DTYPES[name]

    def __setstate__(self, state: Any) -> None:
        raise RefusedPickle(f"state for torch.{self.name}")


SAFE_NAMES: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _Safe(_rebuild_tensor),
    ("torch._utils", "_rebuild_tensor_v2"): _Safe(_rebuild_tensor),
    ("torch._utils", "_rebuild_parameter"): _Safe(_rebuild_parameter),
    ("torch", "Size"): tuple,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
    **{("torch", name): f"torch.{name}" for name in TORCH_DTYPES},  # dtypes: only ever compared, kept as names
}


class ScriptObject:
    """One module of a TorchScript archive as data: `type_name` (its class, e.g. __torch__.inceptionv3.Conv2dLayer)
    and `attributes` (what its BUILD set: tensors, numbers, lists, sub-modules)."""

    __slots__ = ("attributes",)
    type_name = ""

    def __new__(cls) -> ScriptObject:  # NEWOBJ with arguments is a TypeError: an archive's modules take none
        self = object.__new__(cls)
        self.attributes = {}
        return self

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict) or not all(isinstance(key, str) for key in state):
            raise RefusedPickle(f"state for {self.type_name} that is not a dict of attributes")
        self.attributes = dict(state)

    def __getitem__(self, name: str) -> Any:
        return self.attributes[name]

    def __repr__(self) -> str:
        return f"<{self.type_name}: {', '.join(self.attributes)}>"


def is_script_name(module: str, name: str) -> bool:
    """A TorchScript class name: `__torch__.` and dotted identifiers (NEWOBJ makes a ScriptObject of it)."""
    return module.startswith(SCRIPT_PREFIX) and all(part.isidentifier() for part in (*module.split("."), name))


LARGEST_SCRIPT_TYPES = 4096  # distinct TorchScript classes in one archive (InceptionV3's: 16)


def script_type(module: str, name: str, types: dict[str, type]) -> type:
    """The ScriptObject subclass standing for one TorchScript class (NEWOBJ needs a type), made once per
    archive into `types`, which the unpickler owns (nothing of one archive outlives its reading)."""
    qualified = f"{module}.{name}"
    if qualified not in types:
        if len(types) >= LARGEST_SCRIPT_TYPES:
            raise ValueError(f"more than {LARGEST_SCRIPT_TYPES} TorchScript classes")
        types[qualified] = type(name, (ScriptObject,), {"__slots__": (), "type_name": qualified})
    return types[qualified]


def _plain_list(values: Any) -> list:
    if not isinstance(values, list):
        raise ValueError("a TorchScript list that is not a list")
    return values


def _untagged(value: Any, type_tag: Any) -> Any:
    return value  # torch.jit._pickle.restore_type_tag: a container's static type, for TorchScript's compiler


# What TorchScript's pickler adds to a state_dict's names: typed lists and type tags, each a plain value here.
SCRIPT_NAMES: dict[tuple[str, str], Any] = {
    **{("torch.jit._pickle", f"build_{kind}list"): _Safe(_plain_list) for kind in ("int", "double", "bool", "tensor")},
    ("torch.jit._pickle", "build_genericlist"): _Safe(_plain_list),
    ("torch.jit._pickle", "restore_type_tag"): _Safe(_untagged),
}


def is_allowed(module: str, name: str, script: bool) -> bool:
    """Whether a pickle's GLOBAL names something it may resolve (SAFE_NAMES; with script, TorchScript's too)."""
    if (module, name) in SAFE_NAMES:
        return True
    return script and ((module, name) in SCRIPT_NAMES or is_script_name(module, name))


class _WeightsUnpickler(pickle.Unpickler):
    """pickle.Unpickler that resolves only SAFE_NAMES (and, with script=True, TorchScript class names to
    ScriptObject types); the storages it meets are collected in `storages`."""

    def __init__(self, file: io.BufferedIOBase, storages: dict[str, Storage] | None = None, script: bool = False):
        super().__init__(file, encoding="utf-8")
        self.storages = storages if storages is not None else {}
        self.script = script
        self.script_types: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if not is_allowed(module, name, self.script):
            raise RefusedPickle(f"{module}.{name}")
        found = SAFE_NAMES.get((module, name)) or SCRIPT_NAMES.get((module, name))
        return found if found is not None else script_type(module, name, self.script_types)

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


def check_opcodes(f: io.BufferedIOBase, script: bool = False) -> None:
    """Walk one pickle's opcodes (without running it) and refuse any outside SAFE_OPCODES (SCRIPT_OPCODES
    with script=True), and memo indices out of order (the C unpickler sizes its memo by the largest
    index); `f` is left where the pickle starts."""
    start, puts, strings = f.tell(), 0, ["", ""]
    allowed = SCRIPT_OPCODES if script else SAFE_OPCODES
    for opcode, arg, _ in pickletools.genops(f):
        if opcode.name == "GLOBAL" or opcode.name == "STACK_GLOBAL":  # name what is refused, before anything else
            module, name = arg.split(" ", 1) if opcode.name == "GLOBAL" else strings[-2:]
            if not is_allowed(module, name, script):
                raise RefusedPickle(f"{module}.{name}")
        elif isinstance(arg, str):
            strings = [strings[-1], arg]
        if opcode.name not in allowed:
            raise RefusedPickle(f"the pickle opcode {opcode.name}")
        if opcode.name in ("PUT", "BINPUT", "LONG_BINPUT"):
            if int(arg) > puts:
                raise ValueError(f"memo index {arg} out of order")
            puts = max(puts, int(arg) + 1)
        elif opcode.name == "MEMOIZE":
            puts += 1
        elif opcode.name in ("GET", "BINGET", "LONG_BINGET") and int(arg) >= puts:
            raise ValueError(f"memo index {arg} was never set")
        if opcode.name == "STOP":
            break
    f.seek(start)


def materialize(obj: Any, done: dict[int, Any] | None = None) -> Any:
    """The unpickled object with every LazyTensor replaced by its array (containers rebuilt as they were).
    An object the pickle shares (its memo) is rebuilt once and shared again: a pickle of nested shared
    lists cannot make this walk, or its memory, grow exponentially."""
    done = {} if done is None else done
    if id(obj) in done:
        return done[id(obj)]
    if isinstance(obj, LazyTensor):
        out = obj.materialize()
    elif isinstance(obj, ScriptObject):
        done[id(obj)] = obj
        obj.attributes = materialize(obj.attributes, done)
        return obj
    elif isinstance(obj, dict):
        out = done[id(obj)] = type(obj)() if isinstance(obj, OrderedDict) else {}
        for key, value in obj.items():
            out[key] = materialize(value, done)
        return out
    elif isinstance(obj, list):
        out = done[id(obj)] = []
        out.extend(materialize(value, done) for value in obj)
        return out
    elif isinstance(obj, tuple):
        out = tuple(materialize(value, done) for value in obj)
    else:
        return obj
    done[id(obj)] = out
    return out


def read_script_module(path: Path) -> ScriptObject:
    """The root module of a TorchScript archive (`torch.jit.save`) as a tree of ScriptObjects, its tensors
    as numpy arrays; refused (RefusedPickle) if its pickle holds anything but modules, tensors and plain
    values, and a Pix2PixError if it is not such an archive."""
    module = _read(path, lambda: _read_zip(path, True, script=True) if is_zip(path) else None)
    if not isinstance(module, ScriptObject):
        raise Pix2PixError(f"{path}: not a TorchScript archive (torch.jit.save) of a module")
    return module


def _read_zip(path: Path, read_tensors: bool, script: bool = False) -> Any:
    with zipfile.ZipFile(path) as archive:
        pickles = [name for name in archive.namelist() if name.endswith("/data.pkl") and name.count("/") == 1]
        if len(pickles) != 1:
            raise ValueError("a zip archive without one <name>/data.pkl: not a torch.save file")
        prefix = pickles[0][: -len("data.pkl")]
        if f"{prefix}byteorder" in archive.namelist() and _entry(archive, f"{prefix}byteorder", 16) != b"little":
            raise ValueError("big-endian tensors; re-save the file on a little-endian machine")
        data = io.BytesIO(_entry(archive, pickles[0], LARGEST_PICKLE))
        check_opcodes(data, script)
        unpickler = _WeightsUnpickler(data, script=script)
        obj = unpickler.load()
        infos = {}
        for key, storage in unpickler.storages.items():  # every storage's bytes are in the file, as declared
            info = infos[key] = _stored(archive, f"{prefix}data/{key}")
            nbytes = storage.numel * storage.itemsize
            if info.file_size != nbytes:
                raise ValueError(f"storage {key} holds {info.file_size} bytes, its tensors need {nbytes}")
        if not read_tensors:
            return obj
        for key, storage in unpickler.storages.items():
            with archive.open(infos[key]) as entry:
                _read_exactly(entry, storage.allocate(), key)
    return materialize(obj)


def _stored(archive: zipfile.ZipFile, name: str) -> zipfile.ZipInfo:
    """A zip entry as torch.save writes it: uncompressed, its size within the archive's."""
    info = archive.getinfo(name)
    if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
        raise ValueError(f"{name} is compressed; torch.save writes its entries uncompressed")
    if info.file_size > Path(archive.filename).stat().st_size:
        raise ValueError(f"{name} claims more bytes than the file has")
    return info


def _entry(archive: zipfile.ZipFile, name: str, limit: int) -> bytes:
    info = _stored(archive, name)
    if info.file_size > limit:
        raise ValueError(f"{name} is {info.file_size} bytes, more than a file of weights holds")
    return archive.read(info)


def _load_checked(f: io.BufferedIOBase, storages: dict[str, Storage] | None = None) -> Any:
    check_opcodes(f)
    unpickler = _WeightsUnpickler(f, storages)
    return unpickler.load()


def _read_legacy(f: io.BufferedIOBase, path: Path, read_tensors: bool) -> Any:
    if _load_checked(f) != LEGACY_MAGIC:
        raise ValueError("not a torch.save file (neither a zip archive nor the legacy magic number)")
    if _load_checked(f) != LEGACY_PROTOCOL:
        raise ValueError("an unknown legacy protocol version")
    sys_info = _load_checked(f)
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", True):
        raise ValueError("big-endian tensors; re-save the file on a little-endian machine")
    storages: dict[str, Storage] = {}
    obj = _load_checked(f, storages)
    declared = sum(8 + storage.numel * storage.itemsize for storage in storages.values())
    if declared > path.stat().st_size - f.tell():
        raise ValueError(f"its tensors need {declared} bytes after the pickle, and the file is shorter")
    if not read_tensors:
        return obj
    keys = _load_checked(f)
    if not isinstance(keys, list) or set(map(str, keys)) != set(storages):
        raise ValueError("the storage list does not match the tensors")
    remaining = path.stat().st_size - f.tell()
    for key in map(str, keys):
        storage = storages[key]
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
