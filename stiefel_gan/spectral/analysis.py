r"""Singular values of dense weights and of convolution operators.

Three views of a conv kernel ``K`` of shape ``c_out x c_in x kh x kw``:

Reshaped kernel (Miyato et al. 2018, arXiv 1802.05957)
    the ``c_out x (c_in kh kw)`` matrix ``K.flatten(1)``. Its largest singular value is what spectral
    normalization divides by; it is *not* the Lipschitz constant of the convolution.

Circular convolution (Sedghi, Gupta & Long 2019, arXiv 1805.10408)
    with circular padding and stride 1 on ``H x W`` inputs the operator is doubly block circulant, so
    the 2-D DFT block-diagonalizes it: with :math:`\hat K[p, q] = \sum_{a,b} K[:, :, a, b]\,
    e^{-2\pi i (pa/H + qb/W)}` (the kernel zero-padded to ``H x W``), the operator's singular values
    are the union over the ``H W`` frequencies ``(p, q)`` of the singular values of the
    ``c_out x c_in`` matrices :math:`\hat K[p, q]`.

Real (zero-padded, strided) convolution
    no closed form; its largest singular value is found by power iteration on :math:`A^T A`, where
    ``A`` is ``conv2d`` and :math:`A^T` is ``conv_transpose2d`` with the same geometry.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

IntOrPair = Union[int, Sequence[int]]


def _is_int(value) -> bool:
    # numbers.Integral admits numpy integers; bool is an int subclass but never a size
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_input_size(input_size) -> tuple[int, int]:
    if (
        not isinstance(input_size, Sequence)
        or len(input_size) != 2
        or not all(_is_int(s) and s > 0 for s in input_size)
    ):
        raise ValueError(f"input_size={input_size!r} is not allowed: use two positive ints (H, W)")
    return int(input_size[0]), int(input_size[1])


def _check_pair(value: IntOrPair, name: str, minimum: int) -> tuple[int, int]:
    pair = (value, value) if _is_int(value) else value
    if (
        not isinstance(pair, Sequence)
        or len(pair) != 2
        or not all(_is_int(s) and s >= minimum for s in pair)
    ):
        raise ValueError(f"{name}={value!r} is not allowed: use an int >= {minimum} or two of them")
    return int(pair[0]), int(pair[1])


def _normalized(tensor: Tensor, eps: float = 1e-12) -> Tensor:
    """``tensor / max(||tensor||_2, eps)``, the norm over all entries (``F.normalize`` of the flattened tensor)."""
    return tensor / torch.linalg.vector_norm(tensor).clamp_min(eps)


def _check_conv_kernel(weight: Tensor) -> None:
    if not isinstance(weight, Tensor) or weight.ndim != 4:
        shape = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise ValueError(f"weight of shape {shape} is not allowed: use a conv kernel c_out x c_in x kh x kw")


@dataclass(frozen=True)
class ConvGeometry:
    """The linear map ``x -> conv2d(x, K)`` (no bias, one group) on ``input_size`` inputs, and its adjoint.

    Note [adjoint of a strided convolution]
        ``conv_transpose2d`` with the same stride, padding and dilation is the adjoint of ``conv2d``
        (it is ``conv2d``'s gradient with respect to its input), except that several input sizes map
        to the same output size when the stride is > 1: the trailing rows/columns that ``conv2d``
        never reads are restored, as zeros, by ``output_padding`` (in ``[0, stride)``), so that the
        adjoint lands back on exactly ``input_size``.
    """

    kernel_size: tuple[int, int]
    input_size: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)

    @classmethod
    def checked(
        cls,
        weight: Tensor,
        input_size: Sequence[int],
        stride: IntOrPair = 1,
        padding: IntOrPair = 0,
        dilation: IntOrPair = 1,
    ) -> "ConvGeometry":
        """Validate the arguments (one-line ``ValueError``) and build the geometry for kernel ``weight``."""
        _check_conv_kernel(weight)
        geometry = cls(
            kernel_size=(weight.shape[2], weight.shape[3]),
            input_size=_check_input_size(input_size),
            stride=_check_pair(stride, "stride", 1),
            padding=_check_pair(padding, "padding", 0),
            dilation=_check_pair(dilation, "dilation", 1),
        )
        if min(geometry.output_size) < 1:
            raise ValueError(
                f"input_size={tuple(input_size)!r} is too small for kernel {geometry.kernel_size} with "
                f"padding {geometry.padding} and dilation {geometry.dilation}: the output would be empty"
            )
        return geometry

    @property
    def output_size(self) -> tuple[int, int]:
        # floor((n + 2p - d (k - 1) - 1) / s) + 1, per spatial axis (the conv2d docs' formula)
        return tuple(
            (n + 2 * p - d * (k - 1) - 1) // s + 1
            for n, k, s, p, d in zip(self.input_size, self.kernel_size, self.stride, self.padding, self.dilation)
        )

    @property
    def output_padding(self) -> tuple[int, int]:
        # conv_transpose2d produces (o - 1) s - 2p + d (k - 1) + output_padding + 1 per axis
        return tuple(
            n - ((o - 1) * s - 2 * p + d * (k - 1) + 1)
            for n, o, k, s, p, d in zip(
                self.input_size, self.output_size, self.kernel_size, self.stride, self.padding, self.dilation
            )
        )

    def apply(self, inputs: Tensor, weight: Tensor) -> Tensor:
        """``A x``: ``N x c_in x H x W`` -> ``N x c_out x H_out x W_out``."""
        return F.conv2d(inputs, weight, None, self.stride, self.padding, self.dilation)

    def apply_adjoint(self, outputs: Tensor, weight: Tensor) -> Tensor:
        """``A^T y``: ``N x c_out x H_out x W_out`` -> ``N x c_in x H x W``."""
        return F.conv_transpose2d(
            outputs, weight, None, self.stride, self.padding, self.output_padding, 1, self.dilation
        )


def reshape_singular_values(weight: Tensor) -> Tensor:
    """Exact singular values of a weight viewed as the matrix ``weight.flatten(1)``, descending.

    Parameters
    ----------
    weight : Tensor
        A dense ``out x in`` weight, or a conv kernel ``c_out x c_in x kh x kw`` (any ``ndim >= 2``:
        all dimensions after the first are flattened, Miyato's view ``c_out x (c_in kh kw)``).

    Returns
    -------
    Tensor
        The ``min(out, in)`` singular values, descending, without gradient.
    """
    if not isinstance(weight, Tensor) or weight.ndim < 2:
        shape = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise ValueError(f"weight of shape {shape} is not allowed: use a matrix or a conv kernel (ndim >= 2)")
    return torch.linalg.svdvals(weight.detach().flatten(1))


def conv_singular_values(weight: Tensor, input_size: Sequence[int]) -> Tensor:
    r"""All singular values of the circular, stride-1 convolution by ``weight`` on ``H x W`` inputs.

    The FFT method of Sedghi et al. 2019 (module docstring): the batch of ``H W`` matrices
    :math:`\hat K[p, q] \in \mathbb{C}^{c_{out} \times c_{in}}` is decomposed by one batched
    ``torch.linalg.svdvals``; cost :math:`O(c_{out} c_{in} HW \log(HW) + HW\, c_{out} c_{in}
    \min(c_{out}, c_{in}))` instead of the dense operator's :math:`O((c HW)^3)`.

    ``conv2d`` is a cross-correlation, whose transfer matrix at frequency ``(p, q)`` is
    :math:`\overline{\hat K[p, q]}` rather than :math:`\hat K[p, q]`: a conjugate has the same
    singular values, so the spectrum is the same set.

    Parameters
    ----------
    weight : Tensor
        Conv kernel ``c_out x c_in x kh x kw`` with ``kh <= H`` and ``kw <= W``.
    input_size : (int, int)
        Spatial size ``(H, W)`` of the inputs.

    Returns
    -------
    Tensor
        The ``min(c_out, c_in) H W`` singular values, descending, real, without gradient.
    """
    _check_conv_kernel(weight)
    height, width = _check_input_size(input_size)
    if weight.shape[2] > height or weight.shape[3] > width:
        raise ValueError(
            f"kernel size {tuple(weight.shape[2:])} is not allowed for input_size {(height, width)}: "
            "the kernel must fit in the input"
        )
    # fft2 zero-pads the kernel to H x W; frequencies go to the batch dimensions in front
    transfer = torch.fft.fft2(weight.detach(), s=(height, width)).permute(2, 3, 0, 1)
    values = torch.linalg.svdvals(transfer).flatten()
    return torch.sort(values, descending=True).values


@torch.no_grad()
def conv_operator_norm(
    weight: Tensor,
    input_size: Sequence[int],
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
    n_iter: int = 100,
    tol: float = 1e-6,
    u0: Optional[Tensor] = None,
) -> Tensor:
    r"""Largest singular value of the zero-padded, strided convolution by ``weight``, by power iteration.

    Iterates :math:`u \leftarrow A^T A u / \lVert A^T A u \rVert` with ``A = conv2d`` and
    :math:`A^T` = ``conv_transpose2d`` (:class:`ConvGeometry`), and returns
    :math:`\sigma = \lVert A u \rVert` for the unit vector ``u``; :math:`\sigma` increases towards
    :math:`\sigma_{max}` with error :math:`O((\sigma_2 / \sigma_1)^{2k})` after ``k`` iterations.

    Parameters
    ----------
    weight : Tensor
        Conv kernel ``c_out x c_in x kh x kw`` (bias plays no part in the operator norm).
    input_size : (int, int)
        Spatial size ``(H, W)`` of the inputs.
    stride, padding, dilation : int or (int, int)
        As in :func:`torch.nn.functional.conv2d` (zero padding).
    n_iter : int
        Maximum number of iterations, ``>= 1``.
    tol : float
        Stop early once :math:`|\sigma_k - \sigma_{k-1}| \le tol\, \sigma_k`; ``0`` runs all ``n_iter``.
        A stagnation test, not an error bound: the relative error at the stop is about
        :math:`tol / (1 - (\sigma_2/\sigma_1)^2)`, larger when the top singular values are close.
    u0 : Tensor, optional
        Starting vector of shape ``1 x c_in x H x W`` (e.g. a :class:`FairSpectralNorm` buffer).
        By default a fixed-seed Gaussian, see Note [private generator].

    Returns
    -------
    Tensor
        Scalar tensor, the estimate of :math:`\sigma_{max}(A)`, in ``weight``'s dtype, without gradient.
    """
    geometry = ConvGeometry.checked(weight, input_size, stride, padding, dilation)
    if not _is_int(n_iter) or n_iter < 1:
        raise ValueError(f"n_iter={n_iter!r} is not allowed: use an int >= 1")
    if not tol >= 0:
        raise ValueError(f"tol={tol!r} is not allowed: use a float >= 0")
    input_shape = (1, weight.shape[1], *geometry.input_size)
    if u0 is None:
        # Note [private generator]: a diagnostic called during training must not advance the global
        # RNG, or the training run would depend on how often it is logged; a fixed seed also makes
        # the estimate reproducible.
        generator = torch.Generator().manual_seed(0)
        u0 = torch.randn(input_shape, generator=generator, dtype=torch.float64)
    elif tuple(u0.shape) != input_shape:
        raise ValueError(f"u0 of shape {tuple(u0.shape)} is not allowed: use shape {input_shape}")
    elif not torch.any(u0 != 0):
        raise ValueError("u0 = 0 is not allowed: power iteration needs a nonzero starting vector")
    u = _normalized(u0.to(weight))

    sigma = previous_sigma = None
    for _ in range(n_iter):
        image = geometry.apply(u, weight)
        sigma = torch.linalg.vector_norm(image)
        if previous_sigma is not None and abs(sigma - previous_sigma) <= tol * sigma:
            break
        previous_sigma = sigma
        u = _normalized(geometry.apply_adjoint(image, weight))
    return sigma
