"""python -m pix2pix.tools.bench: our CPU training step, timed beside the PyTorch reference.

    python -m pix2pix.tools.bench                                   # our step: ms/step, inference, peak memory
    python -m pix2pix.tools.bench --compare /path/to/torch/python   # and the reference (../shared/bench), alternately
    python -m pix2pix.tools.bench --variants fast,gemm,avx2 --batch 4  # the CPU fast path, its parts, off
    python -m pix2pix.tools.bench --profile 3                       # where our step goes, per oneDNN primitive
    python -m pix2pix.tools.bench model/generator=resnet_9blocks    # other networks (Hydra overrides; no --compare)

Each measurement runs in its own process (clean peak memory, the fast path chosen at start-up),
on synthetic inputs in [-1, 1] (no data loading, as the reference). A round runs every variant
once, in turns; the figures are medians over rounds of each run's median. Steps during which
other processes used more than 5 % of the machine are left out (the reference's rule), and
how many of ours were left out is printed (the reference's JSON has its own count).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import json
import math
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from pix2pix.track.files import write_text

DEFAULT_REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "bench" / "bench_torch.py"
# our step with PIX2PIX_CPU_FASTPATH on (blocked + gemm convolutions), gemm only, or off (the AVX2 cap); the
# -avx2 ones under ONEDNN_MAX_CPU_ISA=AVX2: on an AVX-512 machine, the oneDNN kernels an AVX2 machine runs
VARIANTS = {
    "fast": ("1", None),
    "gemm": ("gemm", None),
    "avx2": ("0", None),
    "fast-avx2": ("1", "AVX2"),
    "gemm-avx2": ("gemm", "AVX2"),
}
BUSY_PCT = 5.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# -- timing with a contention guard ----------------------------------------------------------------


def cpu_sample() -> tuple[float, float, float]:
    """(wall s, CPU s the machine spent busy, CPU s this process spent)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    busy = (sum(ticks[:7]) - ticks[3] - ticks[4]) / CLOCK_TICKS  # user..softirq without idle and iowait
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return time.perf_counter(), busy, (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def others_pct(before: tuple, after: tuple) -> float:
    """CPU used by other processes between two samples, in % of the machine."""
    wall = max(after[0] - before[0], 1e-9)
    return max(0.0, 100 * ((after[1] - before[1]) - (after[2] - before[2])) / (wall * os.cpu_count()))


def timed(fn, clean_steps: int) -> dict[str, float]:
    """Run fn until `clean_steps` ran undisturbed (at most 3x as many); median ms of those."""
    times, disturbed = [], 0
    while len(times) < clean_steps and len(times) + disturbed < 3 * clean_steps:
        before = cpu_sample()
        fn()
        after = cpu_sample()
        if others_pct(before, after) < BUSY_PCT:
            times.append((after[0] - before[0]) * 1000)
        else:
            disturbed += 1
    return {"median_ms": round(statistics.median(times or [float("nan")]), 2), "disturbed": disturbed}


# -- our step ----------------------------------------------------------------------------------------


def measure_ours(
    steps: int, warmup: int, batch: int, size: int, infer: bool, profile_steps: int = 0, overrides: list[str] = ()
) -> dict:
    """One process: build the configured networks and train step, time them, report JSON.
    profile_steps: then run that many steps with oneDNN's execution log on (stdout).
    overrides: Hydra overrides of the default config (other networks)."""
    from pix2pix.backend.runtime import describe_conv_kernels, describe_cpu_kernels, prepare_environment

    prepare_environment()
    import mindspore as ms
    import numpy as np

    from pix2pix.backend.runtime import seed_everything, setup_device
    from pix2pix.config.compose import compose
    from pix2pix.infer.generate import Inference
    from pix2pix.tasks.train import build_train_step

    cfg = compose(our_overrides(size, overrides))
    setup_device(**cfg.device)
    seed_everything(0)
    step = build_train_step(cfg)
    rng = np.random.default_rng(1)
    real_A, real_B = (ms.Tensor(rng.uniform(-1, 1, (batch, 3, size, size)).astype(np.float32)) for _ in range(2))
    step.set_train(True)

    def one_step():
        step.losses(real_A, real_B)

    started = time.perf_counter()
    one_step()
    first = time.perf_counter() - started
    for _ in range(warmup - 1):
        one_step()
    result = {
        "framework": f"mindspore {ms.__version__}",
        "cpu": describe_cpu_kernels(),
        "first_step_s": round(first, 2),
        "train": timed(one_step, steps),
        "conv_kernels": describe_conv_kernels(),
        "rss_peak_train_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if profile_steps:
        with onednn_exec_log():
            for _ in range(profile_steps):
                one_step()
        result["profiled_steps"] = profile_steps
    if infer:
        images, generate = real_A.asnumpy(), Inference(step.G, "deterministic", batch)  # as eval and predict run
        for _ in range(3):
            generate(images)
        result["infer"] = timed(lambda: generate(images), steps)
    return result


@contextlib.contextmanager
def onednn_exec_log():
    """oneDNN's own per-primitive log ("onednn_verbose,...,primitive,exec,...,ms") on stdout, for a while."""
    onednn = ctypes.CDLL("libdnnl.so.3", mode=os.RTLD_NOLOAD)  # MindSpore's, loaded by now
    libc = ctypes.CDLL(None)
    libc.fflush(None)
    onednn.dnnl_set_verbose(1)  # 1: each primitive execution with its time
    try:
        yield
    finally:
        onednn.dnnl_set_verbose(0)
        libc.fflush(None)  # before Python writes the JSON line after it


def profile_table(log: str, steps: int, top: int) -> list[str]:
    """Per step: the oneDNN primitives' time by kind, direction, implementation and shape, with GFLOP/s."""
    totals: dict[tuple, list[float]] = {}
    for line in log.splitlines():
        fields = line.split(",")
        if not line.startswith("onednn_verbose,") or fields[2:4] != ["primitive", "exec"]:
            continue
        key = (fields[5], fields[7], fields[6], fields[-2])  # kind, direction, implementation, shape
        totals.setdefault(key, [0.0, 0])
        totals[key][0] += float(fields[-1])
        totals[key][1] += 1
    everything = sum(ms for ms, _ in totals.values()) / steps
    lines = [f"oneDNN: {everything:.1f} ms/step in {sum(n for _, n in totals.values()) // steps} primitives"]
    lines.append(f"{'ms/step':>8} {'calls':>5} {'GFLOP/s':>8}  kind / direction / implementation / shape")
    for (kind, direction, impl, shape), (ms, calls) in sorted(totals.items(), key=lambda kv: -kv[1][0])[:top]:
        rate = f"{conv_flops(shape) * calls / (ms / 1e3) / 1e9:8.0f}" if conv_flops(shape) else f"{'':8}"
        lines.append(f"{ms / steps:8.1f} {calls / steps:5.0f} {rate}  {kind} {direction} {impl} {shape}")
    return lines


def conv_flops(shape: str) -> int:
    """2 x MACs of a convolution from oneDNN's shape string (mb1_ic64oc128_ih128oh64kh4..._iw128ow64kw4...)."""
    dims = dict(re.findall(r"([a-z]+)(\d+)", shape))
    if not {"ic", "oc", "oh", "ow", "kh", "kw"} <= dims.keys():
        return 0
    names = ("mb", "ic", "oc", "oh", "ow", "kh", "kw")
    return 2 * math.prod(int(dims.get(n, 1)) for n in names)


# -- the driver ----------------------------------------------------------------------------------------


def ours_env(variant: str) -> dict[str, str]:
    switch, cap = VARIANTS[variant]
    env = dict(os.environ, PIX2PIX_CPU_FASTPATH=switch, GLOG_v="3")
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    preload = [lib for lib in env.pop("LD_PRELOAD", "").split() if "conv_shim-" not in lib]
    if preload:  # the fast path's library only where the variant loads it itself
        env["LD_PRELOAD"] = " ".join(preload)
    if cap:
        env["ONEDNN_MAX_CPU_ISA"] = cap
    return env


def run_ours(variant: str, args) -> dict:
    command = [sys.executable, "-m", "pix2pix.tools.bench", "--measure-ours", *ours_args(args)]
    done = subprocess.run(command, capture_output=True, text=True, env=ours_env(variant))
    return last_json(done, f"ours ({variant})")


def run_reference(args, cap: str | None) -> dict:
    """The reference, under the ISA cap `cap` too (oneDNN's, and ATen's own kernels': AVX2 emulates an AVX2
    machine for it as for ours)."""
    command = [args.compare, str(args.reference), "--repeats", "1", "--wait-idle", "10", *common_args(args)]
    if args.no_infer:
        command.append("--no-infer")
    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")}
    if cap:
        env.update(ONEDNN_MAX_CPU_ISA=cap, ATEN_CPU_CAPABILITY=cap.lower())
    return last_json(subprocess.run(command, capture_output=True, text=True, env=env), "the reference")


def reference_name(cap: str | None) -> str:
    return f"pytorch reference ({cap})" if cap else "pytorch reference"


def variant_of(name: str) -> str | None:
    return name[len("ours (") : -1] if name.startswith("ours (") else None


def profile_ours(variant: str, args) -> None:
    command = [sys.executable, "-m", "pix2pix.tools.bench", "--measure-ours", "--no-infer", f"--profile={args.profile}"]
    done = subprocess.run([*command, *ours_args(args)], capture_output=True, text=True, env=ours_env(variant))
    result = last_json(done, f"ours ({variant})")
    print(f"ours ({variant}): {result['train']['median_ms']:.1f} ms/step; {result['cpu']}")
    print("\n".join(profile_table(done.stdout, args.profile, args.top)) + "\n")


def check_our_overrides(args) -> None:
    """The overrides as launch.py checks them (one line naming the key and the fix), before any run."""
    from pix2pix.config.checks import check_overrides
    from pix2pix.errors import Pix2PixError

    try:
        check_overrides(our_overrides(args.size, args.overrides))
    except Pix2PixError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def our_overrides(size: int, overrides: list[str]) -> list[str]:
    return ["device=cpu", f"dataset.crop_size={size}", *overrides]


def common_args(args) -> list[str]:
    return [f"--steps={args.steps}", f"--warmup={args.warmup}", f"--batch={args.batch}", f"--size={args.size}"]


def ours_args(args) -> list[str]:
    return [*common_args(args), *args.overrides]


def last_json(done: subprocess.CompletedProcess, what: str) -> dict:
    if done.returncode != 0:
        sys.exit(f"error: {what} failed (exit {done.returncode}): {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summary(name: str, runs: list[dict], batch: int) -> dict:
    """Medians over rounds, per image where that is the unit."""
    if "train_ms_per_step" in runs[0]:  # the reference's JSON
        train = [r["train_ms_per_step"]["median_of_repeat_medians"] for r in runs]
        infer = [r["infer_ms_per_image"] for r in runs if "infer_ms_per_image" in r]
        rss = [r["rss_peak_train_mb"] for r in runs]
        detail = f"torch {runs[0]['torch']}, {runs[0]['threads']} threads"
    else:
        train = [r["train"]["median_ms"] for r in runs]
        infer = [r["infer"]["median_ms"] / batch for r in runs if "infer" in r]
        rss = [r["rss_peak_train_mb"] for r in runs]
        detail = runs[0]["cpu"] + (f"; conv: {runs[0]['conv_kernels']}" if runs[0]["conv_kernels"] else "")
        detail += f"; {sum(r['train']['disturbed'] for r in runs)} disturbed steps left out"
    return {
        "name": name,
        "detail": detail,
        "train_ms_per_step": round(statistics.median(train), 1),
        "train_ms_per_image": round(statistics.median(train) / batch, 1),
        "infer_ms_per_image": round(statistics.median(infer), 1) if infer else None,
        "rss_peak_train_mb": round(max(rss), 0),
        "rounds": [round(t, 1) for t in train],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pix2pix.tools.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--compare", metavar="PYTHON", help="an interpreter with torch: also run the reference")
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE, help="bench_torch.py of the reference")
    parser.add_argument(
        "--variants",
        default="fast",
        help="ours, comma-separated: fast (the CPU fast path), gemm (its gemm part), avx2 (off, the AVX2 cap), "
        "fast-avx2 and gemm-avx2 (the fast path under ONEDNN_MAX_CPU_ISA=AVX2: what an AVX2 machine runs)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="undisturbed timed steps per run")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--no-infer", action="store_true", help="skip the inference timing")
    parser.add_argument("--out", type=Path, help="also write the results as JSON")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="STEPS",
        help="ours only: time every oneDNN "
        "primitive over STEPS more steps (oneDNN's own log) and print where the step goes",
    )
    parser.add_argument("--top", type=int, default=25, help="rows of the --profile table")
    parser.add_argument("--measure-ours", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="Hydra overrides for our networks (without --compare)"
    )
    args = parser.parse_args(argv)
    if args.measure_ours:
        infer = not args.no_infer
        measured = measure_ours(args.steps, args.warmup, args.batch, args.size, infer, args.profile, args.overrides)
        print(json.dumps(measured))
        return
    if args.overrides and args.compare:
        sys.exit("error: overrides change our networks, the reference has the paper's: leave out --compare or them")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        sys.exit(f"error: --variants {','.join(unknown)}: use {', '.join(VARIANTS)}")
    check_our_overrides(args)
    if args.profile:
        for variant in variants:
            profile_ours(variant, args)
        return
    if args.compare and not args.reference.is_file():
        sys.exit(f"error: --reference {args.reference}: no such file (the reference's bench_torch.py)")
    runners = {f"ours ({v})": functools.partial(run_ours, v, args) for v in variants}
    if args.compare:  # a reference under each ISA cap of ours
        caps = sorted({VARIANTS[v][1] for v in variants}, key=str)
        runners |= {reference_name(cap): functools.partial(run_reference, args, cap) for cap in caps}
    names = list(runners)
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for round_ in range(args.rounds):
        order = names if round_ % 2 == 0 else names[::-1]  # alternate who goes first
        for name in order:
            print(f"round {round_ + 1}/{args.rounds}: {name}", file=sys.stderr, flush=True)
            runs[name].append(runners[name]())
    results = [summary(name, runs[name], args.batch) for name in names]
    print_table(results, args)
    if args.out:
        write_text(args.out, json.dumps({"args": vars(args) | {"out": str(args.out)}, "results": results}, default=str))


def print_table(results: list[dict], args) -> None:
    """Each of ours against the reference under the same ISA cap."""
    by_name = {r["name"]: r for r in results}
    networks = f", {' '.join(args.overrides)}" if args.overrides else ""
    print(f"batch {args.batch}, {args.size}x{args.size}{networks}, {args.rounds} rounds, medians (ms)")
    print(f"{'':24} {'train/step':>11} {'train/image':>12} {'infer/image':>12} {'peak RSS MB':>12}  ratio to reference")
    for r in results:
        ratio = ""
        variant = variant_of(r["name"])
        reference = by_name.get(reference_name(VARIANTS[variant][1])) if variant else None
        if reference:
            parts = [f"train {r['train_ms_per_step'] / reference['train_ms_per_step']:.2f}x"]
            if r["infer_ms_per_image"] and reference["infer_ms_per_image"]:
                parts.append(f"infer {r['infer_ms_per_image'] / reference['infer_ms_per_image']:.2f}x")
            parts.append(f"memory {r['rss_peak_train_mb'] / reference['rss_peak_train_mb']:.2f}x")
            ratio = ", ".join(parts)
        infer = f"{r['infer_ms_per_image']:.1f}" if r["infer_ms_per_image"] else "-"
        print(
            f"{r['name']:24} {r['train_ms_per_step']:11.1f} {r['train_ms_per_image']:12.1f} {infer:>12} "
            f"{r['rss_peak_train_mb']:12.0f}  {ratio}"
        )
    for r in results:
        print(f"  {r['name']}: {r['detail']}; per round {r['rounds']}")


if __name__ == "__main__":
    main()
