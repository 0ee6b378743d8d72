"""The CPU fast path: MindSpore 2.10's convolutions in oneDNN's fast kernels (pix2pix/backend/native/conv_shim.c).

MindSpore hands oneDNN plain layouts only. On AVX-512 machines oneDNN then picks a reference
convolution about 100x slower than it should (capping oneDNN at AVX2 avoids it at half the vector
width); on AVX2 machines it runs every convolution as im2col + gemm. The fast path loads a small
native library (built here on first use with the C compiler, then cached) that makes oneDNN take
its gemm convolution where it would take the slow one, and runs the convolutions with many output
positions in oneDNN's blocked layouts and direct kernels of the machine's ISA (jit:avx512_core,
jit:avx2; the library's header says how and why). `enable()` must run before `import mindspore`
(runtime.prepare_environment calls it): the library is loaded with RTLD_GLOBAL, so MindSpore's
calls into oneDNN resolve to it first.

The library is built once and checked once per ISA in a separate process under the same
ONEDNN_MAX_CPU_ISA (convolutions forward and backward must come out of the expected kernels);
where anything fails, oneDNN runs as it would without it (on AVX-512, under the AVX2 cap) and the
reason is reported. Once loaded, it is also put in LD_PRELOAD, so that child processes (msrun and
joblib workers, which may import MindSpore before any of this code runs) load it first.
PIX2PIX_CPU_FASTPATH=0 switches the fast path off (the AVX2 cap), PIX2PIX_CPU_FASTPATH=gemm keeps
every convolution on gemm. An ONEDNN_MAX_CPU_ISA that you set yourself is kept, and the fast path
runs under it: ONEDNN_MAX_CPU_ISA=AVX2 on an AVX-512 machine runs what an AVX2 machine runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import platform
import re
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
# too small for blocked layouts (4x4 outputs: gemm) and one large enough (32x32: blocked); print the
# kernels per direction and the ISA oneDNN used.
PROBE = """
import ctypes, json, sys
shim = ctypes.CDLL(sys.argv[1], mode=ctypes.RTLD_GLOBAL)
import numpy as np, mindspore as ms
from mindspore import nn
ms.set_device("CPU")
conv = nn.Conv2d(16, 32, 4, stride=2, pad_mode="pad", padding=1)
for size in (8, 64):
    x = ms.Tensor(np.ones((1, 16, size, size), np.float32))
    grads = ms.grad(conv, grad_position=0, weights=conv.trainable_params())(x)
    grads[0].asnumpy(), grads[1][0].asnumpy()  # ops run asynchronously: wait for both
shim.pix2pix_conv_impls.restype = shim.pix2pix_isa.restype = ctypes.c_char_p
print(json.dumps([[shim.pix2pix_conv_impls(k).decode() for k in range(3)], shim.pix2pix_isa().decode()]))
"""


@dataclass(frozen=True)
class Status:
    """What the CPU convolutions run on in this process, and why."""

    active: bool
    detail: str  # for the log: the library, or why the AVX2 cap is used
    problem: bool = False  # the fast path was wanted and could not be used


_status: Status | None = None
_library: ctypes.CDLL | None = None


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def has_avx512() -> bool:
    return "avx512f" in cpu_flags()


def has_avx2() -> bool:
    return "avx2" in cpu_flags()


def isa_name(isa: str) -> str:
    """oneDNN's ISA names (ONEDNN_MAX_CPU_ISA's values) as the log says them: AVX-512, AVX2, SSE41."""
    isa = isa.upper()
    return "AVX-512" if isa.startswith("AVX512") or isa.startswith("AVX10") else re.sub(r"_.*", "", isa)


def library_path(folder: Path) -> Path:
    """One build per source and MindSpore version (the oneDNN it wraps)."""
    key = hashlib.sha256(SOURCE.read_bytes() + metadata.version("mindspore").encode()).hexdigest()[:16]
    return folder / f"conv_shim-{key}.so"


def verdict_path(library: Path, cap: str | None) -> Path:
    """One check per ISA the library runs under: the machine's own, or each ONEDNN_MAX_CPU_ISA cap."""
    isa = re.sub(r"[^a-z0-9_]", "", cap.lower()) if cap else "native"
    return library.with_name(f"{library.stem}-{isa or 'unknown'}.json")


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


def probe(library: Path, cap: str | None) -> tuple[list[str] | None, str, str]:
    """The kernels a convolution gets with the library loaded under the ISA cap `cap` (None: the machine's
    own ISA), from a separate process; (kernels or None, why not, the ISA oneDNN used)."""
    env = {k: v for k, v in os.environ.items() if k not in (ISA_CAP, "LD_PRELOAD")}
    env.update(GLOG_v="3", **{SWITCH: "1"})  # check the whole library (blocked and gemm), whatever the mode here
    if cap:
        env[ISA_CAP] = cap
    try:
        done = subprocess.run(
            [sys.executable, "-c", PROBE, str(library)], capture_output=True, text=True, timeout=300, env=env
        )
    except subprocess.TimeoutExpired:
        return None, "its check timed out", ""
    if done.returncode != 0:
        return None, f"its check failed (exit {done.returncode})", ""
    try:
        kernels, isa = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError, TypeError):
        return None, "its check printed no kernels", ""
    slow = [k for k in kernels if not k or any(name.startswith(SLOW_KERNELS) for name in kernel_names(k))]
    return (None, f"oneDNN still chose {slow[0] or 'nothing'}", isa) if slow else (kernels, "", isa)


