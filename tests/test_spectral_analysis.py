"""Spectra of weights and convolutions against explicit dense operator matrices (float64)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import orthonormal, raises_one_line

from stiefel_gan.spectral import ConvGeometry, conv_operator_norm, conv_singular_values, reshape_singular_values

RTOL = 1e-4


def dense_conv_matrix(weight, input_size, stride=1, padding=0, dilation=1, circular=False):
    """The ``(c_out H_out W_out) x (c_in H W)`` matrix of ``x -> conv2d(x, weight)``, column by column.

    ``circular=True``: stride 1, output ``H x W``, the input wrapped around by ``F.pad(mode="circular")``.
    """
    c_in = weight.shape[1]
    height, width = input_size
    n_inputs = c_in * height * width
    basis = torch.eye(n_inputs, dtype=weight.dtype).reshape(n_inputs, c_in, height, width)
    if circular:
        kh, kw = weight.shape[2:]
        images = F.conv2d(F.pad(basis, (0, kw - 1, 0, kh - 1), mode="circular"), weight)
    else:
        images = F.conv2d(basis, weight, stride=stride, padding=padding, dilation=dilation)
    return images.reshape(n_inputs, -1).T


# ---------------------------------------------------------------- reshape_singular_values


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("shape", [(3, 7), (7, 3), (4, 2, 3, 3), (20, 2, 3, 3)])
def test_reshape_singular_values_recovers_planted_spectrum(shape, seed):
    generator = torch.Generator().manual_seed(seed)
    rows, cols = shape[0], int(np.prod(shape[1:]))
    k = min(rows, cols)
    planted = torch.sort(torch.rand(k, dtype=torch.float64, generator=generator) + 0.1, descending=True).values
    u = orthonormal(rows, k, generator=generator)
    v = orthonormal(cols, k, generator=generator)
    weight = (u * planted) @ v.T
    torch.testing.assert_close(reshape_singular_values(weight.reshape(shape)), planted, rtol=1e-10, atol=1e-12)


def test_reshape_singular_values_matches_numpy_and_is_descending():
    weight = torch.randn(5, 3, 3, 3, generator=torch.Generator().manual_seed(3))
    values = reshape_singular_values(weight)
    expected = np.linalg.svd(weight.numpy().reshape(5, 27), compute_uv=False)
    np.testing.assert_allclose(values.numpy(), expected, rtol=1e-5)
    assert torch.all(values[:-1] >= values[1:])


# ---------------------------------------------------------------- conv_singular_values (FFT)

CIRCULAR_CASES = [
    # c_out, c_in, kh, kw, H, W
    (2, 3, 3, 3, 5, 5),
    (4, 2, 3, 3, 6, 6),
    (3, 3, 3, 2, 5, 6),
    (2, 3, 1, 1, 4, 3),
]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("c_out, c_in, kh, kw, height, width", CIRCULAR_CASES)
def test_conv_singular_values_equal_dense_circular_operator(c_out, c_in, kh, kw, height, width, seed):
    weight = torch.randn(c_out, c_in, kh, kw, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    dense = torch.linalg.svdvals(dense_conv_matrix(weight, (height, width), circular=True))
    values = conv_singular_values(weight, (height, width))
    assert values.shape == (min(c_out, c_in) * height * width,)
    assert not values.is_complex()
    torch.testing.assert_close(values, dense, rtol=RTOL, atol=RTOL * dense[0].item())


def test_conv_singular_values_differ_from_reshaped_spectrum():
    # the point of the FFT method: the operator's norm is not the reshaped kernel's
    weight = torch.randn(3, 2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert not torch.isclose(conv_singular_values(weight, (6, 6))[0], reshape_singular_values(weight)[0], rtol=1e-2)


# ---------------------------------------------------------------- conv_operator_norm and its geometry

STRIDED_CASES = [
    # c_out, c_in, kh, kw, H, W, stride, padding, dilation
    (2, 3, 3, 3, 5, 5, 1, 0, 1),
    (4, 2, 3, 3, 6, 6, 2, 1, 1),
    (2, 3, 3, 3, 5, 5, 2, 1, 1),
    (3, 3, 3, 3, 6, 5, 2, 0, 1),
    (2, 2, 3, 2, 5, 6, 1, 1, 1),
    (3, 2, 3, 3, 6, 6, 1, 1, 2),
    (2, 3, 4, 4, 6, 6, 2, 1, 1),
]


@pytest.mark.parametrize("c_out, c_in, kh, kw, height, width, stride, padding, dilation", STRIDED_CASES)
def test_conv_adjoint_is_transpose_of_dense_operator(c_out, c_in, kh, kw, height, width, stride, padding, dilation):
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(c_out, c_in, kh, kw, dtype=torch.float64, generator=generator)
    geometry = ConvGeometry.checked(weight, (height, width), stride, padding, dilation)
    dense = dense_conv_matrix(weight, (height, width), stride, padding, dilation)
    outputs = torch.randn(3, c_out, *geometry.output_size, dtype=torch.float64, generator=generator)
    adjoint = geometry.apply_adjoint(outputs, weight)
    assert adjoint.shape == (3, c_in, height, width)
    torch.testing.assert_close(adjoint.reshape(3, -1), outputs.reshape(3, -1) @ dense, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("c_out, c_in, kh, kw, height, width, stride, padding, dilation", STRIDED_CASES)
def test_conv_operator_norm_equals_dense_top_singular_value(
    c_out, c_in, kh, kw, height, width, stride, padding, dilation, seed
):
    weight = torch.randn(c_out, c_in, kh, kw, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    dense_norm = torch.linalg.svdvals(dense_conv_matrix(weight, (height, width), stride, padding, dilation))[0]
    norm = conv_operator_norm(weight, (height, width), stride, padding, dilation, n_iter=3000, tol=1e-8)
    assert norm.shape == () and not norm.requires_grad
    torch.testing.assert_close(norm, dense_norm, rtol=RTOL, atol=0.0)


def test_conv_operator_norm_one_step_from_top_singular_vector_is_exact():
    weight = torch.randn(3, 2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    _, values, vh = torch.linalg.svd(dense_conv_matrix(weight, (6, 5), stride=2, padding=1))
    u0 = 7.0 * vh[0].reshape(1, 2, 6, 5)  # scale must not matter
    norm = conv_operator_norm(weight, (6, 5), stride=2, padding=1, n_iter=1, u0=u0)
    torch.testing.assert_close(norm, values[0], rtol=1e-12, atol=0.0)


def test_conv_operator_norm_leaves_global_rng_alone_and_is_reproducible():
    weight = torch.randn(2, 2, 3, 3)
    state = torch.get_rng_state()
    first = conv_operator_norm(weight, (5, 5), n_iter=5, tol=0.0)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(conv_operator_norm(weight, (5, 5), n_iter=5, tol=0.0), first)


def test_conv_operator_norm_has_no_grad_and_keeps_dtype():
    weight = torch.randn(2, 2, 3, 3, dtype=torch.float32, requires_grad=True)
    norm = conv_operator_norm(weight, (5, 5))
    assert norm.dtype == torch.float32 and norm.grad_fn is None


# ---------------------------------------------------------------- bad input

KERNEL = torch.randn(2, 3, 3, 3)


@pytest.mark.parametrize(
    "call, named",
    [
        (lambda: reshape_singular_values(torch.randn(4)), "shape (4,)"),
        (lambda: conv_singular_values(torch.randn(3, 3), (5, 5)), "shape (3, 3)"),
        (lambda: conv_singular_values(KERNEL, (5,)), "input_size=(5,)"),
        (lambda: conv_singular_values(KERNEL, (5, 0)), "input_size=(5, 0)"),
        (lambda: conv_singular_values(KERNEL, (5.0, 5)), "input_size=(5.0, 5)"),
        (lambda: conv_singular_values(KERNEL, 5), "input_size=5"),
        (lambda: conv_singular_values(KERNEL, (2, 5)), "kernel size (3, 3)"),
        (lambda: conv_operator_norm(torch.randn(2, 3, 3), (5, 5)), "shape (2, 3, 3)"),
        (lambda: conv_operator_norm(KERNEL, (5, 5), n_iter=0), "n_iter=0"),
        (lambda: conv_operator_norm(KERNEL, (5, -1)), "input_size=(5, -1)"),
        (lambda: conv_operator_norm(KERNEL, (5, 5), stride=0), "stride=0"),
        (lambda: conv_operator_norm(KERNEL, (5, 5), padding=(1, -1)), "padding=(1, -1)"),
        (lambda: conv_operator_norm(KERNEL, (5, 5), dilation=(1, 2, 3)), "dilation=(1, 2, 3)"),
        (lambda: conv_operator_norm(KERNEL, (2, 2)), "too small"),
        (lambda: conv_operator_norm(KERNEL, (5, 5), tol=-1.0), "tol=-1.0"),
        (lambda: conv_operator_norm(KERNEL, (5, 5), u0=torch.randn(3, 5, 5)), "u0 of shape (3, 5, 5)"),
        (lambda: conv_operator_norm(KERNEL, (5, 5), u0=torch.zeros(1, 3, 5, 5)), "u0 = 0"),
    ],
)
def test_bad_input_raises_one_line_value_error(call, named):
    raises_one_line(call, named)
