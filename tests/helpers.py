"""What many test files need, as plain functions: the overrides of a tiny real run, the one-line error
checks, the axes of a study's Hydra sweep, random orthonormal matrices. (Fixtures, which hold state,
are in conftest.py.)"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest
import torch
from torch import Tensor

#: The smallest model of each architecture, on data it takes: the standard CNN on the 16-px digits, the
#: ResNet on 32-px digits, the MLP on 64 points of the 2-D ring.
TINY_MODELS = {
    "standard_cnn": ["data=digits", "model=standard_cnn", "model.g_width=4", "model.d_width=4", "model.z_dim=8"],
    "resnet": ["data=digits", "data.image_size=32", "model=resnet", "model.g_width=8", "model.d_width=8",
               "model.z_dim=8"],
    "mlp": ["data=ring8", "data.n_samples=64", "model=mlp", "model.g_width=8", "model.d_width=8"],
}


def tiny_run(steps: int, *overrides: str) -> list[str]:
    """Overrides for a real training run of ``steps`` generator updates that costs next to nothing:
    batches of 8, the losses logged every step, samples and the checkpoint every ``steps``, sample
    quality at the end only (100 samples, no Geometry Score), no diagnostics, no progress bar, no W&B.
    ``overrides`` come last, so they win; the model is the config's default unless they name one of
    :data:`TINY_MODELS`."""
    return [f"train.steps={steps}", "train.batch_size=8", "train.log_every=1", f"train.sample_every={steps}",
            f"train.checkpoint_every={steps}", "train.n_grid_samples=4", "train.progress=false", "wandb.mode=disabled",
            "metrics.every=0", "metrics.n_samples=100", "metrics.geometry_score=false", "metrics.diagnostics_every=0",
            *overrides]


def assert_one_line(text: str, *named: str) -> str:
    """``text`` is one non-empty line (no line break at all: a command's stderr is passed stripped), and
    it names each of ``named`` (the bad value, what is allowed); returns it."""
    assert text and "\n" not in text and len(text.splitlines()) == 1, text
    for fragment in named:
        assert fragment in text, text
    return text


def raises_one_line(call: Callable[[], object], *named: str, match: str | None = None,
                    error: type[Exception] = ValueError) -> str:
    """``call()`` raises ``error`` (or a subclass) with a one-line message naming each of ``named``
    (and matching the regular expression ``match``); returns the message."""
    with pytest.raises(error, match=match) as raised:
        call()
    return assert_one_line(str(raised.value), *named)


def hydra_settings(*overrides: str) -> dict:
    """The ``hydra`` node of ``configs/config.yaml`` composed with ``overrides`` (the launcher, the
    sweeper's params), as plain containers, interpolations unresolved."""
    from hydra import compose  # here, not above: the layer tests use this module too, and need no Hydra
    from omegaconf import OmegaConf

    from stiefel_gan.config.compose import _initialize

    with _initialize():
        return OmegaConf.to_container(compose("config", overrides=list(overrides), return_hydra_config=True).hydra)


def sweeper_axes(study: str) -> dict[str, list[str]]:
    """The axes Hydra sweeps for ``experiment=<study>``: ``{key: [value, ...]}``, strings in order."""
    params = hydra_settings(f"experiment={study}")["sweeper"]["params"]
    return {str(key): [value.strip() for value in str(values).split(",")] for key, values in params.items()}


def orthonormal(*shape: int, generator: torch.Generator, dtype: torch.dtype = torch.float64) -> Tensor:
    """A random ``rows x cols`` matrix (leading dimensions: a batch of them) with orthonormal columns,
    or orthonormal rows when it is wide: the Q factor of a Gaussian's QR (Haar-distributed), drawn from
    ``generator`` as ``randn(..., max(rows, cols), min(rows, cols))``."""
    *batch, rows, cols = shape
    q, _ = torch.linalg.qr(torch.randn(*batch, max(rows, cols), min(rows, cols), generator=generator, dtype=dtype))
    return q if rows >= cols else q.mT


def dense_frechet_distance(features_a, features_b) -> float:
    """The squared Fréchet distance of two ``(N, D)`` feature sets' Gaussians, independently of
    torch-fidelity: float64 numpy statistics and ``Tr (C_a C_b)^{1/2} = Tr (C_a^{1/2} C_b C_a^{1/2})^{1/2}``
    from symmetric eigendecompositions only. Eigenvalues within a symmetric solver's backward error
    (``D * eps * max |lambda|``, of either sign) are taken as 0: dead feature units give exact zeros,
    whose round-off roots (~1e-7 of the scale each) would otherwise add up."""
    a, b = (np.asarray(f.detach().cpu() if torch.is_tensor(f) else f, dtype=np.float64) for f in (features_a, features_b))
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))

    def without_round_off(values):
        return np.where(values > len(values) * np.finfo(np.float64).eps * np.abs(values).max(), values, 0.0)

    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(without_round_off(values))) @ vectors.T
    trace_root = np.sum(np.sqrt(without_round_off(np.linalg.eigvalsh(root_a @ cov_b @ root_a))))
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)
