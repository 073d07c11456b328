r"""Fused Riemannian Adam and SGD for Euclidean-metric Stiefel factors (and plain parameters).

:class:`StiefelAdam` and :class:`StiefelSGD` take the same parameters as geoopt's
:class:`~geoopt.optim.RiemannianAdam` / :class:`~geoopt.optim.RiemannianSGD` (geoopt
``ManifoldParameter``\ s on a Euclidean-metric Stiefel manifold, e.g. :class:`QRStiefel`,
:class:`CayleyStiefel` or geoopt's ``EuclideanStiefel``, and plain parameters) and, with
``second_moment="matrix"``, compute the same iterates: the Riemannian gradient
:math:`g = \Pi_X(G) = G - X\,\mathrm{sym}(X^T G)`, the moments, the retraction, and momentum
transport by projection. They are faster because:

Note [deferred transport]
    geoopt transports the momentum to the new point at the end of each step,
    :math:`m \leftarrow \Pi_Y(m)`, and projects the next gradient at the start of the next one. The
    projection is linear, so :math:`\beta_1 \Pi_X(m) + (1-\beta_1)\Pi_X(G) = \Pi_X(\beta_1 m +
    (1-\beta_1) G)`: the optimizer keeps the *untransported* momentum and does both projections in
    one ``X sym(.)`` product. Per ``n x p`` factor and Adam step that is five ``O(n p^2)`` products
    (:math:`X^T G`, :math:`X^T m`, :math:`X\,\mathrm{sym}(\cdot)`, the Gram matrix, the triangular
    solve) instead of six, and no separate transport call. :meth:`state_dict` writes the transported
    momentum under geoopt's key (so geoopt's optimizers can load it) and the stored one beside it
    (so a resumed run continues bit for bit).

Note [batched factors]
    Factors of one shape, dtype, device and retraction (and the same step count) are stacked into
    one ``B x n x p`` batch: one ``bmm`` / batched Cholesky per product instead of one call per
    factor. A ``ManifoldParameter`` with leading batch dimensions (``g x n x p``, e.g. the factors
    of a grouped convolution) is ``g`` matrices of that batch; the second moment is one scalar per
    matrix, as geoopt's ``component_inner`` gives for the Stiefel inner product (it reduces the last
    two dimensions).

Note [one host synchronization per step]
    The Cholesky QR retraction (:func:`~stiefel_gan.manifold.retractions.q_factor`) falls back to
    Householder QR when a Gram matrix is far from the identity; reading that test is a host
    synchronization on CUDA. Here the Gram matrices of every batch are formed first and the test is
    read once per step for all of them, not once per factor.

Euclidean parameters (SN weights, biases, spectrum parameters) are updated by torch's own Adam
(``torch.optim.adam.adam``, its foreach path where torch picks it) in :class:`StiefelAdam`, and by
foreach SGD with geoopt's momentum convention in :class:`StiefelSGD`.

``second_moment="entry"`` (:class:`StiefelAdam` only) is projected Adam: Adam's moments are kept per
entry of the *Euclidean* gradient, Adam's direction
:math:`D = \hat m / (\sqrt{\hat v} + \epsilon)` is projected to the tangent space and retracted,
:math:`X \leftarrow R_X(-\eta\,\Pi_X(D))`. Every entry then moves by about ``lr``, as in Adam on an SN
weight, instead of the whole factor moving by about ``lr`` in Frobenius norm (Note [one second moment
per matrix] in :func:`~stiefel_gan.manifold.make_optimizer`); it needs four ``O(n p^2)`` products.
"""

from __future__ import annotations

from typing import Iterable

import torch
from geoopt import ManifoldParameter, ManifoldTensor
from geoopt.manifolds import EuclideanStiefel
from torch import Tensor
from torch.optim.adam import adam as torch_adam

from .retractions import CHOLESKY_QR_MAX_GRAM_DISTANCE, QRStiefel, cholesky_q_factor, gram_distance, q_factor

SECOND_MOMENTS = ("matrix", "entry")

#: Keys under which :meth:`state_dict` stores the momentum as the optimizer keeps it (Note [deferred transport]).
UNTRANSPORTED = {"exp_avg": "exp_avg_untransported", "momentum_buffer": "momentum_buffer_untransported"}


def _sym(a: Tensor) -> Tensor:
    return 0.5 * (a + a.transpose(-1, -2))


