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
