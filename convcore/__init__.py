"""convcore: convolutional neural networks from a hand-written C core.

``import convcore as cc`` gives the functional API (``cc.conv2d``,
``cc.max_pool2d``, ...) and makes the sub-packages available as attributes.
"""
from convcore._version import __version__
from convcore.functional import *  # noqa: F401,F403
from convcore.functional import __all__ as _functional_all
from convcore._info import show_config

__all__ = list(_functional_all) + ["show_config", "__version__"]

from convcore import nn, models  # noqa: E402
from convcore._summary import summary  # noqa: E402
from convcore._gradcheck import gradcheck  # noqa: E402

__all__ += ["nn", "models", "summary", "gradcheck"]

from convcore._tune import tune, save_plan, load_plan  # noqa: E402
from convcore import _plan as _plan_state  # noqa: E402

__all__ += ["tune", "save_plan", "load_plan"]
_plan_state.load_from_environment()   # $CONVCORE_PLAN
