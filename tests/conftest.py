import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tests use tiny tensors: on a 2-core machine intra-op threads cost more than they save
    (a 3x2x3x3 conv2d took 35 ms with 2 threads, 4 us with 1)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
