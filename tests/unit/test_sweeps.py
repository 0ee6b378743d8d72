"""pix2pix.tools.tb and report without a sweep: what they refuse and what they still read (the sweeps
and the tools on them: tests/e2e/test_sweeps_cli.py)."""

from __future__ import annotations

import pytest

from pix2pix.tools import report, tb


def test_tb_names_a_folder_without_events(tmp_path):
    with pytest.raises(SystemExit, match="no TensorBoard event files"):
        tb.main([str(tmp_path)])


def test_the_report_wants_folders_and_reads_older_benchmark_files(tmp_path):
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(SystemExit, match="metrics.json: a file; give the run or sweep folder"):
        report.main([str(tmp_path / "metrics.json")])
    assert not (tmp_path / "nowhere").exists()
    with pytest.raises(SystemExit, match="nowhere: no such run, sweep or file"):
        report.main([str(tmp_path / "nowhere")])
    assert not (tmp_path / "nowhere").exists()  # nothing made before anything was found
    # a benchmark.json written before the published figures moved to tools/published.yaml carries its own
    published = {**report.published_figures()["facades_gpu_1pc"], "column": "an older GPU column"}
    older = {
        "experiment": "a_row_since_renamed", "published": published, "device": "cpu", "devices": 1,
        "hardware": "a CPU", "mindspore_version": "2.10.0", "python_version": "3.11", "dataset": "facades",
        "data": "real", "batch_size": 1, "learning_rate": 2e-4, "pad_mode": "REFLECT", "gan_mode": "vanilla",
        "generator": "UnetGenerator", "generator_params": 1, "discriminator_params": 1, "epochs": 200,
        "train_pairs": 400, "steps_per_epoch": 400, "projected_total_h": 1.0, "checkpoint_mb": 1.0,
        "training_checkpoint_mb": 2.0, "command": "python launch.py", "ms_per_step": {"median": 1, "p10": 1, "p90": 1},
    }  # fmt: skip
    tables = report.performance_tables([report.Run(tmp_path, [], older)])
    assert "an older GPU column (published)" in tables and "measured: a_row_since_renamed" in tables
    # older files have no crop_size or amp: no image/amp entries; newer ones show both, and the header
    # names a non-default level and a rectangular shape
    assert "image=" not in tables
    newer = {**older, "experiment": "facades_gpu_1pc", "crop_size": [256, 512], "amp": "O2"}
    tables = report.performance_tables([report.Run(tmp_path, [], newer)])
    assert "measured: facades_gpu_1pc (amp=O2, 256x512)" in tables and "image=256x512, amp=O2" in tables
