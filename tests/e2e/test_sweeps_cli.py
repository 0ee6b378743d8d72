"""Sweeps through the command line (the compose API cannot run multirun), then the tools that read them:
pix2pix.tools.report (tables, plot, performance tables) and pix2pix.tools.tb (event summaries)."""

from __future__ import annotations

import csv
import json

import pytest
import yaml
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pix2pix.backend import fastpath
from pix2pix.tools import report, tb
from tests.helpers import TINY, conv_line, run_launch

ONE_EPOCH = [*TINY, "schedule.n_epochs_decay=0"]  # 4 steps per job

LAMBDAS = (1.0, 100.0)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    work = tmp_path_factory.mktemp("sweep")
    folder = work / "sweep"
    args = ["-m", *ONE_EPOCH, "model.lambda_L1=1,100", f"paths.data_dir={work / 'data'}", f"hydra.sweep.dir={folder}"]
    result = run_launch(args, cwd=work)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return work, folder


def test_each_job_is_a_complete_run_equal_to_the_same_single_run(sweep):
    work, folder = sweep
    for job, lambda_L1 in enumerate(LAMBDAS):
        run_dir = folder / str(job)
        for name in ("checkpoints/last.ckpt", "samples/epoch_001.png", "launch.log", ".hydra/config.yaml"):
            assert (run_dir / name).is_file(), name
        assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
        assert yaml.safe_load((run_dir / ".hydra/config.yaml").read_text())["model"]["lambda_L1"] == lambda_L1
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert {"val_L1", "val_psnr", "val_ssim", "ms_per_step"} <= set(metrics)
    single = work / "single"
    args = [*ONE_EPOCH, "model.lambda_L1=100", f"paths.data_dir={work / 'data'}", f"hydra.run.dir={single}"]
    result = run_launch(args, cwd=work)
    assert result.returncode == 0, result.stdout[-3000:]
    alone = json.loads((single / "metrics.json").read_text())
    in_sweep = json.loads((folder / "1" / "metrics.json").read_text())
    # Same init, data and dropout from the same seed; CPU kernels add float noise only.
    assert alone["val_L1_before"] == pytest.approx(in_sweep["val_L1_before"], abs=1e-4)
    assert alone["val_L1"] == pytest.approx(in_sweep["val_L1"], abs=1e-3)


