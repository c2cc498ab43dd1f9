"""Ensembles of runs (convcore evaluate RUN1 RUN2 ...) and AlexNet's PCA
colour augmentation (--augment pca)."""
import gzip
import json
import os

import numpy as np
import pytest

from convcore import data
from convcore.cli import main
from convcore.ensemble import ensemble_predict, evaluate_ensemble
from convcore.train import TrainConfig, fit, read_checkpoint
from _synthetic import write_cifar_binary, write_idx_dataset

TINY = "_tiny_model:tiny"


def _quiet(_msg):
    pass


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("ens")
    d = write_idx_dataset(str(base / "data"), n_train=256, n_test=96)
    out = []
    for seed in (1, 2, 3):
        o = str(base / f"run{seed}")
        fit(TrainConfig(model=TINY, data_dir=d, epochs=1, lr=0.01, seed=seed, out=o,
                        threads=1), log=_quiet, plots=False)
        out.append(o)
    return d, out


def _reference_probabilities(run, data_dir):
    """The tiny model's forward written with PyTorch from the checkpoint."""
    torch = pytest.importorskip("torch")
    meta, arrays = read_checkpoint(run)
    with gzip.open(os.path.join(data_dir, "t10k-images-idx3-ubyte.gz")) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 8, 8)
    x = (x / 255.0 - meta["mean"][0]) / meta["std"][0]
    w = {k[6:]: torch.tensor(v.astype(np.float64)) for k, v in arrays.items()
         if k.startswith("model/")}
    h = torch.relu(torch.nn.functional.conv2d(torch.tensor(x), w["conv.weight"],
                                              w["conv.bias"], padding=1))
    logits = h.reshape(len(x), -1) @ w["fc.weight"].T + w["fc.bias"]
    return torch.softmax(logits, 1).numpy()


def _labels(data_dir):
    with gzip.open(os.path.join(data_dir, "t10k-labels-idx1-ubyte.gz")) as f:
        return np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)


def test_ensemble_averages_probabilities_not_votes():
    # two members prefer class 0 weakly, one prefers class 1 strongly:
    # the majority vote says 0, the mean probability says 1
    a = np.array([[0.55, 0.45]])
    c = np.array([[0.05, 0.95]])
    mean, pred = ensemble_predict([a, a, c])
    np.testing.assert_allclose(mean, [[(0.55 * 2 + 0.05) / 3, (0.45 * 2 + 0.95) / 3]])
    assert pred.tolist() == [1]
    with pytest.raises(ValueError, match="at least one member"):
        ensemble_predict([])
    with pytest.raises(ValueError, match="one shape"):
        ensemble_predict([np.ones((2, 3)), np.ones((2, 4))])


def test_ensemble_matches_an_independent_reference(runs):
    d, paths = runs
    with pytest.raises(ValueError, match="custom model"):
        evaluate_ensemble(paths, data_dir=d)          # a file never imports code by itself
    res = evaluate_ensemble(paths, data_dir=d, model="_tiny_model:tiny")
    y = _labels(d)
    probs = [_reference_probabilities(p, d) for p in paths]
    for m, p, path in zip(res["members"], probs, paths):
        assert m["path"] == path
        assert m["accuracy"] == pytest.approx((p.argmax(1) == y).mean(), abs=1 / len(y))
    mean = sum(probs) / len(probs)
    assert res["accuracy"] == pytest.approx((mean.argmax(1) == y).mean(), abs=1 / len(y))
    nll = -np.log(mean[np.arange(len(y)), y]).mean()
    assert res["loss"] == pytest.approx(nll, rel=1e-4)
    assert np.asarray(res["confusion"]).sum() == len(y) == res["n_test"]


