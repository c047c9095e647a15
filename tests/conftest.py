import os

import pytest
import torch

# Two cores: keep each test process on one intra-op thread so timings stay stable and
# concurrent subprocess tests (DDP, sweep workers) do not oversubscribe the machine.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
