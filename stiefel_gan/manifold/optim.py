"""Optimizers with explicit parameter groups: Stiefel factors, spectrum parameters, everything else."""

from __future__ import annotations

from typing import Iterable, Mapping

import geoopt
import torch
from torch import nn

from .fused import StiefelAdam, StiefelSGD
from .spectra import Spectrum

#: ``radam`` / ``rsgd``: the fused optimizers of :mod:`stiefel_gan.manifold.fused`; ``geoopt_radam`` /
#: ``geoopt_rsgd``: geoopt's own classes (same iterates, kept for comparison); ``adam``: torch's Adam.
OPTIMIZERS = ("radam", "rsgd", "adam", "geoopt_radam", "geoopt_rsgd")
GROUPS = ("stiefel", "spectrum", "other")


def parameter_groups(model_or_params: nn.Module | Iterable[torch.nn.Parameter]) -> dict[str, list]:
    """Split parameters into ``stiefel`` (geoopt ManifoldParameters), ``spectrum`` (parameters of
    :class:`Spectrum` modules) and ``other``. A plain iterable of parameters has no spectrum group."""
    if isinstance(model_or_params, nn.Module):
        spectrum_ids = {id(p) for m in model_or_params.modules() if isinstance(m, Spectrum) for p in m.parameters()}
        params = list(model_or_params.parameters())
    else:
        spectrum_ids = set()
        params = list(model_or_params)
    groups = {name: [] for name in GROUPS}
    for p in params:
        if not p.requires_grad:
            continue
        if isinstance(p, geoopt.ManifoldParameter):
            groups["stiefel"].append(p)
        elif id(p) in spectrum_ids:
            groups["spectrum"].append(p)
        else:
            groups["other"].append(p)
    return groups


def make_optimizer(model_or_params, name: str = "radam", lr: float = 2e-4,
                   group_lr: Mapping[str, float] | None = None, **kwargs) -> torch.optim.Optimizer:
    """Build an optimizer over explicit parameter groups.

    Parameters
    ----------
    model_or_params : nn.Module or iterable of parameters
    name : {"radam", "rsgd", "adam", "geoopt_radam", "geoopt_rsgd"}
        ``radam``: :class:`~stiefel_gan.manifold.StiefelAdam`; ``rsgd``:
        :class:`~stiefel_gan.manifold.StiefelSGD` (fused, the same iterates as geoopt's
        :class:`~geoopt.optim.RiemannianAdam` / :class:`~geoopt.optim.RiemannianSGD`, which
        ``geoopt_radam`` / ``geoopt_rsgd`` build); all act as plain Adam / SGD on Euclidean parameters.
        ``adam``: :class:`torch.optim.Adam`, for models without Stiefel factors (the SN baselines).
    lr : float
        Learning rate of every group unless ``group_lr`` overrides it.
    group_lr : mapping, optional
        Per-group learning rates, keys among ``"stiefel"``, ``"spectrum"``, ``"other"``.
    **kwargs
        Passed to the optimizer (``betas``, ``momentum``, ``weight_decay``, ``stabilize``,
        ``second_moment="matrix" | "entry"`` for ``radam``...).

    Note [one second moment per matrix]
        geoopt's RiemannianAdam keeps a single second-moment scalar per manifold matrix (the
        squared Riemannian gradient norm), not one per entry: adaptivity only across matrices
        (Becigneul & Ganea 2019). This is why ``rsgd`` is offered beside it, and ``radam`` with
        ``second_moment="entry"`` (projected Adam, one second moment per entry).

    Each group carries a ``"name"`` key, so logs can report per-group learning rates.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer {name!r} is not allowed: use one of {OPTIMIZERS}")
    group_lr = dict(group_lr or {})
    unknown = set(group_lr) - set(GROUPS)
    if unknown:
        raise ValueError(f"group_lr keys {sorted(unknown)} are not allowed: use any of {GROUPS}")
    groups = parameter_groups(model_or_params)
    if name == "adam" and groups["stiefel"]:
        raise ValueError("optimizer 'adam' is not allowed for a model with Stiefel factors: it would leave "
                         "the manifold; use 'radam' or 'rsgd'")
    param_groups = [{"params": params, "name": group, "lr": group_lr.get(group, lr)}
                    for group, params in groups.items() if params]
    classes = {"radam": StiefelAdam, "rsgd": StiefelSGD, "adam": torch.optim.Adam,
               "geoopt_radam": geoopt.optim.RiemannianAdam, "geoopt_rsgd": geoopt.optim.RiemannianSGD}
    return classes[name](param_groups, lr=lr, **kwargs)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state_dict: dict) -> None:
    """``optimizer.load_state_dict(state_dict)``, keeping geoopt's integer step counters.

    The fused optimizers convert on their own (:meth:`StiefelAdam.load_state_dict`, which also reads
    geoopt's state dicts); this restores the integers for geoopt's classes.

    Note [integer steps]
        torch's ``Optimizer.load_state_dict`` turns every ``"step"`` entry into a float32 tensor.
        geoopt's optimizers keep it as a Python int, and their bias correction ``1 - beta ** step``
        then rounds differently: a resumed run would drift from an uninterrupted one by ~1e-8 per
        step. Restoring the ints makes a resumed run continue bit for bit.
    """
    optimizer.load_state_dict(state_dict)
    if isinstance(optimizer, geoopt.optim.mixin.OptimMixin):
        for state in optimizer.state.values():
            if torch.is_tensor(state.get("step")):
                state["step"] = int(state["step"].item())