def test_evaluate_cli_with_several_runs(runs, capsys):
    d, paths = runs
    single = []
    m = ["--model", TINY]             # the runs' custom model, named by the caller
    for p in paths:
        assert main(["evaluate", p, "--data-dir", d, "--json", *m]) == 0
        single.append(json.loads(capsys.readouterr().out)["accuracy"])
    assert main(["evaluate", *paths, "--data-dir", d, "--json"]) == 2   # not imported by itself
    assert "custom model" in capsys.readouterr().err
    assert main(["evaluate", *paths, "--data-dir", d, "--json", *m]) == 0
    res = json.loads(capsys.readouterr().out)
    assert [m["accuracy"] for m in res["members"]] == pytest.approx(single)
    assert main(["evaluate", *paths, "--data-dir", d, *m]) == 0
    text = capsys.readouterr().out
    assert "ensemble of 3 (mean probability)" in text and paths[0] in text
    assert f"{res['accuracy'] * 100:.2f}%" in text
    # a run with itself is the run
    assert main(["evaluate", paths[0], paths[0], "--data-dir", d, "--json", *m]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(single[0])


def test_ensemble_of_different_datasets_is_refused(runs, tmp_path, capsys):
    d, paths = runs
    cif = tmp_path / "cifar"
    cif.mkdir()
    for i in range(1, 6):
        write_cifar_binary(str(cif / f"data_batch_{i}.bin"), 4, seed=i)
    write_cifar_binary(str(cif / "test_batch.bin"), 8, seed=9)
    o = str(tmp_path / "c")
    fit(TrainConfig(model=TINY, dataset="cifar10", data_dir=str(cif), epochs=1, out=o,
                    threads=1), log=_quiet, plots=False)
    assert main(["evaluate", paths[0], o, "--data-dir", d, "--model", TINY]) == 2
    err = capsys.readouterr().err
    assert "share one dataset" in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------ PCA lighting

def _colour_images(n=400, seed=0):
    """Images whose pixel colours are mean + V diag(sqrt(lam)) z: known
    principal components V and variances lam (in [0, 1] units)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    lam = np.array([4e-3, 1e-3, 2.5e-4])
    z = rng.standard_normal((n * 8 * 8, 3))
    pix = 0.5 + (z * np.sqrt(lam)) @ q.T
    x = pix.reshape(n, 8, 8, 3).transpose(0, 3, 1, 2)
    return x, q, lam


def test_pca_basis_recovers_known_components():
    x, q, lam = _colour_images()
    val, vec = data.pca_lighting_basis(x)
    np.testing.assert_allclose(val, lam, rtol=0.05)
    for i in range(3):   # each eigenvector up to sign
        assert abs(vec[:, i] @ q[:, i]) > 0.995
    # uint8 images: the same basis in [0, 1] units
    u8 = np.clip(np.round(x * 255), 0, 255).astype(np.uint8)
    val8, vec8 = data.pca_lighting_basis(u8)
    np.testing.assert_allclose(val8, lam, rtol=0.08)
    assert abs(vec8[:, 0] @ q[:, 0]) > 0.99


def test_pca_lighting_shifts_along_the_components_with_the_papers_variance():
    _, q, lam = _colour_images()
    light = data.PCALighting(lam, q, alpha_std=0.1)
    rng = np.random.default_rng(5)
    x = np.zeros((20000, 3, 2, 2))
    y = light(x, rng)
    # one shift per image, the same at every pixel
    assert np.array_equal(y, np.broadcast_to(y[:, :, :1, :1], y.shape))
    d = y[:, :, 0, 0]
    # coordinates along each component: alpha_i * lam_i, alpha ~ N(0, 0.1)
    coords = d @ q
    np.testing.assert_allclose(coords.std(axis=0), 0.1 * lam, rtol=0.03)
    c = np.corrcoef(coords, rowvar=False)
    assert np.abs(c[np.triu_indices(3, 1)]).max() < 0.05
    np.testing.assert_allclose(np.cov(d, rowvar=False), q @ np.diag((0.1 * lam) ** 2) @ q.T,
                               atol=0.05 * (0.1 * lam[0]) ** 2)
    with pytest.raises(ValueError, match="eigvec must have shape"):
        data.PCALighting(lam, np.eye(2))
    with pytest.raises(ValueError, match="3, H, W"):
        light(np.zeros((1, 1, 2, 2)), rng)


def test_batch_iterator_adds_the_shift_after_normalisation():
    x, q, lam = _colour_images(n=16)
    u8 = np.clip(np.round(x * 255), 0, 255).astype(np.uint8)
    mean, std = data.channel_stats(u8)
    light = data.PCALighting(lam, q)
    plain = data.BatchIterator(u8, np.zeros(16, int), 8, shuffle=False, mean=mean, std=std,
                               dtype=np.float64)
    lit = data.BatchIterator(u8, np.zeros(16, int), 8, shuffle=False, mean=mean, std=std,
                             dtype=np.float64, lighting=light, seed=3)
    for (a, _), (b, _) in zip(plain.epoch(0), lit.epoch(0)):
        shift = (b - a) * std[None, :, None, None]          # back to [0, 1] units
        per_image = shift[:, :, 0, 0]
        np.testing.assert_allclose(shift, np.broadcast_to(per_image[:, :, None, None],
                                                          shift.shape), atol=1e-12)
        assert np.abs(per_image).max() > 0
        # the shift lies in the span of the components, scaled by eigval
        coords = per_image @ q / lam
        assert np.abs(coords).max() < 0.6     # |alpha| < 6 sigma
    # reproducible per epoch, different across epochs
    e0 = [b for b, _ in lit.epoch(0)]
    assert all(np.array_equal(u, v) for u, v in zip(e0, [b for b, _ in lit.epoch(0)]))
    assert not np.array_equal(e0[0], next(lit.epoch(1))[0])


def test_augment_pca_on_the_command_line(tmp_path, capsys):
    cif = tmp_path / "cifar"
    cif.mkdir()
    for i in range(1, 6):
        write_cifar_binary(str(cif / f"data_batch_{i}.bin"), 8, seed=i)
    write_cifar_binary(str(cif / "test_batch.bin"), 8, seed=9)
    o = str(tmp_path / "run")
    assert main(["train", "--model", TINY, "--dataset", "cifar10", "--data-dir", str(cif),
                 "--epochs", "1", "--augment", "pca", "--out", o, "--threads", "1"]) == 0
    meta, _ = read_checkpoint(o)
    assert meta["config"]["augment"] == "pca"
    fm = write_idx_dataset(str(tmp_path / "fm"), n_train=16, n_test=8)
    assert main(["train", "--model", TINY, "--data-dir", fm, "--epochs", "1",
                 "--augment", "pca", "--out", str(tmp_path / "r2")]) == 2
    assert "colour (3-channel)" in capsys.readouterr().err
    crop, light = data.training_augmentation("pca", np.zeros((2, 3, 4, 4), np.uint8) + 7)
    assert crop and isinstance(light, data.PCALighting)
    assert data.training_augmentation(None, np.zeros((1, 1, 2, 2))) == (False, None)
    with pytest.raises(ValueError, match="'crop' or 'pca'"):
        data.training_augmentation("zca", np.zeros((1, 3, 2, 2)))