def test_report_tables_the_sweep_beside_it(sweep, capsys):
    _, folder = sweep
    assert report.main([str(folder), "--plot"]) == 0
    printed = capsys.readouterr().out
    assert "model.lambda_L1=1 " in printed and "model.lambda_L1=100 " in printed
    with open(folder / "report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == ["0", "1"]
    assert [r["overrides"] for r in rows] == ["model.lambda_L1=1", "model.lambda_L1=100"]  # only what differs
    for job, row in enumerate(rows):
        metrics = json.loads((folder / str(job) / "metrics.json").read_text())
        assert float(row["val L1"]) == pytest.approx(metrics["val_L1"], abs=1e-4)
        assert float(row["SSIM"]) == pytest.approx(metrics["val_ssim"], abs=1e-4)
        assert float(row["G L1"]) == pytest.approx(metrics["final_loss_G_L1"], abs=1e-3)
    assert (folder / "report.md").read_text().count("\n") == 4  # header, rule, two rows
    with Image.open(folder / "report.png") as img:
        assert img.width > 200 and img.height > 200


def test_report_compares_several_folders(sweep, tmp_path, capsys):
    work, folder = sweep
    assert report.main([str(folder), str(work / "single"), "--out", str(tmp_path)]) == 0
    with open(tmp_path / "report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == ["sweep/0", "sweep/1", "single"]
    with pytest.raises(SystemExit, match="no metrics.json"):
        report.main([str(tmp_path)])


def test_tb_summarises_every_run_and_exports_the_sample_grids(sweep, tmp_path, capsys):
    _, folder = sweep
    assert tb.main([str(folder), "--export-images", str(tmp_path / "images")]) == 0
    printed = capsys.readouterr().out
    events = EventAccumulator(str(folder / "0" / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    losses = [p.value for p in events.Scalars("loss_G_L1")]
    line = next(line for line in printed.split("\n\n")[0].splitlines() if line.startswith("loss_G_L1"))
    cells = line.split()
    assert cells[1:3] == ["4", "1-4"]
    assert [float(c) for c in cells[3:]] == pytest.approx([losses[0], losses[-1], min(losses), max(losses)], rel=1e-5)
    assert printed.count("loss_G_L1") == 2  # one line per run
    exported = sorted((tmp_path / "images").rglob("*.png"))
    assert [p.relative_to(tmp_path / "images").as_posix() for p in exported] == [
        "0/samples_step000001.png",
        "1/samples_step000001.png",
    ]
    with Image.open(exported[0]) as img:
        assert img.size == (3 * 64, 2 * 64)


def multirun(tmp_path, name: str, *args: str):
    """`python launch.py -m ARGS` into tmp_path/name, with data under tmp_path; returns (folder, output)."""
    folder = tmp_path / name
    result = run_launch(["-m", *args, f"paths.data_dir={tmp_path / 'data'}", f"hydra.sweep.dir={folder}"], tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    return folder, output


def test_optuna_search_returns_the_optimized_metric(tmp_path):
    search = ["hparams_search=lambda_l1_optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=2"]
    folder, _ = multirun(tmp_path, "search", *search, *ONE_EPOCH)
    best = yaml.safe_load((folder / "optimization_results.yaml").read_text())
    jobs = [json.loads((folder / str(i) / "metrics.json").read_text())["val_L1"] for i in range(2)]
    assert best["best_value"] == pytest.approx(min(jobs))
    assert set(best["best_params"]) == {"model.lambda_L1", "optimizer.learning_rate"}


def test_joblib_launcher_runs_jobs_in_parallel_processes(tmp_path):
    folder, output = multirun(
        tmp_path, "parallel", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *ONE_EPOCH, "seed=1,2"
    )
    assert "Joblib.Parallel" in output
    for job in (0, 1):
        assert json.loads((folder / str(job) / "metrics.json").read_text())["val_L1"] > 0
        if fastpath.enable().active:  # joblib's workers import MindSpore first: the fast path still runs there
            assert "x64:gemm:jit" in conv_line((folder / str(job) / "launch.log").read_text())


# Every experiment (a README performance row) for one timed step, shrunk to a tiny network.
TINY_EXPERIMENT = [
    "device=cpu",
    "dataset.load_size=72",
    "dataset.crop_size=64",
    "model.generator.num_downs=6",
    "model.generator.ngf=8",
    "model.discriminator.ndf=8",
    "benchmark.warmup_steps=1",
    "benchmark.steps=2",
]


def test_every_experiment_benchmarks_and_the_performance_tables_follow(tmp_path, capsys):
    folder, _ = multirun(tmp_path, "bench", "task=benchmark", "experiment=glob(*)", *TINY_EXPERIMENT)
    results = [json.loads(p.read_text()) for p in sorted(folder.glob("*/benchmark.json"))]
    assert len(results) == 8
    for b in results:
        assert (
            b["timed_steps"] == 2 and b["ms_per_step"]["p10"] <= b["ms_per_step"]["median"] <= b["ms_per_step"]["p90"]
        )
        assert b["first_step_s"] > 0 and b["images_per_s"] > 0 and b["peak_host_memory_mb"] > 100
        assert b["checkpoint_mb"] < b["training_checkpoint_mb"]
        assert b["data"] == "synthetic (same shape)" and b["device"] == "cpu"
        pairs = 400 if b["dataset"] == "facades" else 1096
        assert b["steps_per_epoch"] == pairs // b["devices"] and b["epochs"] == 200
        hours = 200 * b["steps_per_epoch"] * b["ms_per_step"]["median"] / 1000 / 3600
        assert b["projected_total_h"] == pytest.approx(hours, abs=1e-3)
        assert report.published_figures()[b["experiment"]]["devices"] == b["devices"]
    assert report.main(["--performance", str(folder)]) == 0
    tables = (folder / "performance.md").read_text()
    assert tables.count("### ") == 4  # single and distributed, facades and maps
    for column in ("single Ascend (published)", "single GPU (published)", "Ascend (8pcs) (published)"):
        assert column in tables
    assert "1pc(GPU): 40 ms/step" in tables and "8pc(Ascend): 15 ms/step" in tables
    assert tables.count("measured: ") == 8


def test_tb_reads_an_event_file_cut_short(sweep, tmp_path):
    """A run still writing (or killed) leaves a partial last record: it is ignored, not an error."""
    _, folder = sweep
    source = max((folder / "0" / "tensorboard").glob("events.out.tfevents.*"), key=lambda p: p.stat().st_size)
    whole = list(tb.read_events(source))
    cut = tmp_path / source.name
    cut.write_bytes(source.read_bytes()[:-7])
    assert len(list(tb.read_events(cut))) == len(whole) - 1
