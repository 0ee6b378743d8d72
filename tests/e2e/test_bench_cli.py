"""python -m pix2pix.tools.bench: our step timed in a fresh process, the table, the per-primitive profile."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from pix2pix.backend import fastpath
from tests.helpers import FAST_ISA, ROOT

QUICK = ["--steps=1", "--warmup=1", "--no-infer"]

# The TINY networks (tests/helpers.py) at 64x64: the bench's own overrides
TINY_NETWORKS = ["--size=64", "model.generator.num_downs=6", "model.generator.ngf=8", "model.discriminator.ndf=8"]


def run_bench(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
    command = [sys.executable, "-m", "pix2pix.tools.bench", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_bad_arguments_are_one_line_errors(tmp_path):
    result = run_bench("--variants", "fast,turbo")
    expected = "error: --variants turbo: use fast, gemm, avx2, fast-avx2, gemm-avx2"
    assert result.returncode != 0 and result.stderr.strip() == expected
    result = run_bench("--compare", sys.executable, "--reference", str(tmp_path / "none.py"))
    assert result.returncode != 0 and "no such file (the reference's bench_torch.py)" in result.stderr
    result = run_bench("--compare", sys.executable, "model.generator.ngf=8")
    assert result.returncode != 0 and "the reference has the paper's" in result.stderr
    result = run_bench("model.generator.nfg=8")  # a typo: the launcher's own one-line check, before any run
    assert result.returncode == 2 and "round 1" not in result.stderr
    assert result.stderr.strip().startswith("error: 'model.generator.nfg' is not a config key; check its spelling")


def test_the_table_and_its_json(tmp_path):
    out = tmp_path / "bench.json"
    variants = "--variants=fast,avx2,fast-avx2"
    result = run_bench(variants, "--rounds=1", *QUICK, f"--out={out}", *TINY_NETWORKS)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "batch 1, 64x64, model.generator.num_downs=6 model.generator.ngf=8" in result.stdout
    (fast, capped, fast_avx2) = json.loads(out.read_text())["results"]
    assert (fast["name"], capped["name"], fast_avx2["name"]) == ("ours (fast)", "ours (avx2)", "ours (fast-avx2)")
    assert fast["train_ms_per_step"] > 0 and fast["rss_peak_train_mb"] > 100
    assert "oneDNN ISA cap AVX2 (PIX2PIX_CPU_FASTPATH=0)" in capped["detail"]
    if fastpath.enable().active:  # as in the bench's own processes (the same machine and cache)
        assert f"{FAST_ISA} fast path (" in fast["detail"] and "x64:gemm:jit" in fast["detail"]
        assert "AVX2 fast path under your ONEDNN_MAX_CPU_ISA=AVX2 (" in fast_avx2["detail"]
        assert "jit:avx2" in fast_avx2["detail"] and "avx512" not in fast_avx2["detail"]


def test_profile_shows_where_the_step_goes():
    result = run_bench("--profile=2", *QUICK, "--top=100", *TINY_NETWORKS)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("ours (fast): ") and " ms/step; " in lines[0]
    assert lines[1].startswith("oneDNN: ") and " ms/step in " in lines[1]
    rows = [line.split() for line in lines[3:] if line.strip()]
    convolutions = [row for row in rows if row[3] == "convolution"]
    # 6 down and 6 up convs in G, 4 + 1 in D: forward, backward-data and backward-weights, ms/step and GFLOP/s
    assert len({row[4] for row in convolutions}) == 3 and len(convolutions) >= 17
    rates = [float(row[2]) for row in convolutions]  # GFLOP/s: a tiny convolution's may round to 0
    assert min(rates) >= 0 and max(rates) > 1
    assert any("batch_normalization" in row for row in rows)
