"""The CPU fast path: MindSpore 2.10's convolutions at AVX-512 speed (pix2pix/backend/native/conv_shim.c).

On AVX-512 machines MindSpore's bundled oneDNN picks a reference convolution about 100x slower
than it should; capping oneDNN at AVX2 avoids it at half the vector width. The fast path instead
loads a small native library (built here on first use with the C compiler, then cached) that
makes oneDNN take its AVX-512 gemm convolution, and runs the convolutions with many output
positions in oneDNN's blocked layouts and direct AVX-512 kernels (the library's header says how
and why). `enable()` must run before `import mindspore` (runtime.prepare_environment calls it):
the library is loaded with RTLD_GLOBAL, so MindSpore's calls into oneDNN resolve to it first.

The library is checked once per build in a separate process (convolutions forward and backward
must come out of the expected kernels); where anything fails, the AVX2 cap is used and the reason
is reported. Once loaded, it is also put in LD_PRELOAD, so that child processes (msrun and joblib
workers, which may import MindSpore before any of this code runs) load it first.
PIX2PIX_CPU_FASTPATH=0 switches the fast path off (the AVX2 cap), PIX2PIX_CPU_FASTPATH=gemm keeps
every convolution on gemm; an ONEDNN_MAX_CPU_ISA that you set yourself is left alone.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from pix2pix.cache import CACHE_ENV, CacheProblem, trusted_cache, untrusted
from pix2pix.errors import Pix2PixError
from pix2pix.track.files import write_text
from pix2pix.track.locks import FileLock

SWITCH = "PIX2PIX_CPU_FASTPATH"
REBUILD = "retry with: python -m pix2pix.backend.fastpath --rebuild"
ISA_CAP = "ONEDNN_MAX_CPU_ISA"
SOURCE = Path(__file__).resolve().parent / "native" / "conv_shim.c"
DIRECTIONS = ("forward", "backward-data", "backward-weights")
SLOW_KERNELS = ("jit_uni_ncsp", "ref:")

# Run in a fresh interpreter: load the library, then convolutions forward and backward on the CPU, one
# too small for blocked layouts (16x16 outputs: gemm) and one large enough (32x32: blocked).
PROBE = """
import ctypes, json, sys
shim = ctypes.CDLL(sys.argv[1], mode=ctypes.RTLD_GLOBAL)
import numpy as np, mindspore as ms
from mindspore import nn
ms.set_device("CPU")
conv = nn.Conv2d(16, 32, 4, stride=2, pad_mode="pad", padding=1)
for size in (32, 64):
    x = ms.Tensor(np.ones((1, 16, size, size), np.float32))
    grads = ms.grad(conv, grad_position=0, weights=conv.trainable_params())(x)
    grads[0].asnumpy(), grads[1][0].asnumpy()  # ops run asynchronously: wait for both
