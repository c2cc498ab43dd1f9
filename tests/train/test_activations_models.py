"""The activation choice of LeNet-5 and the small CNNs (``activation=``,
``convcore train --activation``)."""
import json
import os
from collections import OrderedDict

import numpy as np
import pytest

from convcore import models, nn
from convcore.cli import main
from convcore.train import TrainConfig, build_model, evaluate_checkpoint
from _synthetic import write_idx_dataset


@pytest.mark.parametrize("act,cls", [("relu", nn.ReLU), ("tanh", nn.Tanh),
                                     ("sigmoid", nn.Sigmoid), ("leaky_relu", nn.LeakyReLU)])
@pytest.mark.parametrize("make", [models.lenet5, models.cnn_bn, models.cnn_bn_wide])
def test_activation_replaces_every_relu(make, act, cls):
    net = make(rng=0, activation=act)
    kinds = [type(m) for m in net.modules()]
    assert kinds.count(cls) >= 3
    if act != "relu":
        assert nn.ReLU not in kinds
    # parameters do not depend on the activation: the same seed, the same weights
    ref = make(rng=0)
    assert sorted(net.state_dict()) == sorted(ref.state_dict())
    for k, v in ref.state_dict().items():
        np.testing.assert_array_equal(net.state_dict()[k], v)


@pytest.mark.parametrize("act", ["tanh", "sigmoid", "leaky_relu"])
def test_lenet5_with_activation_matches_torch(act, rng):
    torch = pytest.importorskip("torch")
    tnn = torch.nn
    make = {"tanh": tnn.Tanh, "sigmoid": tnn.Sigmoid, "leaky_relu": tnn.LeakyReLU}[act]
    ours = models.lenet5(rng=0, activation=act).astype(np.float64)
    theirs = tnn.Sequential(OrderedDict([
        ("conv1", tnn.Conv2d(1, 6, 5, padding=2)), ("a1", make()), ("pool1", tnn.MaxPool2d(2)),
        ("conv2", tnn.Conv2d(6, 16, 5)), ("a2", make()), ("pool2", tnn.MaxPool2d(2)),
        ("flatten", tnn.Flatten()), ("fc1", tnn.Linear(400, 120)), ("a3", make()),
        ("fc2", tnn.Linear(120, 84)), ("a4", make()), ("fc3", tnn.Linear(84, 10))])).double()
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    x = rng.standard_normal((3, 1, 28, 28))
    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt)
    y = ours(x)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    g = rng.standard_normal(y.shape)
    yt.backward(torch.tensor(g))
    np.testing.assert_allclose(ours.backward(g), xt.grad.numpy(), rtol=1e-9, atol=1e-12)
    for n, p in theirs.named_parameters():
        np.testing.assert_allclose(dict(ours.named_parameters())[n].grad, p.grad.numpy(),
                                   rtol=1e-9, atol=1e-12, err_msg=n)


def test_bad_activation_choices_raise():
    with pytest.raises(ValueError, match="activation must be one of"):
        models.lenet5(activation="gelu")
    with pytest.raises(ValueError, match="no activation choice"):
        build_model("vgg11", 3, 10, 32, 0, activation="tanh")
    with pytest.raises(SystemExit) as e:
        main(["train", "--activation", "gelu"])
    assert e.value.code == 2


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_idx_dataset(str(tmp_path_factory.mktemp("fmnist")), n_train=128, n_test=64,
                             size=28)


def test_train_and_evaluate_keep_the_activation(data_dir, tmp_path):
    out = str(tmp_path / "run")
    rc = main(["train", "--model", "lenet5", "--activation", "tanh", "--data-dir", data_dir,
               "--epochs", "1", "--out", out, "--limit-train", "128", "--limit-test", "64"])
    assert rc == 0
    with open(os.path.join(out, "metrics.json")) as f:
        assert json.load(f)["config"]["activation"] == "tanh"
    # evaluation rebuilds the same network: its accuracy is the run's last one
    res = evaluate_checkpoint(out, data_dir=data_dir)
    with open(os.path.join(out, "metrics.json")) as f:
        last = json.load(f)["history"][-1]
    assert np.isclose(res["accuracy"], last["test_acc"])
    assert TrainConfig().activation is None
