"""Singular values of weights and convolutions, and the spectral-normalization baselines.

:mod:`.analysis` measures (reshaped SVD, exact circular-conv spectrum by FFT, operator norm by power
iteration); :mod:`.normalization` constrains (SN, fair SN, orthonormal regularization).
"""

from .analysis import ConvGeometry, conv_operator_norm, conv_singular_values, reshape_singular_values
from .normalization import (
    NORMALIZATION_KINDS,
    FairSpectralNorm,
    SpectralNorm,
    apply_normalization,
    orthogonal_penalty,
    record_conv_input_sizes,
    spectral_norm_estimates,
)

__all__ = [
    "ConvGeometry",
    "FairSpectralNorm",
    "NORMALIZATION_KINDS",
    "SpectralNorm",
    "apply_normalization",
    "conv_operator_norm",
    "conv_singular_values",
    "orthogonal_penalty",
    "record_conv_input_sizes",
    "reshape_singular_values",
    "spectral_norm_estimates",
]