shim.pix2pix_conv_impls.restype = ctypes.c_char_p
print(json.dumps([shim.pix2pix_conv_impls(k).decode() for k in range(3)]))
"""


@dataclass(frozen=True)
class Status:
    """What the CPU convolutions run on in this process, and why."""

    active: bool
    detail: str  # for the log: the library, or why the AVX2 cap is used
    problem: bool = False  # the fast path was wanted and could not be used


_status: Status | None = None
_library: ctypes.CDLL | None = None


def has_avx512() -> bool:
    try:
        return " avx512f" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def library_path(folder: Path) -> Path:
    """One build per source and MindSpore version (the oneDNN it wraps)."""
    key = hashlib.sha256(SOURCE.read_bytes() + metadata.version("mindspore").encode()).hexdigest()[:16]
    return folder / f"conv_shim-{key}.so"


def build(target: Path) -> str | None:
    """Compile the library into `target` (atomically); the reason on failure."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        return "no C compiler (cc or gcc) to build it"
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".so.tmp")
    os.close(fd)
    try:
        try:
            done = subprocess.run(
                [compiler, "-O2", "-shared", "-fPIC", "-pthread", "-o", tmp, str(SOURCE), "-ldl"],
                capture_output=True,
                text=True,
                timeout=120,
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            return f"the C compiler {compiler} did not run ({type(err).__name__})"
        if done.returncode != 0:
            return f"{compiler} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}"
        os.chmod(tmp, 0o755)  # never group- or world-writable, whatever the umask
        os.replace(tmp, target)
        return None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def probe(library: Path) -> tuple[list[str] | None, str]:
    """The kernels a convolution gets with the library loaded, from a separate process."""
    env = {k: v for k, v in os.environ.items() if k not in (ISA_CAP, "LD_PRELOAD")}
    env.update(GLOG_v="3", **{SWITCH: "1"})  # check the whole library (blocked and gemm), whatever the mode here
    try:
        done = subprocess.run(
            [sys.executable, "-c", PROBE, str(library)], capture_output=True, text=True, timeout=300, env=env
        )
    except subprocess.TimeoutExpired:
        return None, "its check timed out"
    if done.returncode != 0:
        return None, f"its check failed (exit {done.returncode})"
    try:
        kernels = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None, "its check printed no kernels"
    slow = [k for k in kernels if not k or any(name.startswith(SLOW_KERNELS) for name in kernel_names(k))]
    return (None, f"oneDNN still chose {slow[0] or 'nothing'}") if slow else (kernels, "")


def kernel_names(report: str) -> list[str]:
    """The implementation names in a library report: "jit:avx512_core x2, x64:gemm:jit x1"."""
    return [part.rsplit(" x", 1)[0] for part in report.split(", ") if part]


def read_verdict(verdict: Path) -> dict | None:
    """A build's recorded verdict; None where it is missing, empty or damaged (the library is rebuilt)."""
    try:
        record = json.loads(verdict.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("ok"), bool):
        return None
    return record


def build_and_check(library: Path, verdict: Path) -> dict:
    """Build the library, check it in a fresh process and record the verdict (the caller holds the lock)."""
    reason = build(library)
    kernels = None
    if reason is None:
        kernels, reason = probe(library)
    record = {"ok": kernels is not None, "reason": reason, "kernels": kernels}
    write_text(verdict, json.dumps(record) + "\n")
    return record


def verified_library(rebuild: bool = False) -> Path:
    """The built and checked library, building and checking it on first use (the verdict is cached;
    one process builds while the others wait). CacheProblem says why it cannot be used."""
    folder = trusted_cache()
    library = library_path(folder)
    verdict = library.with_suffix(".json")
    record = None if rebuild else read_verdict(verdict)
    if record is None or (record["ok"] and not library.is_file()):
        try:
            with FileLock(library.with_suffix(".lock")):
                record = None if rebuild else read_verdict(verdict)  # another process may have built it meanwhile
                if record is None or (record["ok"] and not library.is_file()):
                    record = build_and_check(library, verdict)
        except OSError as err:
            raise CacheProblem(
                f"cannot write its cache folder {folder} ({err.strerror}); set {CACHE_ENV} to a folder you may write"
            ) from None
    if not record["ok"]:
        raise CacheProblem(f"{record.get('reason') or 'its build failed'} (once that is fixed: {REBUILD})")
    problem = untrusted(library)
    if problem:
        raise CacheProblem(problem)
    return library


def switched_off() -> bool:
    return os.environ.get(SWITCH, "1").strip().lower() in ("0", "off", "false", "no")


def enable() -> Status:
    """Choose the CPU convolution path for this process; call before `import mindspore`."""
    global _status, _library
    if _status is not None:
        return _status
    if platform.system() != "Linux" or platform.machine().lower() not in ("x86_64", "amd64"):
        _status = Status(False, "oneDNN defaults (not x86-64 Linux)")
    elif ISA_CAP in os.environ:
        _status = Status(False, f"oneDNN ISA cap {os.environ[ISA_CAP]} (set by you)")
    elif switched_off() or not has_avx512():
        os.environ[ISA_CAP] = "AVX2"
        why = f"{SWITCH}=0" if switched_off() else "no AVX-512 here"
        _status = Status(False, f"oneDNN ISA cap AVX2 ({why})")
    else:
        try:
            library = verified_library()
            if "mindspore" in sys.modules and not loaded(library):
                raise CacheProblem("MindSpore was imported before it could be loaded")
            shim = ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
            shim.pix2pix_conv_impls.restype = ctypes.c_char_p
        except Exception as err:  # noqa: BLE001 - the fast path must never stop a command
            known = isinstance(err, (CacheProblem, Pix2PixError))
            reason = str(err) if known else f"{type(err).__name__}: {err} ({REBUILD})"
            os.environ[ISA_CAP] = "AVX2"  # still in time: oneDNN reads it at its first operation
            _status = Status(False, f"oneDNN ISA cap AVX2: the fast path is unavailable: {reason}", problem=True)
        else:
            _library = shim
            # Child processes (msrun and joblib workers, subprocesses) load it before anything else.
            preload = os.environ.get("LD_PRELOAD", "").split()
            if str(library) not in preload:
                os.environ["LD_PRELOAD"] = " ".join([str(library), *preload])
            _status = Status(True, f"oneDNN AVX-512 fast path ({library.name})")
    return _status


def loaded(library: Path) -> bool:
    """Whether this process has `library` mapped already (LD_PRELOAD from a parent)."""
    try:
        return str(library) in Path("/proc/self/maps").read_text()
    except OSError:
        return False


def conv_kernels() -> dict[str, str] | None:
    """The oneDNN implementations of the convolutions created so far, per direction (fast path only):
    "jit:avx512_core x12, x64:gemm:jit x20"."""
    if _library is None:
        return None
    return {d: _library.pix2pix_conv_impls(k).decode() for k, d in enumerate(DIRECTIONS)}


def main(argv: list[str]) -> int:
    """python -m pix2pix.backend.fastpath [--rebuild]: build and check now (--rebuild: again), print the verdict."""
    if argv not in ([], ["--rebuild"]):
        print("usage: python -m pix2pix.backend.fastpath [--rebuild]", file=sys.stderr)
        return 2
    if argv:
        try:
            verified_library(rebuild=True)
        except Exception:  # noqa: BLE001 - enable() below reports it in one line
            pass
    status = enable()
    print(("on: " if status.active else "off: ") + status.detail)
    return 1 if status.problem else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
