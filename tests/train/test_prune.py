"""convcore.prune: magnitude pruning, channel pruning, masks through
fine-tuning, and ``convcore prune``."""
import json
import os

import numpy as np
import pytest

import convcore as cc
from convcore import models
from convcore.cli import main
from convcore.prune import (Masks, count_nonzero, fine_tune, magnitude_prune, prune_channels,
                            resize_to_state, sparsity)
from _synthetic import write_idx_dataset


def _weights(net):
    return {n: m.weight.data.copy() for n, m in net.named_modules()
            if isinstance(m, (cc.nn.Conv2d, cc.nn.Linear))}


def test_global_magnitude_pruning_removes_the_smallest_weights():
    net = models.lenet5(rng=0)
    before = _weights(net)
    masks = magnitude_prune(net, 0.9)
    allw = np.concatenate([w.ravel() for w in before.values()])
    k = round(0.9 * allw.size)
    after = _weights(net)
    zeroed = np.concatenate([(a == 0).ravel() for a in after.values()])
    assert zeroed.sum() == k
    mags = np.abs(allw)
    assert mags[zeroed].max() <= mags[~zeroed].min()
    # kept weights are untouched, biases are not pruned
    for n in before:
        keep = masks[n]
        np.testing.assert_array_equal(after[n][keep], before[n][keep])
        assert getattr(dict(net.named_modules())[n].bias.data, "size") > 0
    assert np.count_nonzero(net.fc3.bias.data) == 10
    s = sparsity(net)
    assert s["total"] == pytest.approx(k / allw.size)
    # global: the big FC layer loses more than the first convolution
    assert s["fc1"] > s["conv1"]
    assert masks.sparsity() == pytest.approx(0.9, abs=1e-4)


def test_per_layer_pruning_takes_the_fraction_of_every_layer():
    net = models.lenet5(rng=1)
    before = _weights(net)
    magnitude_prune(net, 0.5, scope="layer")
    for n, w in before.items():
        a = dict(net.named_modules())[n].weight.data
        z = a == 0
        assert z.sum() == round(0.5 * w.size), n
        assert np.abs(w[z]).max() <= np.abs(w[~z]).min()


@pytest.mark.parametrize("kw,err,match", [
    (dict(amount=1.0), ValueError, "amount must be in \\[0, 1\\)"),
    (dict(amount=-0.1), ValueError, "amount"), (dict(amount="a"), TypeError, "float"),
    (dict(amount=0.5, scope="net"), ValueError, "'global' or 'layer'"),
    (dict(amount=0.5, layers=["nope"]), ValueError, "nope")])
def test_magnitude_prune_bad_arguments(kw, err, match):
    with pytest.raises(err, match=match):
        magnitude_prune(models.lenet5(rng=0), **kw)


def test_masks_survive_fine_tuning(tmp_path):
    rng = np.random.default_rng(0)
    net = models.lenet5(rng=0)
    masks = magnitude_prune(net, 0.8, scope="layer")
    pruned = {n: ~masks[n] for n in masks}
    x = rng.integers(0, 255, (64, 1, 28, 28)).astype(np.uint8)
    y = rng.integers(0, 10, 64)
    from convcore.data import BatchIterator
    it = BatchIterator(x, y, 16, seed=0)
    start = _weights(net)
    hist = fine_tune(net, it, 2, lr=0.05, masks=masks, weight_decay=1e-3, log=lambda m: None)
    assert len(hist) == 2
    end = _weights(net)
    for n in masks:
        assert (end[n][pruned[n]] == 0).all()
        assert not np.array_equal(end[n][~pruned[n]], start[n][~pruned[n]])
    # without the masks the zeros would move
    net2 = models.lenet5(rng=0)
    magnitude_prune(net2, 0.8, scope="layer")
    fine_tune(net2, it, 1, lr=0.05, log=lambda m: None)
    assert sparsity(net2)["total"] < 0.5


def _randomise_bn(net, rng):
    for m in net.modules():
        if isinstance(m, cc.nn.BatchNorm2d):
            C = m.num_features
            m.weight.data[...] = rng.uniform(0.2, 2.0, C)
            m.bias.data[...] = rng.standard_normal(C) * 0.1
            m.running_mean[...] = rng.standard_normal(C) * 0.1
            m.running_var[...] = rng.uniform(0.5, 2.0, C)


@pytest.mark.parametrize("build,shape", [
    (lambda: models.cnn_bn(rng=0), (1, 28, 28)), (lambda: models.lenet5(rng=0), (1, 28, 28)),
    (lambda: models.cnn_bn(in_channels=3, widths=(8, 12, 16, 20), rng=0), (3, 32, 32))])
