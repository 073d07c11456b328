"""Sample-quality metrics as plain functions: no training loop, no tracker.

- :mod:`.frechet`: the Fréchet distance of two Gaussians and feature statistics.
- :mod:`.toy`: mode coverage and quality on 2-D Gaussian mixtures (VEEGAN's definitions).
- :mod:`.geometry`: Geometry Score (relative living times of 1-d homology).
- :mod:`.digits`: a digits classifier's Fréchet distance and class coverage (8x8 digits).
- :mod:`.fidelity`: IS / FID / KID through torch-fidelity, with the sampling protocol.
- :mod:`.status`: :class:`MetricUnavailable`, raised with a machine-readable ``reason`` when
  the generated samples make a metric undefined (``"nonfinite"``) or too costly
  (``"complex_too_large"``).  Every metric's cost is bounded whatever the generator produced:
  a collapsed generator gets a number or this exception, never a hang.
"""

from .digits import (
    DigitsClassifier,
    DigitsEvaluator,
    load_digits_classifier,
)
from .fidelity import PROTOCOLS, FidelityProtocol, compute_fidelity
from .frechet import feature_statistics, frechet_distance
from .geometry import geometry_score, plot_rlt, relative_living_times
from .status import MetricUnavailable
from .toy import mode_metrics

__all__ = [
    "PROTOCOLS",
    "DigitsClassifier",
    "DigitsEvaluator",
    "FidelityProtocol",
    "MetricUnavailable",
    "compute_fidelity",
    "feature_statistics",
    "frechet_distance",
    "geometry_score",
    "load_digits_classifier",
    "mode_metrics",
    "plot_rlt",
    "relative_living_times",
]
