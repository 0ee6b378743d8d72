"""pix2pix.tools.tb without a sweep: a folder without event files is named (the sweeps and the tools on them:
tests/e2e/test_sweeps_cli.py)."""

from __future__ import annotations

import pytest

from pix2pix.tools import tb


def test_tb_names_a_folder_without_events(tmp_path):
    with pytest.raises(SystemExit, match="no TensorBoard event files"):
        tb.main([str(tmp_path)])
