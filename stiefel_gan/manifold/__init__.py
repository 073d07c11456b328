"""Stiefel layers with a controlled spectrum: reusable in any model, nothing GAN-specific.

>>> from stiefel_gan.manifold import StiefelLinear, LearnableCurve, make_optimizer
"""

from .fused import SECOND_MOMENTS, StiefelAdam, StiefelSGD
from .layers import FACTORIZATIONS, StiefelConv2d, StiefelLayer, StiefelLinear, StiefelMatrix, stiefel_layers
from .optim import OPTIMIZERS, load_optimizer_state, make_optimizer, parameter_groups
from .retractions import (DEFAULT_RETRACTION, RETRACTIONS, CayleyStiefel, QRStiefel, manifold_drift,
                          stiefel_manifold)
from .spectra import FixedCurve, LearnableCurve, LearnableGrid, Spectrum, build_spectrum, curve_values
from .stiefelize import stiefel_twin, stiefelize

__all__ = [
    "FACTORIZATIONS", "OPTIMIZERS", "RETRACTIONS", "DEFAULT_RETRACTION",
    "StiefelLayer", "StiefelLinear", "StiefelConv2d", "StiefelMatrix", "stiefel_layers",
    "make_optimizer", "parameter_groups", "load_optimizer_state", "StiefelAdam", "StiefelSGD", "SECOND_MOMENTS",
    "QRStiefel", "CayleyStiefel", "stiefel_manifold", "manifold_drift",
    "Spectrum", "FixedCurve", "LearnableCurve", "LearnableGrid", "build_spectrum", "curve_values",
    "stiefelize", "stiefel_twin",
]
