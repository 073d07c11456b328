import os

import pytest
import torch
from helpers import assert_one_line


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tests use tiny tensors: on a 2-core machine intra-op threads cost more than they save
    (a 3x2x3x3 conv2d took 35 ms with 2 threads, 4 us with 1)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory):
    """The digits classifier trains once per session into a temporary cache, not the user's ~/.cache."""
    previous = os.environ.get("STIEFEL_GAN_CACHE")
    os.environ["STIEFEL_GAN_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        del os.environ["STIEFEL_GAN_CACHE"]
    else:
        os.environ["STIEFEL_GAN_CACHE"] = previous


@pytest.fixture
def stops_in_one_line(capsys):
    """``stops_in_one_line(argv, *named, status=2)``: ``stiefel-gan <argv>`` exits with ``status`` (2: a
    usage error) and writes one line to stderr, naming each of ``named``; returns that line."""
    from stiefel_gan.commands.cli import main  # here: the layer tests need none of the commands

    def run(argv, *named, status=2):
        capsys.readouterr()  # what came before (another run's lines) is not this command's
        exit_status = main(list(argv))
        err = capsys.readouterr().err
        assert exit_status == status, err
        return assert_one_line(err.strip(), *named)

    return run