def kernel_names(report: str) -> list[str]:
    """The implementation names in a library report: "jit:avx512_core x2, x64:gemm:jit x1"."""
    return [part.rsplit(" x", 1)[0] for part in report.split(", ") if part]


def read_verdict(verdict: Path) -> dict | None:
    """A recorded verdict; None where it is missing, empty or damaged (the library is built and checked again)."""
    try:
        record = json.loads(verdict.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("ok"), bool) or not isinstance(record.get("isa"), str):
        return None
    return record


def build_and_check(library: Path, verdict: Path, cap: str | None, rebuild: bool) -> dict:
    """Build the library (unless a build is there and `rebuild` is false), check it under `cap` in a fresh
    process and record the verdict (the caller holds the lock)."""
    reason = build(library) if rebuild or not library.is_file() else untrusted(library)
    kernels, isa = None, ""
    if reason is None:
        kernels, reason, isa = probe(library, cap)
    record = {"ok": kernels is not None, "reason": reason, "kernels": kernels, "isa": isa}
    write_text(verdict, json.dumps(record) + "\n")
    return record


def verified_library(cap: str | None = None, rebuild: bool = False) -> tuple[Path, str]:
    """The built library and the ISA oneDNN runs it with, checked under `cap` (ONEDNN_MAX_CPU_ISA; None: the
    machine's own ISA). Built and checked on first use, the verdict cached per ISA; one process builds while
    the others wait. CacheProblem says why it cannot be used."""
    folder = trusted_cache()
    library = library_path(folder)
    verdict = verdict_path(library, cap)
    record = None if rebuild else read_verdict(verdict)
    if record is None or (record["ok"] and not library.is_file()):
        try:
            with FileLock(library.with_suffix(".lock")):
                record = None if rebuild else read_verdict(verdict)  # another process may have built it meanwhile
                if record is None or (record["ok"] and not library.is_file()):
                    record = build_and_check(library, verdict, cap, rebuild)
        except OSError as err:
            raise CacheProblem(
                f"cannot write its cache folder {folder} ({err.strerror}); set {CACHE_ENV} to a folder you may write"
            ) from None
    if not record["ok"]:
        raise CacheProblem(f"{record.get('reason') or 'its build failed'} (once that is fixed: {REBUILD})")
    problem = untrusted(library)
    if problem:
        raise CacheProblem(problem)
    return library, record["isa"]


def switched_off() -> bool:
    return os.environ.get(SWITCH, "1").strip().lower() in ("0", "off", "false", "no")


def enable() -> Status:
    """Choose the CPU convolution path for this process; call before `import mindspore`."""
    global _status
    if _status is None:
        _status = choose()
    return _status


def choose() -> Status:
    cap = os.environ.get(ISA_CAP) or None  # the user's own
    yours = f" under your {ISA_CAP}={cap}" if cap else ""
    if platform.system() != "Linux" or platform.machine().lower() not in ("x86_64", "amd64"):
        return Status(False, "oneDNN defaults (not x86-64 Linux)")
    if switched_off():
        if cap:
            return Status(False, f"oneDNN ISA cap {cap} (set by you; {SWITCH}=0)")
        os.environ[ISA_CAP] = "AVX2"
        return Status(False, f"oneDNN ISA cap AVX2 ({SWITCH}=0)")
    if not cap and not has_avx2():
        return Status(False, "oneDNN defaults (no AVX2 here)")
    try:
        library, isa = verified_library(cap)
        load(library)
    except Exception as err:  # noqa: BLE001 - the fast path must never stop a command
        known = isinstance(err, (CacheProblem, Pix2PixError))
        reason = str(err) if known else f"{type(err).__name__}: {err} ({REBUILD})"
        if cap or not has_avx512():
            return Status(False, f"oneDNN defaults{yours}: the fast path is unavailable: {reason}", problem=True)
        os.environ[ISA_CAP] = "AVX2"  # still in time: oneDNN reads it at its first operation
        return Status(False, f"oneDNN ISA cap AVX2: the fast path is unavailable: {reason}", problem=True)
    return Status(True, f"oneDNN {isa_name(isa)} fast path{yours} ({library.name})")


def load(library: Path) -> None:
    """Load the library into this process, and into child processes first (msrun and joblib workers)."""
    global _library
    if "mindspore" in sys.modules and not loaded(library):
        raise CacheProblem("MindSpore was imported before it could be loaded")
    shim = ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
    shim.pix2pix_conv_impls.restype = ctypes.c_char_p
    _library = shim
    preload = os.environ.get("LD_PRELOAD", "").split()
    if str(library) not in preload:
        os.environ["LD_PRELOAD"] = " ".join([str(library), *preload])


def loaded(library: Path) -> bool:
    """Whether this process has `library` mapped already (LD_PRELOAD from a parent)."""
    try:
        return str(library) in Path("/proc/self/maps").read_text()
    except OSError:
        return False


@contextlib.contextmanager
def constant_weights():
    """Within it, forward convolutions that this thread creates take their weights as constants: reordered
    into blocked layouts once, at their first run, and kept (and blocked at any size, as there is no reorder
    per call to amortise). Only for a network whose weights nothing changes afterwards: infer.generate.
    Inference's copy, which owns its weights. Without the fast path: nothing."""
    if _library is None:
        yield
        return
    _library.pix2pix_constant_weights(1)
    try:
        yield
    finally:
        _library.pix2pix_constant_weights(0)


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
            verified_library(os.environ.get(ISA_CAP) or None, rebuild=True)
        except Exception:  # noqa: BLE001 - enable() below reports it in one line
            pass
    status = enable()
    print(("on: " if status.active else "off: ") + status.detail)
    return 1 if status.problem else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
