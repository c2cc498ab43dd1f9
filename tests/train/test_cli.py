"""The command line's first minutes: ``python -m convcore``, ``--version``,
defaults in ``--help``, a closed pipe, the unbuilt source tree, too-small
inputs, SIGTERM and Ctrl-C, and ``--resume`` continuing a run in place."""
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

import convcore
from convcore.cli import main
from convcore.train import read_checkpoint
from _synthetic import write_idx_dataset

TINY = "_tiny_model:tiny"
HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_idx_dataset(str(tmp_path_factory.mktemp("idx")), n_train=384, n_test=32)


def _run(args, **kw):
    return subprocess.run([sys.executable, "-m", "convcore"] + args, capture_output=True,
                          text=True, timeout=120, **kw)


def test_python_dash_m_convcore_runs_the_cli():
    r = _run(["--version"])
    assert r.returncode == 0 and r.stdout.strip() == f"convcore {convcore.__version__}"
    r = _run(["summary", "lenet5"])
    assert r.returncode == 0 and "61,706" in r.stdout
    r = _run([])
    assert r.returncode == 2 and "usage: convcore" in r.stdout


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == \
        f"convcore {convcore.__version__}"


@pytest.mark.parametrize("command, shown", [
    ("train", ["(default: lenet5)", "(default: 64)", "(default: runs/latest)",
               "(default: 0.9)", "(default: cosine)", "(default: 0)"]),
    ("evaluate", ["(default: the run's own)"]),
])
def test_help_shows_the_defaults(capsys, command, shown):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for s in shown:
        assert s in out
    assert "(default: None)" not in out and "(default: False)" not in out


def test_closed_pipe_exits_quietly():
    """``convcore summary vgg16 | head``: the reader is gone before the output."""
    p = subprocess.Popen([sys.executable, "-m", "convcore", "summary", "vgg16"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()                     # like head, gone before convcore writes
    err = p.stderr.read().decode()
    p.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception" not in err
    assert p.returncode == 1


def test_importing_an_unbuilt_source_tree_says_what_to_do(tmp_path):
    src = os.path.dirname(os.path.abspath(convcore.__file__))
    tree = tmp_path / "checkout"
    shutil.copytree(src, tree / "convcore",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "*.c", "__pycache__"))
    (tree / "setup.py").write_text("# the project's build script\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    r = subprocess.run([sys.executable, "-c", "import convcore"], cwd=str(tree), env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "python setup.py build_ext --inplace" in r.stderr
    assert "another directory" in r.stderr and str(tree) in r.stderr


def test_too_small_input_is_reported_before_training(data_dir, tmp_path, capsys):
    d = write_idx_dataset(str(tmp_path / "d28"), n_train=16, n_test=8, size=28)
    rc = main(["train", "--model", "vgg16", "--data-dir", d, "--epochs", "1",
               "--out", str(tmp_path / "o")])
    cap = capsys.readouterr()
    assert rc == 2 and "too small for the network" in cap.err and "vgg16" in cap.err
    assert "epoch" not in cap.out and cap.err.count("\n") == 1


def test_sigterm_is_handled_like_ctrl_c(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--model", "_tiny_model:terminating", "--data-dir", data_dir,
               "--epochs", "3", "--out", str(out), "--threads", "1"])
    printed = capsys.readouterr().out
    assert rc == 143
    assert "terminated" in printed and "epoch   1/3" in printed
    assert read_checkpoint(str(out))[0]["epoch"] == 1
    meta, _ = read_checkpoint(str(out / "interrupted.npz"))
    assert meta["interrupted"] and meta["epoch"] == 1
    # the advice names files that exist
    assert f"--resume {out}" in printed and os.path.isfile(out / "checkpoint.npz")
    assert signal.getsignal(signal.SIGTERM) is not None       # handler restored
    assert signal.getsignal(signal.SIGTERM).__module__ != "convcore.train"


def test_interrupt_in_the_first_epoch_offers_nothing_to_resume(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--model", "_tiny_model:interrupting_first_epoch", "--data-dir",
               data_dir, "--epochs", "3", "--out", str(out), "--threads", "1"])
    printed = capsys.readouterr().out
    assert rc == 130
    assert "nothing to resume" in printed and "--resume" not in printed
    assert not (out / "checkpoint.npz").exists()
    assert "interrupted.npz" in printed and (out / "interrupted.npz").exists()


