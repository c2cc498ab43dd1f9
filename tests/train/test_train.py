"""End to end: `convcore train` / `convcore evaluate` on synthetic IDX files,
outputs, determinism, resume equality, Ctrl-C."""
import json
import os

import numpy as np
import pytest

from convcore.cli import main
from convcore.train import TrainConfig, fit, read_checkpoint
from _synthetic import write_idx_dataset

TINY = "_tiny_model:tiny"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_idx_dataset(str(tmp_path_factory.mktemp("fmnist")), n_train=384, n_test=96)


def _quiet(_msg):
    pass


def test_train_cli_end_to_end(data_dir, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = str(tmp_path / "run")
    rc = main(["train", "--model", TINY, "--data-dir", data_dir, "--epochs", "3",
               "--lr", "0.02", "--out", out, "--seed", "1"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert printed.count("img/s") == 3 and "test acc" in printed
    with open(os.path.join(out, "metrics.json")) as f:
        m = json.load(f)
    h = m["history"]
    assert [e["epoch"] for e in h] == [1, 2, 3]
    assert h[-1]["train_loss"] < 0.5 * h[0]["train_loss"]
    assert h[-1]["test_acc"] > 0.5
    meta, arrays = read_checkpoint(out)
    assert meta["epoch"] == 3 and "model/conv.weight" in arrays
    with np.load(os.path.join(out, "checkpoint.npz"), allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)
    import matplotlib.image as mpimg
    for name in ("curves.png", "confusion.png", "filters.png", "feature_maps.png"):
        img = mpimg.imread(os.path.join(out, name))
        assert img.ndim == 3 and img.shape[0] > 100
    assert not [f for f in os.listdir(out) if f.startswith(".tmp")]

    rc = main(["evaluate", out, "--data-dir", data_dir, "--model", TINY])
    rep = capsys.readouterr().out
    assert rc == 0 and "per-class accuracy" in rep and "confusion matrix" in rep
    main(["evaluate", os.path.join(out, "checkpoint.npz"), "--data-dir", data_dir, "--json",
          "--model", TINY])
    res = json.loads(capsys.readouterr().out)
    assert np.isclose(res["accuracy"], h[-1]["test_acc"])
    assert np.asarray(res["confusion"]).sum() == 96


def _cfg(data_dir, out, **kw):
    base = dict(model=TINY, data_dir=data_dir, epochs=4, lr=0.01, out=out)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("opt", ["sgd", "adamw"])
def test_resume_after_epoch_k_equals_an_uninterrupted_run(data_dir, tmp_path, opt):
    kw = dict(optimizer=opt, nesterov=opt == "sgd", weight_decay=1e-3, loss="cb-focal")
    fit(_cfg(data_dir, str(tmp_path / "a"), **kw), log=_quiet, plots=False)
    fit(_cfg(data_dir, str(tmp_path / "b"), **kw), stop_after=2, log=_quiet, plots=False)
    meta_b, _ = read_checkpoint(str(tmp_path / "b"))
    assert meta_b["epoch"] == 2
    fit(_cfg(data_dir, str(tmp_path / "b"), **kw), resume=str(tmp_path / "b"), log=_quiet,
        plots=False)
    ma, a = read_checkpoint(str(tmp_path / "a"))
    mb, b = read_checkpoint(str(tmp_path / "b"))
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert [h["train_loss"] for h in ma["history"]] == [h["train_loss"] for h in mb["history"]]


def test_same_seed_same_numbers_other_seed_other_numbers(data_dir, tmp_path):
    runs = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        r = fit(_cfg(data_dir, str(tmp_path / name), epochs=2, seed=seed), log=_quiet,
                plots=False)
        runs.append([h["train_loss"] for h in r["history"]])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_imbalance_ratio_subsamples_the_training_set(data_dir, tmp_path):
    r = fit(_cfg(data_dir, str(tmp_path / "lt"), epochs=1, imbalance_ratio=10), log=_quiet,
            plots=False)
    counts = r["train_counts"]
    assert counts[0] / counts[-1] >= 5 and sum(counts) < 384


def test_ctrl_c_saves_and_exits_cleanly(data_dir, tmp_path, capsys):
    out = str(tmp_path / "int")
    rc = main(["train", "--model", "_tiny_model:interrupting", "--data-dir", data_dir,
               "--epochs", "3", "--out", out])
    assert rc == 130
    assert "interrupted" in capsys.readouterr().out
    meta, arrays = read_checkpoint(os.path.join(out, "interrupted.npz"))
    assert meta["interrupted"] and meta["epoch"] == 1
    assert read_checkpoint(out)[0]["epoch"] == 1       # epoch 1 finished (6 batches)


def test_missing_dataset_gives_a_short_message(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CONVCORE_DATA", raising=False)
    rc = main(["train", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "apt-get install dataset-fashion-mnist" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("argv, match", [
    (["--epochs", "0"], "epochs"),
    (["--model", "no_such_model_xyz"], "unknown model"),
    (["--device", "tpu"], "device"),
    (["--imbalance-ratio", "0.5"], "imbalance_ratio"),
])
def test_bad_train_arguments(data_dir, tmp_path, capsys, argv, match):
    rc = main(["train", "--data-dir", data_dir, "--out", str(tmp_path / "o"), "--model", TINY]
              + argv)
    assert rc == 2 and match in capsys.readouterr().err


def test_device_cuda_without_cupy_is_a_clear_error(data_dir, tmp_path, capsys):
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed")
    except ImportError:
        pass
    rc = main(["train", "--model", TINY, "--data-dir", data_dir, "--device", "cuda",
               "--out", str(tmp_path / "o")])
    assert rc == 1 and "CuPy" in capsys.readouterr().err


def test_evaluate_rejects_a_file_that_is_not_a_checkpoint(tmp_path, capsys):
    p = tmp_path / "x.npz"
    p.write_bytes(b"PK\x03\x04 truncated")
    assert main(["evaluate", str(p)]) == 2
    assert "x.npz" in capsys.readouterr().err


def test_default_model_lenet5_trains_through_the_cli(tmp_path, capsys):
    models = pytest.importorskip("convcore.models")
    if not hasattr(models, "lenet5"):
        pytest.skip("convcore.models has no lenet5 yet")
    d = write_idx_dataset(str(tmp_path / "data"), n_train=256, n_test=64, size=28)
    out = str(tmp_path / "run")
    rc = main(["train", "--data-dir", d, "--epochs", "2", "--out", out, "--lr", "0.05"])
    assert rc == 0
    meta, arrays = read_checkpoint(out)
    assert meta["config"]["model"] == "lenet5"
    h = meta["history"]
    assert h[-1]["train_loss"] < h[0]["train_loss"]
    assert os.path.exists(os.path.join(out, "filters.png")) or \
        pytest.importorskip("matplotlib") is None
    assert main(["evaluate", out, "--data-dir", d]) == 0


def test_resume_is_exact_with_batchnorm_and_dropout(tmp_path):
    """cnn_bn has BatchNorm running statistics and a dropout generator: both
    must come back from the checkpoint."""
    models = pytest.importorskip("convcore.models")
    if not hasattr(models, "cnn_bn"):
        pytest.skip("no cnn_bn")
    d = write_idx_dataset(str(tmp_path / "data"), n_train=64, n_test=16, size=28)
    kw = dict(model="cnn_bn", data_dir=d, epochs=2, batch_size=32, lr=0.05,
              optimizer="sgd", nesterov=True, weight_decay=5e-4)
    fit(TrainConfig(out=str(tmp_path / "a"), **kw), log=_quiet, plots=False)
    fit(TrainConfig(out=str(tmp_path / "b"), **kw), stop_after=1, log=_quiet, plots=False)
    fit(TrainConfig(out=str(tmp_path / "b"), **kw), resume=str(tmp_path / "b"), log=_quiet,
        plots=False)
    _, a = read_checkpoint(str(tmp_path / "a"))
    _, b = read_checkpoint(str(tmp_path / "b"))
    assert any("running_mean" in k for k in a)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