def is_manifold_parameter(p: Tensor) -> bool:
    return isinstance(p, (ManifoldParameter, ManifoldTensor))


def _check_stiefel(p: Tensor) -> None:
    if not isinstance(p.manifold, EuclideanStiefel):
        raise ValueError(f"a parameter on {p.manifold!r} is not allowed: the fused optimizers take "
                         "Euclidean-metric Stiefel factors (QRStiefel, CayleyStiefel, geoopt EuclideanStiefel) "
                         "and plain parameters; use geoopt's optimizers for other manifolds")
    if p.dim() < 2:
        raise ValueError(f"a Stiefel parameter of shape {tuple(p.shape)} is not allowed: it needs ... x n x p")


class _Batch:
    """Same-shape Stiefel factors of one step, stacked (Note [batched factors])."""

    def __init__(self, params: list[Tensor]):
        self.params = params
        n, p = params[0].shape[-2:]
        self.counts = [q.reshape(-1, n, p).shape[0] for q in params]
        self.manifold = params[0].manifold
        self.x = self.stack(params)

    def stack(self, tensors: Iterable[Tensor]) -> Tensor:
        """``B x . x .``: the matrices of per-parameter tensors (``... x n x p`` or ``... x 1 x 1``) in one batch."""
        views = [t.reshape(-1, *t.shape[-2:]) for t in tensors]
        return views[0] if len(views) == 1 else torch.cat(views)

    def write(self, targets: Iterable[Tensor], stacked: Tensor) -> None:
        """Copy each slice of ``stacked`` into the matching tensor of ``targets`` (same shapes as the params)."""
        for target, part in zip(targets, stacked.split(self.counts)):
            target.copy_(part.reshape(target.shape))

    def grads(self, weight_decay: float) -> Tensor:
        """``G + weight_decay X``, stacked (read only: for one parameter it is a view of its ``.grad``)."""
        grads = self.stack(p.grad for p in self.params)
        return torch.add(grads, self.x, alpha=weight_decay) if weight_decay else grads


def _retract_all(batches: list[_Batch], directions: list[Tensor]) -> list[Tensor]:
    r"""``R_X(direction)`` for every batch, with one host synchronization in all (Note [one host synchronization per step]).

    :class:`QRStiefel` batches use Cholesky QR where every Gram matrix passes the test of Note
    [Cholesky QR] (else :func:`q_factor`, which chooses per batch); other manifolds use their own
    ``retr`` (Cayley, geoopt's Householder QR).
    """
    qr = [i for i, b in enumerate(batches) if type(b.manifold) is QRStiefel]
    out: list[Tensor | None] = [None] * len(batches)
    points = {i: batches[i].x + directions[i] for i in qr}
    grams = {i: points[i].transpose(-1, -2) @ points[i] for i in qr}
    if qr:
        worst = torch.stack([gram_distance(grams[i]).amax() for i in qr]).amax()
        if bool(worst <= CHOLESKY_QR_MAX_GRAM_DISTANCE):  # the one read; NaN fails too
            for i in qr:
                out[i] = cholesky_q_factor(points[i], grams[i])
        else:
            for i in qr:
                out[i] = q_factor(points[i])
    for i, batch in enumerate(batches):
        if out[i] is None:
            out[i] = batch.manifold.retr(batch.x, directions[i])
    return out


def _bucket(params: list[Tensor], key) -> list[list[Tensor]]:
    buckets: dict = {}
    for p in params:
        buckets.setdefault(key(p), []).append(p)
    return list(buckets.values())


