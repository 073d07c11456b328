"""Stiefel layers with a controlled spectrum: reusable in any model, nothing GAN-specific.

>>> from stiefel_gan.manifold import StiefelLinear, LearnableCurve, make_optimizer
"""

from .costs import FactorCost, factor_costs, optimizer_step_flops, stiefel_summary
from .fused import SECOND_MOMENTS, StiefelAdam, StiefelSGD
from .layers import (
    FACTORIZATIONS,
    STIEFEL_TWINS,
    StiefelConv1d,
    StiefelConv2d,
    StiefelConv3d,
    StiefelConvTranspose1d,
    StiefelConvTranspose2d,
    StiefelConvTranspose3d,
    StiefelLayer,
    StiefelLinear,
    StiefelMatrix,
    haar_,
    stiefel_layers,
)
from .optim import OPTIMIZERS, load_optimizer_state, make_optimizer, parameter_groups
from .retractions import DEFAULT_RETRACTION, RETRACTIONS, CayleyStiefel, QRStiefel, manifold_drift, stiefel_manifold
from .spectra import (
    CurveFit,
    FixedCurve,
    FrobeniusNormalized,
    LearnableCurve,
    LearnableGrid,
    Spectrum,
    build_spectrum,
    curve_values,
    fit_curve,
)
from .stiefelize import stiefel_twin, stiefelize

__all__ = [
    "FACTORIZATIONS", "OPTIMIZERS", "RETRACTIONS", "DEFAULT_RETRACTION", "STIEFEL_TWINS",
    "StiefelLayer", "StiefelLinear", "StiefelConv1d", "StiefelConv2d", "StiefelConv3d",
    "StiefelConvTranspose1d", "StiefelConvTranspose2d", "StiefelConvTranspose3d", "StiefelMatrix",
    "stiefel_layers", "stiefel_summary", "factor_costs", "FactorCost", "optimizer_step_flops", "haar_",
    "make_optimizer", "parameter_groups", "load_optimizer_state", "StiefelAdam", "StiefelSGD", "SECOND_MOMENTS",
    "QRStiefel", "CayleyStiefel", "stiefel_manifold", "manifold_drift",
    "Spectrum", "FixedCurve", "FrobeniusNormalized", "LearnableCurve", "LearnableGrid", "build_spectrum",
    "curve_values", "CurveFit", "fit_curve",
    "stiefelize", "stiefel_twin",
]
