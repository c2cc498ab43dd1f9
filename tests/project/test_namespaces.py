"""What ``import convcore as cc`` offers: the sub-packages as attributes, and
every public module's ``dir()`` and ``__all__`` limited to what is meant."""
import importlib
import subprocess
import sys
import types

import pytest

import convcore as cc

PUBLIC_MODULES = ["convcore", "convcore.functional", "convcore.nn", "convcore.models",
                  "convcore.optim", "convcore.losses", "convcore.data", "convcore.train",
                  "convcore.distributed", "convcore.cli", "convcore.nn.layers",
                  "convcore.nn.blocks", "convcore.nn.module", "convcore.nn.common",
                  "convcore.data.datasets", "convcore.data.loader"]


@pytest.mark.parametrize("name", ["optim", "losses", "data", "train", "distributed", "nn",
                                  "models"])
def test_subpackages_are_attributes_after_import_convcore(name):
    # in a fresh interpreter, so no earlier test has imported them
    code = (f"import convcore as cc; m = cc.{name}; import convcore.{name} as ref; "
            f"assert m is ref, m; print(type(m).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "module"


def test_lazy_subpackages_are_not_imported_by_import_convcore():
    # (convcore.losses is small and comes with nn, for nn.CrossEntropyLoss)
    code = ("import sys, convcore; print(sorted(m for m in ('convcore.optim', "
            "'convcore.data', 'convcore.train', 'convcore.distributed') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_unknown_attribute_still_raises_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'optimm'"):
        cc.optimm  # noqa: B018


def test_typical_torch_style_use_works():
    import numpy as np
    model = cc.nn.Sequential(cc.nn.Linear(4, 3, rng=0))
    opt = cc.optim.SGD(model.parameters(), lr=0.1)
    crit = cc.nn.CrossEntropyLoss()
    x, y = np.ones((2, 4), np.float32), np.array([0, 2])
    crit(model(x), y)
    model.backward(crit.backward())
    opt.step()
    assert callable(cc.data.load_dataset)


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_every_public_module_has_an_all_that_resolves(name):
    mod = importlib.import_module(name)
    assert isinstance(getattr(mod, "__all__", None), list), f"{name} has no __all__"
    assert len(set(mod.__all__)) == len(mod.__all__), "duplicates in __all__"
    for attr in mod.__all__:
        assert hasattr(mod, attr), f"{name}.__all__ names {attr!r}, which is missing"
    # no helper imported from elsewhere is advertised
    for attr in mod.__all__:
        v = getattr(mod, attr)
        if isinstance(v, types.ModuleType):
            assert v.__name__.startswith("convcore."), (name, attr)
        elif hasattr(v, "__module__") and callable(v):
            assert (v.__module__ or "").startswith("convcore"), (name, attr, v.__module__)


@pytest.mark.parametrize("name", ["convcore", "convcore.nn", "convcore.models",
                                  "convcore.data", "convcore.optim", "convcore.losses",
                                  "convcore.functional"])
def test_dir_shows_only_the_public_names(name):
    mod = importlib.import_module(name)
    shown = set(dir(mod))
    assert shown == set(mod.__all__)
    for helper in ("OrderedDict", "as_int", "as_rng", "annotations", "np", "_common"):
        assert helper not in shown


def test_dir_of_models_lists_models_not_layers():
    shown = dir(cc.models)
    assert "resnet18" in shown and "lenet5" in shown
    assert not {"Conv2d", "ReLU", "Sequential", "OrderedDict", "as_int"} & set(shown)