class _FusedStiefelOptimizer(torch.optim.Optimizer):
    """State-dict conversion and stabilization shared by :class:`StiefelAdam` and :class:`StiefelSGD`."""

    _momentum_key: str

    def __init__(self, params, defaults: dict):
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if is_manifold_parameter(p):
                    _check_stiefel(p)

    def _transports_momentum(self, group: dict) -> bool:
        raise NotImplementedError

    def _split_params(self, group: dict) -> list[Tensor]:
        """Update the group's plain parameters that have a gradient (:meth:`_euclidean_step`) and return
        its Stiefel factors that have one."""
        params = [p for p in group["params"] if p.grad is not None]
        for p in params:
            if p.grad.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
        self._euclidean_step(group, [p for p in params if not is_manifold_parameter(p)])
        return [p for p in params if is_manifold_parameter(p)]

    def state_dict(self) -> dict:
        """torch's state dict with the momentum of each Stiefel factor transported to the factor's
        current point under geoopt's key, and the stored (untransported) one under
        ``<key>_untransported`` (Note [deferred transport])."""
        saved = super().state_dict()
        params = [p for group in self.param_groups for p in group["params"]]
        index = {id(p): i for i, p in enumerate(params)}
        for group in self.param_groups:
            if not self._transports_momentum(group):
                continue
            for p in group["params"]:
                i = index[id(p)]
                if not is_manifold_parameter(p) or i not in saved["state"] \
                        or self._momentum_key not in saved["state"][i]:
                    continue
                state = dict(saved["state"][i])  # the packed state holds the live dicts: copy
                stored = state[self._momentum_key]
                with torch.no_grad():
                    state[self._momentum_key] = p.manifold.proju(p, stored)
                state[UNTRANSPORTED[self._momentum_key]] = stored
                saved["state"][i] = state
        return saved

    def _check_loadable(self, state_dict: dict) -> None:
        """Hook for a one-line error before anything is loaded."""

    def load_state_dict(self, state_dict: dict) -> None:
        """Load this optimizer's state dicts and geoopt's (RiemannianAdam / RiemannianSGD) alike."""
        self._check_loadable(state_dict)
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)  # a geoopt checkpoint lacks this optimizer's own group keys
            for p in group["params"]:
                state = self.state.get(p)
                if state:
                    self._convert_loaded_state(group, p, state)

    def _convert_loaded_state(self, group: dict, p: Tensor, state: dict) -> None:
        untransported = UNTRANSPORTED[self._momentum_key]
        if untransported in state:
            state[self._momentum_key] = state.pop(untransported)

    @torch.no_grad()
    def stabilize_group(self, group: dict) -> None:
        """geoopt's stabilization: every Stiefel factor back onto the manifold (``projx``, the polar
        factor), its momentum projected to the tangent space there."""
        for p in group["params"]:
            if not is_manifold_parameter(p):
                continue
            state = self.state.get(p, {})
            momentum = state.get(self._momentum_key)
            if momentum is not None and self._transports_momentum(group):
                # geoopt's momentum is already transported to p: do it here before p moves
                momentum.copy_(p.manifold.proju(p, momentum))
            p.copy_(p.manifold.projx(p))
            if momentum is not None and self._transports_momentum(group):
                momentum.copy_(p.manifold.proju(p, momentum))


