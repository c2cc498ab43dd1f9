"""convcore: convolutional neural networks from a hand-written C core.

``import convcore as cc`` gives the functional API (``cc.conv2d``,
``cc.max_pool2d``, ...) and makes the sub-packages available as attributes:
``cc.nn``, ``cc.models``, ``cc.summary`` at once; ``cc.optim``, ``cc.losses``,
``cc.data``, ``cc.train`` and ``cc.distributed`` on first use (imported then,
so that ``import convcore`` stays quick).
"""
from convcore._version import __version__
import convcore._core  # noqa: F401  (an unbuilt source tree fails here, saying what to do)
from convcore.functional import *  # noqa: F401,F403
from convcore.functional import __all__ as _functional_all
from convcore._info import show_config

__all__ = list(_functional_all) + ["show_config", "__version__"]

from convcore import nn, models  # noqa: E402
from convcore._summary import summary  # noqa: E402
from convcore._gradcheck import gradcheck  # noqa: E402

__all__ += ["nn", "models", "summary", "gradcheck"]

from convcore._grad import no_grad, is_grad_enabled  # noqa: E402

__all__ += ["no_grad", "is_grad_enabled"]

from convcore._tune import tune, save_plan, load_plan  # noqa: E402
from convcore import _plan as _plan_state  # noqa: E402

__all__ += ["tune", "save_plan", "load_plan"]
_plan_state.load_from_environment()   # $CONVCORE_PLAN
from convcore._config import _memory_cache_from_environment  # noqa: E402
_memory_cache_from_environment()      # $CONVCORE_MEMORY_CACHE

# Sub-modules imported on first attribute access (PEP 562).
_LAZY = ("optim", "losses", "data", "train", "distributed")
__all__ += list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib
        module = importlib.import_module(f"convcore.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'convcore' has no attribute {name!r}")


def __dir__():
    return sorted(set(__all__))
