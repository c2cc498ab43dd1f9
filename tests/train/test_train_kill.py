"""Training never loses work: SIGKILL of a real ``convcore train`` process in the
middle of a checkpoint write leaves the previous checkpoint loadable, and
training resumes from it.

The child is the real CLI (``convcore.cli.main``); the only thing the test adds
is a hook that holds it inside the second checkpoint's write (after half or all
of the bytes reached the temporary file, before the rename) and says so, so
the kill lands in that window every time instead of by luck.
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("convcore.train")
import convcore  # noqa: E402
from convcore.cli import main  # noqa: E402
from convcore.train import read_checkpoint  # noqa: E402

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/: _tiny_model.py
sys.path.insert(0, HERE)
from _synthetic import write_idx_dataset  # noqa: E402

# imported from this directory (on sys.path here and in the child), so the test
# also runs from a copy of tests/ outside the source tree
TINY = "_tiny_model:tiny"

_CHILD = r"""
import io, os, sys, time
import numpy as np
marker, mode = sys.argv[1], sys.argv[2]
_savez, calls = np.savez, [0]

def held_savez(file, *args, **kwargs):
    calls[0] += 1
    if calls[0] < 2:                    # epoch 1: a normal, complete checkpoint
        return _savez(file, *args, **kwargs)
    buf = io.BytesIO()
    _savez(buf, *args, **kwargs)
    data = buf.getvalue()
    file.write(data if mode == "full" else data[: len(data) // 2])
    file.flush()
    with open(marker, "w") as m:
        m.write(str(len(data)))
    time.sleep(600)                     # killed here, inside save_checkpoint

np.savez = held_savez
from convcore.cli import main
sys.exit(main(sys.argv[3:]))
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_idx_dataset(str(tmp_path_factory.mktemp("idx")), n_train=128, n_test=32)


def _train_args(data_dir, out, epochs):
    return ["train", "--model", TINY, "--data-dir", data_dir, "--epochs", str(epochs),
            "--lr", "0.02", "--out", out, "--seed", "3", "--threads", "1"]


@pytest.mark.parametrize("mode", ["half", "full"])
def test_sigkill_during_checkpoint_write_keeps_the_previous_checkpoint(data_dir, tmp_path,
                                                                       mode, capsys):
    out = str(tmp_path / "run")
    marker = str(tmp_path / "in-write")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [HERE, os.path.dirname(os.path.dirname(convcore.__file__))] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    child = subprocess.Popen([sys.executable, "-c", _CHILD, marker, mode]
                             + _train_args(data_dir, out, 3),
                             cwd=str(tmp_path), env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while not os.path.exists(marker):
            if child.poll() is not None:
                pytest.fail(f"convcore train ended (rc {child.returncode}) before the "
                            f"second checkpoint write:\n{child.stdout.read()}")
            if time.monotonic() > deadline:
                pytest.fail("convcore train never reached the second checkpoint write")
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)        # no cleanup handler can run
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    log = child.stdout.read()
    assert "epoch   1/3" in log and "epoch   2/3" not in log

    # the killed write left its temporary file behind, never the real name
    leftovers = [f for f in os.listdir(out) if f.startswith(".tmp")]
    assert leftovers, "the kill did not land inside the checkpoint write"
    for f in leftovers:
        if mode == "half":
            with pytest.raises(ValueError):            # a torn file: only ValueError
                read_checkpoint(os.path.join(out, f))

    # the previous checkpoint is intact and usable
    meta, arrays = read_checkpoint(out)
    assert meta["epoch"] == 1
    assert all(np.all(np.isfinite(a)) for k, a in arrays.items() if a.dtype.kind == "f")
    assert main(["evaluate", out, "--data-dir", data_dir, "--json", "--model", TINY]) == 0
    res = json.loads(capsys.readouterr().out)
    assert np.asarray(res["confusion"]).sum() == 32

    # and training resumes from it to the end
    ckpt = os.path.join(out, "checkpoint.npz")
    assert main(_train_args(data_dir, out, 3) + ["--resume", ckpt]) == 0
    capsys.readouterr()
    meta, _ = read_checkpoint(out)
    assert meta["epoch"] == 3
