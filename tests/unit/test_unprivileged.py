"""As a user who is not root: checkpoints are written, rewritten and read back. CI runs the whole suite as
such an account; as root this runs through `runuser` as one."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tests.helpers import ROOT

SAVE_TWICE = """
    import os, stat, sys
    from pathlib import Path
    import mindspore as ms, numpy as np
    from pix2pix import checkpoint

    os.umask(int(sys.argv[2], 8))
    path = Path(sys.argv[1]) / "checkpoints" / "last.ckpt"
    for epoch in (1, 2):  # the second write replaces the first, as every epoch does
        state = {"w": ms.Parameter(ms.Tensor(np.full((8, 8), epoch, np.float32)), name="w")}
        checkpoint.save(path, state, {"epoch": epoch})
    loaded = checkpoint.load(path)
    print(int(loaded["epoch"].asnumpy()), float(loaded["w"].asnumpy()[0, 0]), oct(stat.S_IMODE(path.stat().st_mode)))
    print(sorted(p.name for p in path.parent.iterdir()))
"""


def test_checkpoints_are_written_replaced_and_read_by_a_user_who_is_not_root(as_unprivileged):
    prefix, folder = as_unprivileged
    for umask, mode in (("022", "0o644"), ("002", "0o664")):
        run_dir = folder / f"umask{umask}"
        done = subprocess.run(
            [*prefix, sys.executable, "-c", textwrap.dedent(SAVE_TWICE), str(run_dir), umask],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr[-3000:]
        epoch, value, written_mode = done.stdout.splitlines()[0].split()
        assert (epoch, value, written_mode) == ("2", "2.0", mode)  # the umask's permissions, not MindSpore's 0400
        assert done.stdout.splitlines()[1] == "['last.ckpt']"  # no temporary file left
        assert os.stat(run_dir / "checkpoints" / "last.ckpt").st_uid != 0  # the account's own file
