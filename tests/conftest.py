import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("GENBITS_TEST_THREADS", "2")))


def pytest_collection_modifyitems(config, items):
    for item in items:
        item.add_marker(pytest.mark.filterwarnings("ignore::DeprecationWarning"))