def test_channel_pruning_equals_zeroing_the_consumers_of_removed_channels(build, shape):
    rng = np.random.default_rng(3)
    net = build().astype(np.float64)
    _randomise_bn(net, rng)
    net.eval()
    x = rng.standard_normal((2,) + shape)
    ref_net = build().astype(np.float64)
    ref_net.load_state_dict(net.state_dict())
    ref_net.eval()
    done = prune_channels(net, 0.5)
    assert done and all(after == before - int(0.5 * before) for before, after in done.values())
    # the reference: the unpruned network with the removed channels' consumers zeroed
    leaves = [(n, m) for n, m in ref_net.named_modules() if not m._modules]
    orig = _weights(ref_net)
    for i, (name, conv) in enumerate(leaves):
        if name not in done:
            continue
        pruned_conv = dict(net.named_modules())[name]
        keep_in = slice(None)
        if pruned_conv.in_channels != conv.in_channels:   # its inputs were pruned too
            keep_in = [c for c in range(conv.in_channels) if orig[name][:, c].any()
                       and not (conv.weight.data[:, c] == 0).all()]
        kept = [c for c in range(conv.out_channels)
                if any(np.array_equal(orig[name][c][keep_in], w)
                       for w in pruned_conv.weight.data)]
        assert len(kept) == done[name][1]
        removed = sorted(set(range(conv.out_channels)) - set(kept))
        nxt = next(m for _, m in leaves[i + 1:] if isinstance(m, (cc.nn.Conv2d, cc.nn.Linear)))
        if isinstance(nxt, cc.nn.Conv2d):
            nxt.weight.data[:, removed] = 0
        else:
            per = nxt.in_features // conv.out_channels
            for c in removed:
                nxt.weight.data[:, c * per:(c + 1) * per] = 0
    np.testing.assert_allclose(net(x), ref_net(x), rtol=1e-10, atol=1e-10)
    assert net.num_parameters() < ref_net.num_parameters()
    assert cc.summary(net, shape).total_macs < cc.summary(ref_net, shape).total_macs


def test_channel_pruning_removes_the_weakest_filters_and_reloads():
    net = models.cnn_bn(rng=0)
    w = net.conv1.weight.data.copy()
    net.bn1.weight.data[...] = 1.0
    score = np.abs(w).reshape(16, -1).sum(1)
    prune_channels(net, 0.25, layers=["conv1"])
    keep = np.sort(np.argsort(score, kind="stable")[4:])
    np.testing.assert_array_equal(net.conv1.weight.data, w[keep])
    assert net.conv2.weight.shape == (32, 12, 3, 3) and net.bn1.running_mean.shape == (12,)
    fresh = models.cnn_bn(rng=5)
    resize_to_state(fresh, net.state_dict())
    fresh.load_state_dict(net.state_dict())
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    net.eval(), fresh.eval()
    np.testing.assert_array_equal(fresh(x), net(x))
    with pytest.raises(ValueError, match="branches"):
        prune_channels(models.resnet20(rng=0), 0.5)
    with pytest.raises(ValueError, match="no Conv2d named"):
        prune_channels(models.cnn_bn(rng=0), 0.5, layers=["fc"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("prune")
    d = write_idx_dataset(str(base / "data"), n_train=512, n_test=128, size=28)
    runs = {}
    for model in ("lenet5", "cnn_bn"):
        o = str(base / model)
        assert main(["train", "--model", model, "--data-dir", d, "--epochs", "2", "--out", o,
                     "--lr", "0.05", "--threads", "1", "--batch-size", "32"]) == 0
        runs[model] = o
    return d, runs


def test_prune_cli_magnitude(trained, tmp_path, capsys):
    d, runs = trained
    out = str(tmp_path / "p")
    capsys.readouterr()
    assert main(["prune", runs["lenet5"], "--amount", "0.9", "--epochs", "1", "--data-dir", d,
                 "--out", out]) == 0
    text = capsys.readouterr().out
    assert "90% of the weights zeroed (global magnitude)" in text and "MACs" in text
    with open(os.path.join(out, "prune.json")) as f:
        res = json.load(f)
    b, a = res["before"], res["after"]
    assert b["params"] == a["params"] == 61_706
    weights = 61_706 - (6 + 16 + 120 + 84 + 10)
    assert b["nonzero_params"] - a["nonzero_params"] == pytest.approx(0.9 * weights, abs=2)
    assert a["nonzero_macs"] < 0.5 * b["nonzero_macs"]
    assert main(["evaluate", out, "--data-dir", d, "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["accuracy"] == pytest.approx(a["test_acc"])
    assert a["test_acc"] > 0.5


def test_prune_cli_structured_makes_the_network_smaller(trained, tmp_path, capsys):
    d, runs = trained
    out = str(tmp_path / "s")
    assert main(["prune", runs["cnn_bn"], "--structured", "--amount", "0.5", "--epochs", "1",
                 "--data-dir", d, "--out", out]) == 0
    with open(os.path.join(out, "prune.json")) as f:
        res = json.load(f)
    assert res["layers"] == {"conv1": [16, 8], "conv2": [32, 16], "conv3": [64, 32]}
    assert res["after"]["params"] == 8834 < res["before"]["params"] == 29_178
    assert res["after"]["macs"] < 0.4 * res["before"]["macs"]
    capsys.readouterr()
    assert main(["evaluate", out, "--data-dir", d, "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["accuracy"] == pytest.approx(res["after"]["test_acc"])
    # an ensemble of the pruned and the original run loads both
    assert main(["evaluate", out, runs["cnn_bn"], "--data-dir", d, "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["members"]) == 2


def test_prune_cli_errors(trained, capsys):
    d, runs = trained
    assert main(["prune", runs["lenet5"], "--amount", "1.5", "--data-dir", d]) == 2
    assert "amount must be in [0, 1)" in capsys.readouterr().err
    assert main(["prune", "/nonexistent/run", "--data-dir", d]) == 2


def test_count_nonzero_and_masks_errors():
    net = models.lenet5(rng=0)
    assert count_nonzero(net) == (61_706, 61_706)
    m = Masks({"conv1": np.ones((2, 2), bool)})
    with pytest.raises(ValueError, match="shape"):
        m.apply(net)
    with pytest.raises(ValueError, match="no layer"):
        Masks({"x": np.ones(1, bool)}).apply(net)
