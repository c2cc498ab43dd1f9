import os

import numpy as np
import pytest


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
