import os

import numpy as np
import pytest


def _child_pythons_import_this_convcore():
    """Python subprocesses of the tests (crash isolation, CLI runs, MPI ranks)
    must import the convcore under test: the installed one in CI, the
    in-place build in a checkout.  A child started with ``-c`` or ``-m`` from
    the repository root would otherwise find the uncompiled source tree first
    (the working directory leads sys.path), so children get no such entry
    (PYTHONSAFEPATH, Python >= 3.11) and the tested package's root instead."""
    import convcore
    root = os.path.dirname(os.path.dirname(os.path.abspath(convcore.__file__)))
    rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    os.environ["PYTHONPATH"] = os.pathsep.join([root] + rest)
    os.environ["PYTHONSAFEPATH"] = "1"


_child_pythons_import_this_convcore()


@pytest.fixture
def no_work(monkeypatch):
    """Fails the test if the backend is asked to allocate or compute anything
    (the edge-case tests of the conv and pool families: validation comes first)."""
    from convcore.backends import cpu as cpu_backend

    def refuse(*args, **kwargs):
        raise AssertionError("the backend was called before validation finished")
    for name in ("empty", "zeros", "conv2d_forward", "conv2d_backward", "im2col", "col2im"):
        monkeypatch.setattr(cpu_backend, name, refuse)


@pytest.fixture
def set_wide_vectors():
    """set(mode): AUTO as on a CPU with (1) or without (0) AVX-512, whatever
    this machine has (cc_wide_vectors; cached plans dropped); the CPU's own
    answer again after the test."""
    from convcore._core import _conv
    from convcore.backends import cpu

    def set_mode(mode):
        _conv.set_wide_vectors(mode)
        cpu._plans.clear()
    yield set_mode
    set_mode(-1)


@pytest.fixture
def wide_vectors(set_wide_vectors):
    """AUTO as on a CPU with AVX-512: for the tests of where AUTO runs the
    16-value vector kernels (it does not without AVX-512)."""
    set_wide_vectors(1)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def pytest_report_header(config):
    import convcore
    return (f"convcore {convcore.__version__} from {os.path.dirname(convcore.__file__)}, "
            f"threads={convcore.get_num_threads()}")


# Property tests: a fixed, modest budget; derandomized on CI so every run
# tries the same inputs (a failure there reproduces locally with CI=1).
try:
    from hypothesis import HealthCheck, settings
except ImportError:  # hypothesis is in the test extra; without it those tests skip
    pass
else:
    _common = dict(deadline=None, print_blob=True,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    settings.register_profile("ci", derandomize=True, max_examples=60, database=None,
                              **_common)
    settings.register_profile("dev", max_examples=60, **_common)
    settings.register_profile("thorough", max_examples=1000, **_common)
    settings.load_profile(os.environ.get("CONVCORE_HYPOTHESIS_PROFILE")
                          or ("ci" if os.environ.get("CI") else "dev"))
