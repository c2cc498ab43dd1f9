"""The ResNet paper's CIFAR networks (option A and B shortcuts) and the CIFAR
stem of ResNet-18/34/50."""
import json
import os

import numpy as np
import pytest

import convcore as cc
from convcore import models, nn
from convcore.cli import main
from _synthetic import write_cifar_binary

# The paper's CIFAR-10 table (Table 6): parameters in millions, option A.
PAPER = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7}


@pytest.mark.parametrize("depth", sorted(PAPER))
def test_parameter_counts_match_the_papers_cifar10_table(depth):
    net = getattr(models, f"resnet{depth}")(rng=0)
    n = net.num_parameters()
    assert float(f"{n / 1e6:.2g}") == PAPER[depth]
    # counted by hand: stem conv + BN, per block two 3x3 convs + two BNs, FC
    blocks = (depth - 2) // 6
    expect = 3 * 9 * 16 + 2 * 16 + 10 * 64 + 10
    cin = 16
    for c in (16, 32, 64):
        for _ in range(blocks):
            expect += 9 * cin * c + 9 * c * c + 4 * c
            cin = c
    assert n == expect
    # option B: two 1x1 projections with batch norm where the width doubles
    b = getattr(models, f"resnet{depth}")(shortcut="B", rng=0).num_parameters()
    assert b - n == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)


def test_structure_and_shapes_on_32x32():
    net = models.resnet20(rng=0)
    s = cc.summary(net, (3, 32, 32))
    shapes = {r["name"]: r["output_shape"] for r in s.rows}
    assert shapes["conv1"] == (1, 16, 32, 32)
    assert shapes["layer1.2.add_relu"] == (1, 16, 32, 32)
    assert shapes["layer2.0.add_relu"] == (1, 32, 16, 16)
    assert shapes["layer3.2.add_relu"] == (1, 64, 8, 8)
    assert s.output_shape == (1, 10)
    assert sum(r["type"] == "Conv2d" for r in s.rows) + 1 == 20   # + the FC layer
    assert isinstance(net.layer2[0].downsample, models.PadShortcut)
    assert net.layer1[0].downsample is None
    assert not list(net.layer2[0].downsample.parameters())
    y = net(np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32))
    assert y.shape == (2, 10) and np.isfinite(y).all()


@pytest.mark.parametrize("bad,match", [
    (dict(depth=21), "6n \\+ 2"), (dict(depth=20, shortcut="C"), "'A' or 'B'"),
    (dict(depth=4), "depth")])
def test_bad_arguments(bad, match):
    with pytest.raises(ValueError, match=match):
        models.resnet_cifar(**bad)