class StiefelAdam(_FusedStiefelOptimizer):
    r"""Riemannian Adam for Euclidean-metric Stiefel factors, fused (module docstring).

    With ``second_moment="matrix"`` it computes geoopt's :class:`~geoopt.optim.RiemannianAdam`
    iterates (transport by projection, ``amsgrad``, L2 ``weight_decay``, ``stabilize``): for each
    factor, with :math:`G' = G + \text{wd}\,X`,

    .. math::

        m \leftarrow \beta_1 m + (1-\beta_1)\,\Pi_X(G'),\quad
        v \leftarrow \beta_2 v + (1-\beta_2)\,\lVert \Pi_X(G') \rVert_F^2,\quad
        X \leftarrow R_X\Big(-\eta\,\frac{m / (1-\beta_1^t)}{\sqrt{v / (1-\beta_2^t)} + \epsilon}\Big)

    (``v`` one scalar per matrix). ``second_moment="entry"``: projected Adam (module docstring).

    Parameters
    ----------
    params : iterable of parameters or dicts
        Stiefel ``ManifoldParameter``\ s (any leading batch dimensions) and plain parameters.
    lr, betas, eps, weight_decay, amsgrad
        As :class:`torch.optim.Adam` (``weight_decay`` is the L2 penalty, as geoopt's).
    second_moment : {"matrix", "entry"}
    stabilize : int, optional
        Every ``stabilize`` steps, project the factors back onto the manifold (geoopt's option).
    foreach : bool, optional
        torch Adam's ``foreach`` for the plain parameters (default: torch's choice).
    """

    _momentum_key = "exp_avg"

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, second_moment: str = "matrix",
                 stabilize: int | None = None, foreach: bool | None = None):
        if second_moment not in SECOND_MOMENTS:
            raise ValueError(f"second_moment={second_moment!r} is not allowed: use one of {', '.join(SECOND_MOMENTS)}")
        for name, value, ok in (("lr", lr, lr >= 0), ("eps", eps, eps >= 0), ("weight_decay", weight_decay, weight_decay >= 0),
                                ("betas", betas, all(0 <= b < 1 for b in betas))):
            if not ok:
                raise ValueError(f"{name}={value} is not allowed: use lr, eps, weight_decay >= 0 and betas in [0, 1)")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        second_moment=second_moment, stabilize=stabilize, foreach=foreach)
        super().__init__(params, defaults)

    def _transports_momentum(self, group: dict) -> bool:
        return group["second_moment"] == "matrix"  # "entry" keeps Euclidean moments: nothing to transport

    def _check_loadable(self, state_dict: dict) -> None:
        for group, saved in zip(self.param_groups, state_dict["param_groups"]):
            # a geoopt checkpoint has no "second_moment": its moments are geoopt's, one per matrix
            saved_mode = saved.get("second_moment", "matrix")
            if saved_mode != group["second_moment"]:
                raise ValueError(f"optimizer state with second_moment={saved_mode!r} cannot continue with "
                                 f"second_moment={group['second_moment']!r}: resume with the checkpoint's setting")

    def _convert_loaded_state(self, group: dict, p: Tensor, state: dict) -> None:
        super()._convert_loaded_state(group, p, state)
        if is_manifold_parameter(p):
            state["step"] = int(state["step"])  # a Python int, as geoopt keeps it (Note [integer steps])
            if group["second_moment"] == "matrix":
                # geoopt stores the per-matrix scalar broadcast over the whole n x p: keep one per matrix
                for key in ("exp_avg_sq", "max_exp_avg_sq"):
                    if key in state and state[key].shape[-2:] != (1, 1):
                        state[key] = state[key][..., :1, :1].clone()
        elif not torch.is_tensor(state["step"]):
            state["step"] = torch.tensor(float(state["step"]))  # torch's Adam counts in a tensor

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            stiefel = self._split_params(group)
            for p in stiefel:
                self._init_state(group, p)
                self.state[p]["step"] += 1
            buckets = _bucket(stiefel, lambda p: (type(p.manifold), tuple(p.shape[-2:]), p.dtype, p.device,
                                                  self.state[p]["step"]))
            if group["second_moment"] == "matrix":
                self._matrix_step(group, [_Batch(b) for b in buckets])
            else:
                self._entry_step(group, [_Batch(b) for b in buckets])
            if group["stabilize"] is not None and any(self.state[p]["step"] % group["stabilize"] == 0 for p in stiefel):
                self.stabilize_group(group)
        return loss

    def _init_state(self, group: dict, p: Tensor) -> None:
        state = self.state[p]
        if state:
            return
        state["step"] = 0
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        shape = p.shape[:-2] + (1, 1) if group["second_moment"] == "matrix" else p.shape
        state["exp_avg_sq"] = torch.zeros(shape, dtype=p.dtype, device=p.device)
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = torch.zeros(shape, dtype=p.dtype, device=p.device)

    def _euclidean_step(self, group: dict, params: list[Tensor]) -> None:
        """torch's Adam (L2 weight decay, as geoopt's) on the plain parameters."""
        if not params:
            return
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = torch.tensor(0.0)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if group["amsgrad"]:
                    state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        states = [self.state[p] for p in params]
        beta1, beta2 = group["betas"]
        torch_adam(params, [p.grad for p in params], [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                   [s["max_exp_avg_sq"] for s in states] if group["amsgrad"] else [], [s["step"] for s in states],
                   foreach=group["foreach"], amsgrad=group["amsgrad"], beta1=beta1, beta2=beta2, lr=group["lr"],
                   weight_decay=group["weight_decay"], eps=group["eps"], maximize=False)

    def _denominator(self, group: dict, states: list[dict], batch: _Batch, second: Tensor,
                     bias_correction2: float) -> Tensor:
        """``sqrt(v / (1 - beta2^t)) + eps`` (AMSGrad: of the running maximum of ``v``), stacked."""
        if group["amsgrad"]:
            for state in states:
                torch.maximum(state["max_exp_avg_sq"], state["exp_avg_sq"], out=state["max_exp_avg_sq"])
            second = batch.stack(s["max_exp_avg_sq"] for s in states)
        return second.div(bias_correction2).sqrt_().add_(group["eps"])

    def _matrix_step(self, group: dict, batches: list[_Batch]) -> None:
        beta1, beta2 = group["betas"]
        directions, momenta = [], []
        for batch in batches:
            states = [self.state[p] for p in batch.params]
            step = states[0]["step"]
            x, grad = batch.x, batch.grads(group["weight_decay"])
            momentum = batch.stack(s["exp_avg"] for s in states)
            sym_grad = _sym(x.transpose(-1, -2) @ grad)
            # Note [deferred transport]: beta1 Pi_X(m) + (1 - beta1) Pi_X(G') = Pi_X(beta1 m + (1 - beta1) G'),
            # one X sym(.) product for both (the momentum is zero on the first step: no X^T m then)
            sym_momentum = _sym(x.transpose(-1, -2) @ momentum) if step > 1 and beta1 > 0 else torch.zeros_like(sym_grad)
            new_momentum = torch.baddbmm(torch.lerp(grad, momentum, beta1), x,
                                         torch.lerp(sym_grad, sym_momentum, beta1), alpha=-1)
            # Note [norm of the Riemannian gradient]: with X^T X = I, G' splits into the orthogonal parts
            # Pi_X(G') and X sym(X^T G'), the latter of norm ||sym(X^T G')||: Pythagoras gives
            # ||Pi_X(G')||^2 = ||G'||^2 - ||sym(X^T G')||^2 without forming Pi_X(G')
            squared_norm = (grad.square().sum((-2, -1), keepdim=True)
                            - sym_grad.square().sum((-2, -1), keepdim=True)).clamp_min_(0)
            second = batch.stack(s["exp_avg_sq"] for s in states).mul(beta2).add_(squared_norm, alpha=1 - beta2)
            batch.write((s["exp_avg_sq"] for s in states), second)
            denominator = self._denominator(group, states, batch, second, 1 - beta2 ** step)
            scale = denominator.reciprocal_().mul_(-group["lr"] / (1 - beta1 ** step))
            directions.append(new_momentum * scale)
            momenta.append(new_momentum)
        for batch, point, momentum in zip(batches, _retract_all(batches, directions), momenta):
            batch.write(batch.params, point)
            batch.write((self.state[p]["exp_avg"] for p in batch.params), momentum)

    def _entry_step(self, group: dict, batches: list[_Batch]) -> None:
        beta1, beta2 = group["betas"]
        directions = []
        for batch in batches:
            states = [self.state[p] for p in batch.params]
            step = states[0]["step"]
            grads = [p.grad if not group["weight_decay"] else p.grad.add(p, alpha=group["weight_decay"])
                     for p in batch.params]
            exp_avgs, exp_avg_sqs = [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]
            torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)  # m <- beta1 m + (1 - beta1) G', Adam's moments
            torch._foreach_mul_(exp_avg_sqs, beta2)
            torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
            denominator = self._denominator(group, states, batch, batch.stack(exp_avg_sqs), 1 - beta2 ** step)
            adam_direction = batch.stack(exp_avgs).div(denominator).mul_(-group["lr"] / (1 - beta1 ** step))
            x = batch.x
            # projected Adam: the tangent part of Adam's direction, Pi_X(D) = D - X sym(X^T D)
            directions.append(torch.baddbmm(adam_direction, x, _sym(x.transpose(-1, -2) @ adam_direction), alpha=-1))
        for batch, point in zip(batches, _retract_all(batches, directions)):
            batch.write(batch.params, point)


