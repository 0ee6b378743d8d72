"""task=export: MINDIR and ONNX files with a dynamic batch that match the live generator; AIR refused off Ascend."""

from __future__ import annotations

import json

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from pix2pix.api import load_generator
from tests.helpers import run_launch


@pytest.fixture(scope="module")
def reference(trained_run):
    """A batch of 3 (the export was traced with another batch size) and the deterministic generator's output."""
    batch = np.random.default_rng(7).uniform(-1, 1, (3, 3, 64, 64)).astype(np.float32)
    return batch, load_generator(trained_run, mode="deterministic", device="cpu").generate(batch)


def export(trained_run, fmt: str):
    result = run_launch(
        ["task=export", f"ckpt={trained_run}", f"export.format={fmt}", "device=cpu"], trained_run.parent
    )
    return result, result.stdout + result.stderr


def test_mindir_loads_back_and_matches(trained_run, reference):
    result, output = export(trained_run, "MINDIR")
    assert result.returncode == 0, output[-3000:]
    path = trained_run / "export" / "generator.mindir"
    assert "max abs difference" in output
    summary = json.loads((trained_run / "export" / "generator.mindir.json").read_text())
    assert summary["input_shape"] == ["batch", 3, 64, 64] and summary["max_abs_diff"] <= 1e-4
    batch, expected = reference
    actual = nn.GraphCell(ms.load(str(path)))(ms.Tensor(batch)).asnumpy()
    assert actual.shape == (3, 3, 64, 64)
    np.testing.assert_allclose(actual, expected, atol=1e-5)
    assert not list((trained_run / "export").glob(".*partial*"))


def test_onnx_runs_in_onnxruntime_and_matches(trained_run, reference):
    import onnxruntime

    result, output = export(trained_run, "ONNX")
    assert result.returncode == 0, output[-3000:]
    session = onnxruntime.InferenceSession(str(trained_run / "export" / "generator.onnx"))
    assert session.get_inputs()[0].shape[0] == "batch"
    batch, expected = reference
    for rows in (slice(0, 1), slice(0, 3)):
        actual = session.run(None, {session.get_inputs()[0].name: batch[rows]})[0]
        np.testing.assert_allclose(actual, expected[rows], atol=1e-5)


def test_air_off_ascend_is_one_line(trained_run):
    result, output = export(trained_run, "AIR")
    assert result.returncode == 2
    assert sum("export.format=AIR needs the Ascend backend" in line for line in output.splitlines()) == 1
    assert "Traceback" not in output and not (trained_run / "export" / "generator.air").exists()