def _train(data_dir, out, *extra):
    return ["train", "--model", TINY, "--data-dir", data_dir, "--out", str(out),
            "--threads", "1", "--batch-size", "32", "--lr", "0.03", "--seed", "5"] + list(extra)


def test_resume_continues_the_run_in_its_own_directory(data_dir, tmp_path, monkeypatch,
                                                       capsys):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "B"
    assert main(_train(data_dir, run, "--epochs", "2", "--schedule", "none")) == 0
    capsys.readouterr()

    # no options: nothing to override, the run is complete
    assert main(["train", "--resume", str(run), "--model", TINY, "--data-dir",
                 data_dir]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"resuming {run / 'checkpoint.npz'} after epoch 2 of 2")
    assert "no setting overridden" in first
    assert read_checkpoint(str(run))[0]["epoch"] == 2

    # --epochs 4 extends it, in runs/B, with run B's own settings
    assert main(["train", "--resume", str(run), "--model", TINY, "--data-dir", data_dir,
                 "--epochs", "4"]) == 0
    printed = capsys.readouterr().out
    first = printed.splitlines()[0]
    assert "after epoch 2 of 4" in first and "overridden: epochs=4 (was 2)" in first
    assert printed.count("img/s") == 2 and str(run) in printed.splitlines()[-1]
    meta, _ = read_checkpoint(str(run))
    assert meta["epoch"] == 4 and [h["epoch"] for h in meta["history"]] == [1, 2, 3, 4]
    cfg = meta["config"]
    assert (cfg["batch_size"], cfg["lr"], cfg["seed"], cfg["schedule"], cfg["epochs"]) == \
        (32, 0.03, 5, "none", 4)
    with open(run / "metrics.json") as f:
        assert len(json.load(f)["history"]) == 4
    assert not (tmp_path / "runs" / "latest").exists()


def test_resume_in_place_equals_an_uninterrupted_run(data_dir, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(_train(data_dir, a, "--epochs", "3")) == 0
    capsys.readouterr()
    # b: stop after epoch 1 (a run of 3 epochs whose checkpoint says epoch 1)
    from convcore.train import TrainConfig, fit
    cfg = TrainConfig(model=TINY, data_dir=data_dir, out=str(b), threads=1, batch_size=32,
                      lr=0.03, seed=5, epochs=3)
    fit(cfg, stop_after=1, log=lambda m: None, plots=False)
    assert main(["train", "--resume", str(b), "--model", TINY, "--data-dir", data_dir]) == 0
    capsys.readouterr()
    _, wa = read_checkpoint(str(a))
    _, wb = read_checkpoint(str(b))
    for k in wa:
        if k.startswith("model/"):
            np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)


def test_resume_with_out_writes_elsewhere(data_dir, tmp_path, capsys):
    run, other = tmp_path / "r", tmp_path / "copy"
    assert main(_train(data_dir, run, "--epochs", "1")) == 0
    assert main(["train", "--resume", str(run / "checkpoint.npz"), "--model", TINY,
                 "--data-dir", data_dir, "--epochs", "2", "--out", str(other)]) == 0
    capsys.readouterr()
    assert read_checkpoint(str(run))[0]["epoch"] == 1
    assert read_checkpoint(str(other))[0]["epoch"] == 2


@pytest.mark.parametrize("argv", [["--lr", "nan"], ["--momentum", "inf"],
                                  ["--weight-decay", "nan"]])
def test_non_finite_hyper_parameters_are_refused(data_dir, tmp_path, capsys, argv):
    rc = main(["train", "--model", TINY, "--data-dir", data_dir, "--out", str(tmp_path)]
              + argv)
    err = capsys.readouterr().err
    assert rc == 2 and argv[0][2:].replace("-", "_") in err and err.count("\n") == 1
