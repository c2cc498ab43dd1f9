"""summary() reproduces the notes' tables; the summary CLI prints it."""
import numpy as np
import pytest

import convcore as cc
from convcore import models
from convcore.cli import main

# The notes' VGG-16 table: (layer, output H x W x C, weights without biases).
VGG16_TABLE = [
    ("CONV3-64", (224, 224, 64), 1_728), ("CONV3-64", (224, 224, 64), 36_864),
    ("POOL2", (112, 112, 64), 0),
    ("CONV3-128", (112, 112, 128), 73_728), ("CONV3-128", (112, 112, 128), 147_456),
    ("POOL2", (56, 56, 128), 0),
    ("CONV3-256", (56, 56, 256), 294_912), ("CONV3-256", (56, 56, 256), 589_824),
    ("CONV3-256", (56, 56, 256), 589_824), ("POOL2", (28, 28, 256), 0),
    ("CONV3-512", (28, 28, 512), 1_179_648), ("CONV3-512", (28, 28, 512), 2_359_296),
    ("CONV3-512", (28, 28, 512), 2_359_296), ("POOL2", (14, 14, 512), 0),
    ("CONV3-512", (14, 14, 512), 2_359_296), ("CONV3-512", (14, 14, 512), 2_359_296),
    ("CONV3-512", (14, 14, 512), 2_359_296), ("POOL2", (7, 7, 512), 0),
    ("FC", (4096,), 102_760_448), ("FC", (4096,), 16_777_216), ("FC", (1000,), 4_096_000),
]
# The notes' "memory" column, as printed (K = 1e3 or 2**10 rounded, M = 1e6).
VGG16_MEMORY = ["3.2M", "3.2M", "800K", "1.6M", "1.6M", "400K", "800K", "800K", "800K",
                "200K", "400K", "400K", "400K", "100K", "100K", "100K", "100K", "25K",
                "4096", "4096", "1000"]


def _vgg16_rows():
    s = cc.summary(models.vgg16(rng=0), (3, 224, 224))
    return s, [r for r in s.rows if r["type"] in ("Conv2d", "MaxPool2d", "Linear")]


def _short(n):
    """Two significant figures with K/M, as the notes print memory."""
    if n < 10_000:
        return str(n)
    sig = float(f"{n:.2g}")
    return f"{sig / 1e6:g}M" if sig >= 1e6 else f"{sig / 1e3:g}K"


def test_summary_reproduces_the_notes_vgg16_table():
    s, rows = _vgg16_rows()
    assert s.rows[0]["type"] == "Input" and s.rows[0]["activations"] == 224 * 224 * 3
    assert len(rows) == len(VGG16_TABLE)
    for r, (label, hwc, weights), mem in zip(rows, VGG16_TABLE, VGG16_MEMORY):
        shape = r["output_shape"][1:]
        chw = shape if len(shape) == 1 else (shape[1], shape[2], shape[0])
        assert chw == hwc, label
        assert r["weights"] == weights, label
        assert r["activations"] == int(np.prod(hwc))
        assert r["activation_bytes"] == 4 * r["activations"]
        assert _short(r["activations"]) == mem, (label, r["activations"])
    assert rows[0]["activations"] == 3_211_264 and rows[0]["weights"] == 1_728
    assert rows[-3]["weights"] == 7 * 7 * 512 * 4096 == 102_760_448
    assert s.total_params == 138_357_544


def test_most_memory_in_conv_layers_most_parameters_in_fc_layers():
    s, _ = _vgg16_rows()
    act, par = s.by_type("activations"), s.by_type("params")
    # over the layers the notes list (CONV, POOL, FC)
    listed = act["Conv2d"] + act["MaxPool2d"] + act["Linear"]
    assert act["Conv2d"] > 0.85 * listed
    assert act["Conv2d"] > 100 * act["Linear"]
    assert par["Linear"] > 0.85 * s.total_params
    # the single largest layer of each kind
    top_act = max((r for r in s.rows if r["type"] != "Input"), key=lambda r: r["activations"])
    top_par = max(s.rows, key=lambda r: r["params"])
    assert top_act["type"] in ("Conv2d", "ReLU") and top_par["type"] == "Linear"


@pytest.mark.parametrize("config,millions", [("A", 133), ("A-LRN", 133), ("B", 133),
                                             ("C", 134), ("D", 138), ("E", 144)])
def test_summary_reproduces_the_configuration_table(config, millions):
    m = models.vgg(config, rng=0)
    s = cc.summary(m, (3, 224, 224))
    assert round(s.total_params / 1e6) == millions
    assert s.total_params == m.num_parameters() == sum(r["params"] for r in s.rows)
    assert s.output_shape == (1, 1000)


def test_summary_reproduces_the_notes_alexnet_shapes():
    s = cc.summary(models.alexnet(rng=0), (3, 227, 227))
    got = [r["output_shape"][1:] for r in s.rows
           if r["type"] in ("Conv2d", "MaxPool2d", "LocalResponseNorm", "Linear")]
    hwc = [(55, 55, 96), (27, 27, 96), (27, 27, 96), (27, 27, 256), (13, 13, 256),
           (13, 13, 256), (13, 13, 384), (13, 13, 384), (13, 13, 256), (6, 6, 256)]
    assert got[:10] == [(c, h, w) for h, w, c in hwc]
    assert got[10:] == [(4096,), (4096,), (1000,)]


def test_summary_macs_and_shapes_match_running_the_model():
    m = models.resnet18(num_classes=10, rng=0)
    s = cc.summary(m, (2, 3, 32, 32))
    y = m(np.zeros((2, 3, 32, 32), np.float32))
    assert s.output_shape == y.shape
    conv1 = s.rows[1]
    assert conv1["name"] == "conv1" and conv1["output_shape"] == (2, 64, 16, 16)
    assert conv1["macs"] == 2 * 64 * 16 * 16 * 3 * 7 * 7
    fc = s.rows[-1]
    assert fc["name"] == "fc" and fc["macs"] == 2 * 10 * 512
    assert s.total_params == m.num_parameters()
    assert any(r["name"] == "layer2.0.downsample.0" for r in s.rows)


def test_summary_covers_googlenet_and_lenet():
    s = cc.summary(models.googlenet(rng=0), (3, 224, 224))
    assert s.output_shape == (1, 1000) and s.total_params == 6_998_552
    rows = {r["name"]: r for r in s.rows}
    assert rows["stem.inception3a.concat"]["output_shape"] == (1, 256, 28, 28)
    assert rows["head.inception5b.concat"]["output_shape"] == (1, 1024, 7, 7)
    s = cc.summary(models.lenet5(rng=0), (1, 28, 28))
    assert s.total_params == 61_706 and s.output_shape == (1, 10)


def test_summary_table_prints_rows_and_totals():
    s, _ = _vgg16_rows()
    text = str(s)
    assert "features.0" in text and "3,211,264" in text and "138,357,544" in text
    assert text.splitlines()[-1].startswith("total")
    d = s.to_dict()
    assert d["total_params"] == 138_357_544 and len(d["rows"]) == len(s.rows)


def test_summary_cli_prints_the_vgg16_table(capsys):
    assert main(["summary", "vgg16"]) == 0
    out = capsys.readouterr().out
    assert "classifier.0" in out and "102,764,544" in out and "138,357,544" in out


def test_summary_cli_custom_input_and_bad_model(capsys):
    assert main(["summary", "resnet18", "--input", "1,28,28", "--num-classes", "10"]) == 0
    assert "1x28x28" in capsys.readouterr().out
    assert main(["summary", "nosuchnet"]) == 2
    assert "unknown model" in capsys.readouterr().err