def test_pad_shortcut_matches_torch_forward_and_backward():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    for cin, cout, stride, h, w in [(16, 32, 2, 8, 8), (32, 64, 2, 7, 9), (4, 9, 1, 5, 5),
                                    (3, 3, 3, 10, 4)]:
        x = rng.standard_normal((2, cin, h, w))
        g = rng.standard_normal((2, cout, -(-h // stride), -(-w // stride)))
        m = models.PadShortcut(cin, cout, stride)
        y = m(x)
        gx = m.backward(g)
        tx = torch.tensor(x, requires_grad=True)
        front = (cout - cin) // 2
        ty = torch.nn.functional.pad(tx[:, :, ::stride, ::stride],
                                     (0, 0, 0, 0, front, cout - cin - front))
        ty.backward(torch.tensor(g))
        assert y.shape == tuple(ty.shape) == m.output_shape(x.shape)
        np.testing.assert_array_equal(y, ty.detach().numpy())
        np.testing.assert_array_equal(gx, tx.grad.numpy())
        # adjoint: <S x, g> = <x, S^T g>
        assert np.isclose((y * g).sum(), (x * gx).sum(), rtol=1e-12)


def test_option_a_block_matches_torch_and_central_differences():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(1)
    blk = nn.BasicBlock(4, 8, stride=2, downsample=models.PadShortcut(4, 8, 2), rng=0)
    blk.astype(np.float64)
    for bn in (blk.bn1, blk.bn2):
        bn.weight.data[...] = rng.uniform(0.5, 1.5, bn.num_features)
        bn.bias.data[...] = rng.standard_normal(bn.num_features) * 0.1
    x = rng.standard_normal((3, 4, 7, 7))
    g = rng.standard_normal((3, 8, 4, 4))
    y = blk(x)
    blk.zero_grad()
    gx = blk.backward(g)

    t = {k: torch.tensor(v, requires_grad=True) for k, v in
         (("x", x), ("w1", blk.conv1.weight.data), ("w2", blk.conv2.weight.data),
          ("g1", blk.bn1.weight.data), ("b1", blk.bn1.bias.data),
          ("g2", blk.bn2.weight.data), ("b2", blk.bn2.bias.data))}
    h = F.conv2d(t["x"], t["w1"], stride=2, padding=1)
    h = F.relu(F.batch_norm(h, None, None, t["g1"], t["b1"], training=True, eps=1e-5))
    h = F.batch_norm(F.conv2d(h, t["w2"], padding=1), None, None, t["g2"], t["b2"],
                     training=True, eps=1e-5)
    s = F.pad(t["x"][:, :, ::2, ::2], (0, 0, 0, 0, 2, 2))
    ty = F.relu(h + s)
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gx, t["x"].grad.numpy(), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(blk.conv1.weight.grad, t["w1"].grad.numpy(), rtol=1e-9,
                               atol=1e-11)
    np.testing.assert_allclose(blk.bn2.bias.grad, t["b2"].grad.numpy(), rtol=1e-9, atol=1e-11)
    assert cc.gradcheck(blk, x)


def test_cifar_stem_for_resnet18_34_50():
    torch = pytest.importorskip("torch")
    net = models.resnet18(num_classes=10, cifar_stem=True, rng=0)
    # the widely quoted size of ResNet-18 for CIFAR-10
    assert net.num_parameters() == 11_173_962
    s = cc.summary(net, (3, 32, 32))
    shapes = {r["name"]: r["output_shape"] for r in s.rows}
    assert shapes["conv1"] == (1, 64, 32, 32) and "maxpool" not in shapes
    assert shapes["layer4.1.add_relu"] == (1, 512, 4, 4)
    plain = cc.summary(models.resnet18(num_classes=10, rng=0), (3, 32, 32))
    assert {r["name"]: r for r in plain.rows}["layer4.1.add_relu"]["output_shape"] == \
        (1, 512, 1, 1)
    assert sorted(net.state_dict()) == sorted(models.resnet18(num_classes=10,
                                                              rng=0).state_dict())
    for fn in (models.resnet34, models.resnet50):
        m = fn(num_classes=10, cifar_stem=True, rng=0)
        assert m.conv1.weight.shape[2:] == (3, 3) and "maxpool" not in m._modules
    # the stem computes what torch computes
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    y = net.conv1(x)
    ref = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(net.conv1.weight.data),
                                     padding=1).numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_train_resnet20_on_cifar_format_files(tmp_path, capsys):
    d = tmp_path / "cifar"
    d.mkdir()
    for i in range(1, 6):
        write_cifar_binary(str(d / f"data_batch_{i}.bin"), 8, seed=i)
    write_cifar_binary(str(d / "test_batch.bin"), 16, seed=9)
    out = str(tmp_path / "run")
    rc = main(["train", "--model", "resnet20", "--dataset", "cifar10", "--data-dir", str(d),
               "--epochs", "1", "--batch-size", "20", "--out", out, "--threads", "1"])
    assert rc == 0
    with open(os.path.join(out, "metrics.json")) as f:
        m = json.load(f)
    assert m["config"]["model"] == "resnet20" and len(m["history"]) == 1
    assert np.isfinite(m["history"][0]["train_loss"])
    capsys.readouterr()
    assert main(["evaluate", out, "--data-dir", str(d), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert np.isclose(res["accuracy"], m["history"][0]["test_acc"])
    assert np.asarray(res["confusion"]).sum() == 16


def test_summary_cli_uses_32x32_for_the_cifar_resnets(capsys):
    assert main(["summary", "resnet20"]) == 0
    out = capsys.readouterr().out
    assert "3x32x32" in out and "269,722" in out
    assert main(["summary", "resnet110", "--listing"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == "[10] FC110: 10 neurons (class scores)"    # 109 convolutions + 1 FC