class StiefelSGD(_FusedStiefelOptimizer):
    r"""Riemannian SGD with momentum for Euclidean-metric Stiefel factors, fused (module docstring).

    Computes geoopt's :class:`~geoopt.optim.RiemannianSGD` iterates: with :math:`G' = G + \text{wd}\,X`
    and :math:`g = \Pi_X(G')`, :math:`b \leftarrow \mu b + (1 - \text{dampening}) g`, direction ``b``
    (Nesterov: :math:`g + \mu b`), :math:`X \leftarrow R_X(-\eta\,\text{direction})`, ``b`` transported
    by projection. Like geoopt, the first step starts the buffer from the raw Euclidean gradient ``G``
    (so the first direction is :math:`\mu G + (1-\text{dampening}) g`, not tangent).
    """

    _momentum_key = "momentum_buffer"

    def __init__(self, params, lr: float, momentum: float = 0.0, dampening: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False, stabilize: int | None = None):
        for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
            if value < 0:
                raise ValueError(f"{name}={value} is not allowed: use a value >= 0")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(f"nesterov=True with momentum={momentum}, dampening={dampening} is not allowed: "
                             "Nesterov needs momentum > 0 and dampening = 0")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, stabilize=stabilize)
        super().__init__(params, defaults)

    def _transports_momentum(self, group: dict) -> bool:
        return True

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            group["step"] = group.get("step", 0) + 1  # geoopt counts steps per group (for stabilize)
            stiefel = self._split_params(group)
            fresh = {id(p) for p in stiefel if "momentum_buffer" not in self.state[p]}
            buckets = _bucket(stiefel, lambda p: (type(p.manifold), tuple(p.shape[-2:]), p.dtype, p.device,
                                                  id(p) in fresh))
            self._stiefel_step(group, [_Batch(b) for b in buckets], fresh)
            if group["stabilize"] is not None and group["step"] % group["stabilize"] == 0:
                self.stabilize_group(group)
        return loss

    def _euclidean_step(self, group: dict, params: list[Tensor]) -> None:
        """SGD with geoopt's momentum convention (the buffer starts from the raw gradient), foreach."""
        if not params:
            return
        momentum, lr = group["momentum"], group["lr"]
        grads = [p.grad for p in params]
        if group["weight_decay"]:
            grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
        if momentum > 0:
            for p in params:
                if "momentum_buffer" not in self.state[p]:
                    self.state[p]["momentum_buffer"] = p.grad.clone()
            buffers = [self.state[p]["momentum_buffer"] for p in params]
            torch._foreach_mul_(buffers, momentum)
            torch._foreach_add_(buffers, grads, alpha=1 - group["dampening"])
            grads = torch._foreach_add(grads, buffers, alpha=momentum) if group["nesterov"] else buffers
        torch._foreach_add_(params, grads, alpha=-lr)

    def _stiefel_step(self, group: dict, batches: list[_Batch], fresh: set[int]) -> None:
        momentum, dampening, lr = group["momentum"], group["dampening"], group["lr"]
        directions, buffers = [], []
        for batch in batches:
            x, grad = batch.x, batch.grads(group["weight_decay"])
            sym_grad = _sym(x.transpose(-1, -2) @ grad)
            if momentum == 0:
                directions.append(torch.baddbmm(grad, x, sym_grad, alpha=-1).mul_(-lr))  # -lr Pi_X(G')
                buffers.append(None)
                continue
            if id(batch.params[0]) in fresh:
                # geoopt starts the buffer from the raw gradient and does not project it on the first step
                buffer = batch.stack(p.grad for p in batch.params)
                sym_buffer = torch.zeros_like(sym_grad)
            else:
                buffer = batch.stack(self.state[p]["momentum_buffer"] for p in batch.params)
                sym_buffer = _sym(x.transpose(-1, -2) @ buffer)  # Note [deferred transport]
            # b <- mu b + (1 - dampening) G' - X (mu sym(X^T b) + (1 - dampening) sym(X^T G'))
            combined = (buffer * momentum).add_(grad, alpha=1 - dampening)
            sym_combined = (sym_buffer * momentum).add_(sym_grad, alpha=1 - dampening)
            new_buffer = torch.baddbmm(combined, x, sym_combined, alpha=-1)
            if group["nesterov"]:  # Pi_X(G') + mu b
                direction = torch.baddbmm(torch.add(grad, new_buffer, alpha=momentum), x, sym_grad, alpha=-1)
            else:
                direction = new_buffer
            directions.append(direction * -lr)
            buffers.append(new_buffer)
        for batch, point, buffer in zip(batches, _retract_all(batches, directions), buffers):
            batch.write(batch.params, point)
            if buffer is None:
                continue
            for p in batch.params:
                self.state[p].setdefault("momentum_buffer", torch.empty_like(p))
            batch.write((self.state[p]["momentum_buffer"] for p in batch.params), buffer)

    def _convert_loaded_state(self, group: dict, p: Tensor, state: dict) -> None:
        super()._convert_loaded_state(group, p, state)
        if "step" in group and torch.is_tensor(group["step"]):
            group["step"] = int(group["step"])
