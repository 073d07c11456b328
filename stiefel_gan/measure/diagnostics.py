r"""Spectral and gradient diagnostics of a discriminator, measured on one real and one fake batch.

:class:`DiscriminatorDiagnostics` is built once per run and called at log steps. It reads, for every
weighted layer of ``D`` (:func:`~stiefel_gan.effective_weights.weighted_layers`: plain, parametrized
by SN, fair SN or weight normalization, or Stiefel), the *effective* weight ``W`` (what the forward
multiplies by: the normalized weight of an SN layer, ``diag(lambda) X`` of a Stiefel layer), and reports:

Spectra (Miyato et al. 2018, Fig. 3)
    ``s``: the singular values of the reshaped ``W`` (``c_out x (c_in kh kw)`` for a conv), descending;
    the series ``spectrum/normalized`` plots ``s_i / s_0`` against ``t_i = i / (k - 1)``, interpolated
    linearly onto a common grid of :data:`SPECTRUM_GRID_POINTS` points of ``[0, 1]`` so that layers with
    different ``k`` share one x axis, and ``spectrum/normalized_squared`` plots :math:`(s_i / s_0)^2`, the
    view of Miyato et al.'s Fig. 3 (in it a curve is concave for ``tau < 0.5``, not ``tau < 1``). Layers
    with ``k >= 3`` get the spectrum curve fitted to ``s`` (:func:`~stiefel_gan.manifold.fit_curve`):
    ``fit_tau/<layer>``, ``fit_eps/<layer>`` and ``fit_rmse/<layer>``, the RMS residual of the normalized
    values (a trained spectrum need not be a curve). Stiefel layers add ``lambda`` in the spectrum's own
    order (an unsorted grid stays unsorted) as ``spectrum/lambda``, the drift :math:`\max|X^T X - I|`
    (``drift/<layer>``) and, for a learnable curve, ``tau``, ``eps``, ``sigma``. The raw values go to
    :attr:`Diagnostics.spectra`.

Norms of each layer
    ``reshape_norm/<layer> = s_0``; ``operator_norm/<layer>``: the largest singular value of the linear
    map the layer applies (``s_0`` for a dense layer; for a conv, power iteration on the real zero-padded,
    strided convolution at the input size the layer sees, :func:`~stiefel_gan.spectral.conv_operator_norm`).
    Convs also get ``fft_norm/<layer>``, the largest singular value of the circular, stride-1 convolution
    by the (dilated) kernel at that input size (Sedghi et al. 2019,
    :func:`~stiefel_gan.spectral.conv_singular_values`; left out when the kernel does not fit in the input),
    and that operator's whole spectrum, ``min(c_out, c_in) H W`` values normalized by their largest and
    placed on the common grid like the reshaped one (series ``spectrum/fft_normalized``): the Stiefel layers
    pin the reshaped spectrum, not the operator's, and this shows what the operator's looks like. And
    ``norm_ratio/<layer> = operator_norm / reshape_norm``: how far SN's reshaped norm is from the
    Lipschitz constant it is meant to control.

Lipschitz bounds of ``x -> D(x)`` (Euclidean norms)
    ``lipschitz/upper_bound`` :math:`= c \prod_l \lVert W_l \rVert_{op}`, ``c`` D's logit gain
    (``disc.gain``, :class:`~stiefel_gan.gan.builder.LogitGain`; 1 by default), and next to it
    ``lipschitz/reshaped_product`` :math:`= c \prod_l s_0(W_l)`, the same product of the *reshaped* norms
    that SN and the Stiefel layers' :math:`\sigma_{max}` control. This bounds the Lipschitz constant
    only for a *chain* of layers separated by 1-Lipschitz maps (LeakyReLU, ReLU, flatten): the standard
    CNN and MLP discriminators. For the ResNet discriminator, whose residual sums, average pooling and
    global sum pooling are not such maps, it is a heuristic, not a bound.
    ``lipschitz/lower_bound`` :math:`= \max_x \lVert \nabla_x D(x) \rVert` over the real samples, the
    fake samples and random interpolates :math:`\alpha x_r + (1 - \alpha) x_f`,
    :math:`\alpha \sim U[0, 1]` drawn from a private generator seeded :data:`INTERPOLATION_SEED`: any
    gradient norm is a lower bound of the Lipschitz constant. ``lipschitz/grad_norm_real|fake|interp``
    are the maxima over each set.

Gradients of the discriminator loss ``L`` (hinge or vanilla, :func:`~stiefel_gan.gan.losses.discriminator_loss`)
    Frobenius norms, per layer and per trained factor: ``grad_norm/<layer>/weight`` (the weight of a plain
    layer, the unnormalized ``original`` of an SN layer), ``grad_norm/<layer>/X`` (Stiefel factors: the
    *Riemannian* gradient norm :math:`\lVert P_X(G) \rVert_F`, ``P_X = manifold.proju``, the tangent
    projection of the Euclidean gradient ``G`` that Riemannian SGD / Adam step along; the two factors of an
    ``svd`` layer are combined as :math:`\sqrt{\lVert g_U \rVert^2 + \lVert g_V \rVert^2}`, the norm on the
    product manifold), ``grad_norm/<layer>/lambda`` (the raw, unconstrained spectrum parameters the
    optimizer updates), and for every layer ``grad_norm/<layer>/W``, the gradient with respect to the
    effective weight, see Note [gradient of the effective weight].

Saturation (what is left of the loss gradient at the logits)
    ``saturation/sigmoid_grad_real|fake`` :math:`= \mathrm{mean}\ s (1 - s)`, ``s = sigmoid(logit)``: the
    sigmoid's slope, small when D is confident. ``saturation/logit_grad_real|fake``
    :math:`= \mathrm{mean} |\ell'(\mathrm{logit})|` for the configured per-sample loss :math:`\ell` (the
    batch-mean loss's gradient times the batch size): for hinge, the fraction of samples inside the margin;
    for vanilla, :math:`1 - s` on real and :math:`s` on fake samples. Together with ``grad_norm/<layer>/lambda``
    this is the analysis behind "learning the largest singular values vanishes gradients".

Note [measuring without touching the training state]
    Every measurement runs in eval mode (reading an SN layer's weight in train mode runs a power
    iteration that updates its ``u``), each module's ``training`` flag is restored afterwards, gradients
    come from :func:`torch.autograd.grad` (no parameter's ``.grad`` is written) and the only random numbers
    are drawn from private fixed-seed generators (the interpolation weights here, the power iteration's
    start in :func:`~stiefel_gan.spectral.conv_operator_norm`): a run does not depend on how often it is
    diagnosed, and the same model and batches give the same numbers.

Note [gradient of the effective weight]
    The effective weight of an SN or Stiefel layer is recomputed by a submodule at each read of
    ``layer.weight`` (the parametrization list of :mod:`torch.nn.utils.parametrize`, the layer's
    :class:`~stiefel_gan.manifold.StiefelMatrix`), so a forward hook on that submodule sees the very tensor
    the forward multiplies by. Differentiating ``L`` with respect to the hooked tensors gives
    :math:`\partial L / \partial W` exactly, summed over the reads if a layer is used more than once
    (the total derivative with respect to a shared weight). A plain layer's effective weight is its
    parameter itself. A reshape does not change a Frobenius norm, so the Stiefel matrix's
    ``rows x cols`` gradient has the norm of the kernel-shaped one.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .._modules import eval_mode
from ..config.schema import LOSS_KINDS
from ..effective_weights import effective_weight, parameterization, trained_factors, weight_producer, weighted_layers
from ..gan.losses import discriminator_loss
from ..manifold import LearnableCurve, StiefelLayer, fit_curve
from ..manifold.spectra import CURVE_PARAMETERS
from ..spectral import conv_operator_norm, conv_singular_values, record_conv_input_sizes, reshape_singular_values

#: Points of the common ``[0, 1]`` grid the per-layer spectra are interpolated onto.
SPECTRUM_GRID_POINTS = 50

#: Seed of the private generator of the interpolation weights ``alpha``.
INTERPOLATION_SEED = 0


@dataclass
class Diagnostics:
    """What one call of :class:`DiscriminatorDiagnostics` measured.

    Attributes
    ----------
    scalars : dict of str to float
        ``"<quantity>/<layer>[/<factor>]"`` or ``"<group>/<quantity>"`` (module docstring), for the
        metrics log and W&B.
    series : dict of str to (list of float, dict of str to list of float)
        Line plots: ``key -> (xs, {layer: ys})`` with the common grid as ``xs``.
    spectra : dict
        JSON-able raw values: ``{"layers": {layer: {...}}}``, each layer with its ``weight_shape``,
        ``parameterization`` (``plain``, ``parametrized`` or ``stiefel``), ``reshaped`` singular values,
        ``operator_norm``, and where they apply ``fit`` (``tau``, ``eps``, ``rmse``), ``input_size``,
        ``fft_norm``, ``fft_count`` and ``fft_normalized`` (on the common grid), ``lambda``, ``drift``.
    """

    scalars: dict[str, float]
    series: dict[str, tuple[list[float], dict[str, list[float]]]]
    spectra: dict


def _check_conv_geometry(name: str, layer: nn.Module, weight_shape: tuple[int, ...]) -> None:
    # conv_operator_norm's operator is conv2d with zero padding, explicit padding amounts and one group
    if len(weight_shape) != 4 or getattr(layer, "transposed", False):
        raise ValueError(
            f"layer {name!r} ({type(layer).__name__}, weight of shape {weight_shape}) is not allowed: diagnostics "
            "measure the operators of 2-D, non-transposed convolutions (weight c_out x c_in x kh x kw)"
        )
    padding_mode, padding, groups = (getattr(layer, key, None) for key in ("padding_mode", "padding", "groups"))
    if padding_mode != "zeros" or isinstance(padding, str) or groups != 1:
        raise ValueError(
            f"layer {name!r} (padding_mode={padding_mode!r}, padding={padding!r}, groups={groups}) is not "
            "allowed: diagnostics need padding_mode='zeros', integer padding and groups=1"
        )


def _dilated_kernel(weight: Tensor, dilation: tuple[int, int]) -> Tensor:
    """The kernel with ``dilation - 1`` zeros between taps: a dilated conv is a plain conv by this kernel."""
    if tuple(dilation) == (1, 1):
        return weight
    (dh, dw), (kh, kw) = dilation, weight.shape[-2:]
    dilated = weight.new_zeros(*weight.shape[:2], dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    dilated[..., ::dh, ::dw] = weight
    return dilated


def _on_grid(values: Tensor, grid: np.ndarray) -> list[float]:
    """``values[i]`` placed at ``t_i = i / (k - 1)`` (``t = 0`` for ``k = 1``), linearly interpolated at ``grid``."""
    k = values.numel()
    positions = np.linspace(0.0, 1.0, k) if k > 1 else np.zeros(1)
    return np.interp(grid, positions, values.detach().double().cpu().numpy()).tolist()


def _as_is(grads: Sequence[Tensor]) -> Sequence[Tensor]:
    return grads


def _summed(grads: Sequence[Tensor]) -> list[Tensor]:
    return [sum(grads)]


def _riemannian(factors: Sequence[Tensor]) -> Callable:
    r"""Map Euclidean gradients ``G`` of Stiefel factors to their tangent projections :math:`P_X(G)`."""
    return lambda grads: [x.manifold.proju(x.detach(), g) for x, g in zip(factors, grads)]


def _frobenius(tensors: Sequence[Tensor]) -> float:
    return math.sqrt(sum(float(torch.sum(t.detach().double() ** 2)) for t in tensors))


class DiscriminatorDiagnostics:
    """Spectra, norms, Lipschitz bounds, loss gradients and saturation of a discriminator (module docstring).

    Parameters
    ----------
    discriminator : nn.Module
        ``D``, mapping a batch ``N x *input_shape`` to ``N`` logits (or ``N x 1``). Its weighted layers are
        found once, here: replacing layers afterwards needs a new instance.
    input_shape : tuple of int
        Shape of one sample. One eval-mode forward of a zero sample records the input size of every
        conv (:func:`~stiefel_gan.spectral.record_conv_input_sizes`), which its operator norm depends on.
    loss : {"hinge", "vanilla"}
        D's objective, for the loss gradients and ``saturation/logit_grad_*``.
    operator_norm_iters : int
        Power iterations per conv operator norm, ``>= 1``, all of them run (no stagnation test: the
        cost is fixed, and close top singular values stagnate long before they converge).
    logit_gain : float
        The factor D's forward applies to its last layer's output (``disc.gain``): it multiplies the
        products of norms, as it multiplies D's gradients.

    Examples
    --------
    >>> diagnose = DiscriminatorDiagnostics(D, (3, 32, 32), "hinge")
    >>> result = diagnose(real_batch, fake_batch)
    >>> result.scalars["lipschitz/lower_bound"] <= result.scalars["lipschitz/upper_bound"]
    True
    """

    def __init__(self, discriminator: nn.Module, input_shape: tuple[int, ...], loss: str,
                 operator_norm_iters: int = 30, logit_gain: float = 1.0):
        if not isinstance(discriminator, nn.Module):
            raise ValueError(f"discriminator={type(discriminator).__name__} is not allowed: use an nn.Module")
        if (not isinstance(input_shape, (tuple, list, torch.Size)) or not input_shape
                or not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) and n > 0
                           for n in input_shape)):
            raise ValueError(f"input_shape={input_shape!r} is not allowed: use a tuple of positive ints, "
                             "e.g. (3, 32, 32) or (2,)")
        if loss not in LOSS_KINDS:
            raise ValueError(f"loss={loss!r} is not allowed: use one of {LOSS_KINDS}")
        if (not isinstance(operator_norm_iters, numbers.Integral) or isinstance(operator_norm_iters, bool)
                or operator_norm_iters < 1):
            raise ValueError(f"operator_norm_iters={operator_norm_iters!r} is not allowed: use an int >= 1")
        layers = weighted_layers(discriminator)
        if not layers:
            raise ValueError(f"discriminator {type(discriminator).__name__} is not allowed: it has no "
                             "nn.Linear / nn.Conv2d / Stiefel layer (no weight matrix or kernel) to diagnose")
        with torch.no_grad():
            shapes = {name: tuple(effective_weight(layer).shape) for name, layer in layers.items()}
        convs = {name: layer for name, layer in layers.items() if len(shapes[name]) > 2}
        for name, layer in convs.items():
            _check_conv_geometry(name, layer, shapes[name])
        self.discriminator = discriminator
        self.input_shape = tuple(int(n) for n in input_shape)
        self.loss = loss
        if not (isinstance(logit_gain, numbers.Real) and math.isfinite(logit_gain) and logit_gain > 0):
            raise ValueError(f"logit_gain={logit_gain!r} is not allowed: use a finite number > 0")
        self.operator_norm_iters = int(operator_norm_iters)
        self.logit_gain = float(logit_gain)
        self.layers = layers
        self.input_sizes = record_conv_input_sizes(discriminator, convs, self.input_shape) if convs else {}
        self.grid = np.linspace(0.0, 1.0, SPECTRUM_GRID_POINTS)

    def __call__(self, real: Tensor, fake: Tensor) -> Diagnostics:
        """Measure everything on a real and a fake batch (``N x *input_shape`` each; sizes may differ).

        Interpolates pair the first ``min(N_real, N_fake)`` samples. The training state of ``D`` is left
        exactly as it was (module Note [measuring without touching the training state]).
        """
        for what, batch in (("real", real), ("fake", fake)):
            if (not isinstance(batch, Tensor) or not batch.is_floating_point() or batch.ndim < 2
                    or batch.shape[0] < 1 or tuple(batch.shape[1:]) != self.input_shape):
                shape = tuple(batch.shape) if isinstance(batch, Tensor) else type(batch).__name__
                raise ValueError(f"{what} batch of shape {shape} is not allowed: use a floating-point "
                                 f"N x {' x '.join(map(str, self.input_shape))} tensor with N >= 1")
        result = Diagnostics(scalars={}, series={}, spectra={"layers": {}})
        with eval_mode(self.discriminator):
            self._measure_spectra(result)
            self._measure_gradients(real.detach(), fake.detach(), result)
        return result

    @torch.no_grad()
    def _measure_spectra(self, result: Diagnostics) -> None:
        scalars, normalized, squared, operator_spectra, lambdas = result.scalars, {}, {}, {}, {}
        upper_bound = reshaped_product = self.logit_gain
        for name, layer in self.layers.items():
            weight = layer.weight.detach()
            reshaped = reshape_singular_values(weight)  # descending
            top = reshaped[0].clamp_min(torch.finfo(reshaped.dtype).tiny)  # a zero weight gives zeros, not NaN
            normalized[name] = _on_grid(reshaped / top, self.grid)
            squared[name] = _on_grid((reshaped / top) ** 2, self.grid)
            record = {"weight_shape": list(weight.shape), "parameterization": parameterization(layer),
                      "reshaped": reshaped.tolist()}
            if reshaped.numel() >= 3 and reshaped[0] > 0:
                fit = fit_curve(reshaped.double().cpu().numpy())
                record["fit"] = {"tau": fit.tau, "eps": fit.eps, "rmse": fit.rmse}
                for key, value in record["fit"].items():
                    scalars[f"fit_{key}/{name}"] = value
            operator_norm = reshaped[0]  # a dense layer's operator is its matrix
            if name in self.input_sizes:
                size = self.input_sizes[name]
                operator_norm = conv_operator_norm(weight, size, layer.stride, layer.padding, layer.dilation,
                                                   n_iter=self.operator_norm_iters, tol=0.0)
                scalars[f"norm_ratio/{name}"] = float(operator_norm / top)
                record["input_size"] = list(size)
                kernel = _dilated_kernel(weight, layer.dilation)
                if kernel.shape[-2] <= size[0] and kernel.shape[-1] <= size[1]:
                    operator_spectrum = conv_singular_values(kernel, size)  # descending
                    record["fft_norm"] = scalars[f"fft_norm/{name}"] = float(operator_spectrum[0])
                    record["fft_count"] = operator_spectrum.numel()
                    fft_top = operator_spectrum[0].clamp_min(torch.finfo(operator_spectrum.dtype).tiny)
                    record["fft_normalized"] = operator_spectra[name] = _on_grid(operator_spectrum / fft_top, self.grid)
            scalars[f"reshape_norm/{name}"] = float(reshaped[0])
            record["operator_norm"] = scalars[f"operator_norm/{name}"] = float(operator_norm)
            upper_bound *= float(operator_norm)
            reshaped_product *= float(reshaped[0])
            if isinstance(layer, StiefelLayer):
                lam = layer.singular_values()
                lambdas[name] = _on_grid(lam, self.grid)
                record["lambda"] = lam.tolist()
                record["drift"] = scalars[f"drift/{name}"] = float(layer.parametrization.drift())
                if isinstance(layer.spectrum, LearnableCurve):
                    for parameter in CURVE_PARAMETERS:
                        scalars[f"{parameter}/{name}"] = float(layer.spectrum.curve_parameter(parameter))
            result.spectra["layers"][name] = record
        scalars["lipschitz/upper_bound"] = upper_bound
        scalars["lipschitz/reshaped_product"] = reshaped_product
        grid = self.grid.tolist()
        result.series["spectrum/normalized"] = (grid, normalized)
        result.series["spectrum/normalized_squared"] = (grid, squared)
        if operator_spectra:
            result.series["spectrum/fft_normalized"] = (grid, operator_spectra)
        if lambdas:
            result.series["spectrum/lambda"] = (grid, lambdas)

    @torch.enable_grad()  # also when the caller is in a no_grad context
    def _measure_gradients(self, real: Tensor, fake: Tensor, result: Diagnostics) -> None:
        n_real, n_fake = real.shape[0], fake.shape[0]
        n_pairs = min(n_real, n_fake)
        generator = torch.Generator().manual_seed(INTERPOLATION_SEED)
        alpha = torch.rand(n_pairs, generator=generator, dtype=real.dtype).to(real.device)
        alpha = alpha.view(n_pairs, *([1] * len(self.input_shape)))
        interpolates = alpha * real[:n_pairs] + (1 - alpha) * fake[:n_pairs]
        inputs = torch.cat([real, fake, interpolates]).requires_grad_(True)

        effective_weights: dict[str, list[Tensor]] = {}
        handles = []
        for name, layer in self.layers.items():
            producer = weight_producer(layer)
            if producer is not None:
                effective_weights[name] = []
                handles.append(producer.register_forward_hook(self._capture(effective_weights[name])))
        try:
            logits = self.discriminator(inputs)
        finally:
            for handle in handles:
                handle.remove()
        if logits.numel() != inputs.shape[0]:
            raise ValueError(f"discriminator output of shape {tuple(logits.shape)} is not allowed: "
                             f"diagnostics need one logit per sample ({inputs.shape[0]} here)")
        missing = [name for name, captured in effective_weights.items() if not captured]
        if missing:
            raise RuntimeError(f"the weights of layers {missing} were not computed in the forward (inside a "
                               "parametrize.cached() context?): their gradient cannot be measured")
        logits = logits.reshape(-1)

        # (key, tensors, combine): the norm reported is that of combine(gradients of the tensors)
        groups: list[tuple[str, list[Tensor], Callable]] = []
        for name, layer in self.layers.items():
            for factor, tensors in trained_factors(layer).items():
                if tensors:
                    groups.append((f"grad_norm/{name}/{factor}", tensors,
                                   _riemannian(tensors) if factor == "X" else _as_is))
            if name in effective_weights:
                weights = effective_weights[name]
            else:  # a plain layer: the weight parameter itself
                weights = [layer.weight] if layer.weight.requires_grad else []
            if weights:
                # several reads of one weight: dL/dW is the sum over the reads
                groups.append((f"grad_norm/{name}/W", weights, _summed))
        flat = [tensor for _, tensors, _ in groups for tensor in tensors]

        loss = discriminator_loss(self.loss, logits[:n_real], logits[n_real:n_real + n_fake])
        *grads, logit_grads = torch.autograd.grad(loss, flat + [logits], retain_graph=True, allow_unused=True,
                                                  materialize_grads=True)
        (input_grads,) = torch.autograd.grad(logits.sum(), inputs)

        scalars = result.scalars
        position = 0
        for key, tensors, combine in groups:
            scalars[key] = _frobenius(combine(grads[position:position + len(tensors)]))
            position += len(tensors)

        sample_norms = torch.linalg.vector_norm(input_grads.flatten(1), dim=1)
        for what, norms in (("real", sample_norms[:n_real]), ("fake", sample_norms[n_real:n_real + n_fake]),
                            ("interp", sample_norms[n_real + n_fake:])):
            scalars[f"lipschitz/grad_norm_{what}"] = float(norms.max())
        scalars["lipschitz/lower_bound"] = max(scalars[f"lipschitz/grad_norm_{what}"]
                                               for what in ("real", "fake", "interp"))

        logits = logits.detach()
        for what, part, count in (("real", slice(0, n_real), n_real), ("fake", slice(n_real, n_real + n_fake), n_fake)):
            probability = torch.sigmoid(logits[part])
            scalars[f"saturation/sigmoid_grad_{what}"] = float(torch.mean(probability * (1 - probability)))
            # the loss averages each batch: d loss / d logit_i = l'(logit_i) / count
            scalars[f"saturation/logit_grad_{what}"] = float(torch.mean(torch.abs(logit_grads[part] * count)))

    @staticmethod
    def _capture(store: list[Tensor]) -> Callable:
        def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
            store.append(output)

        return hook
