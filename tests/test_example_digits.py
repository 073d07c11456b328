"""The worked example outside GANs (examples/digits_classifier.py): it trains, and the Lipschitz upper
bound it reports is the product of the exact operator norms (explicit dense operator matrices) and
bounds the Jacobian of the trained network."""

import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

from stiefel_gan.manifold import stiefel_layers

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "digits_classifier.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("digits_classifier", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def results(example):
    return example.run(epochs=3)


def dense_operator_norms(model: nn.Module) -> list[float]:
    """Largest singular value of each linear layer's explicit matrix (the layer applied to every basis
    input at the size it sees in the network, bias removed)."""
    norms, x = [], torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    model = model.double().eval()
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                n = x[0].numel()
                basis = torch.eye(n, dtype=torch.float64).reshape(n, *x.shape[1:])
                matrix = (layer(basis) - layer(torch.zeros_like(basis[:1]))).reshape(n, -1)
                norms.append(float(torch.linalg.matrix_norm(matrix, ord=2)))
            x = layer(x)
    return norms


def test_every_variant_learns_and_reports_the_exact_lipschitz_upper_bound(example, results):
    assert list(results) == ["plain", "sn", "stiefel"]
    for variant, r in results.items():
        assert r["accuracy"] > 0.5, variant  # chance is 0.1
        exact = dense_operator_norms(r["model"])
        assert list(r["layer_norms"].values()) == pytest.approx(exact, rel=1e-3), variant
        assert r["lipschitz_upper_bound"] == pytest.approx(torch.tensor(exact).prod().item(), rel=4e-3)
    # the stiefel model's layers keep their spectrum exactly: largest reshaped singular value 1
    for _, layer in stiefel_layers(results["stiefel"]["model"]):
        blocks = layer.weight.detach().reshape(layer.parametrization.groups, -1, layer.parametrization.cols)
        assert torch.linalg.svdvals(blocks).amax().item() == pytest.approx(1.0, abs=1e-5)
    assert results["stiefel"]["lipschitz_upper_bound"] < results["plain"]["lipschitz_upper_bound"]


def test_the_bound_holds_for_the_networks_jacobian(example, results):
    _, (test_x, _) = example.split_digits(0)
    for variant, r in results.items():
        model = r["model"].double().eval()
        for image in test_x[:5].double():
            jacobian = torch.autograd.functional.jacobian(lambda x: model(x[None])[0], image).reshape(10, -1)
            assert torch.linalg.matrix_norm(jacobian, ord=2) <= r["lipschitz_upper_bound"] * (1 + 1e-6), variant


def test_format_table_has_one_row_per_variant(example, results):
    lines = example.format_table(results).splitlines()
    assert len(lines) == 2 + len(results) and all(line.startswith(f"| {v} |") for v, line in zip(results, lines[2:]))
