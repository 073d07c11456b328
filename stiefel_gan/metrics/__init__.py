"""Sample-quality metrics as plain functions: no training loop, no tracker.

- :mod:`.features`: two feature sets compared: FD, KID, precision / recall (torch-fidelity's
  mathematics on the features), density / coverage.
- :mod:`.toy`: mode coverage and quality on 2-D Gaussian mixtures (VEEGAN's definitions).
- :mod:`.geometry`: Geometry Score (relative living times of 1-d homology).
- :mod:`.digits`: a digits classifier (16 px, registered with torch-fidelity) whose features carry
  the digits' FD, KID, precision / recall, density / coverage, and its class coverage.
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
from .features import density_coverage, feature_statistics, frechet_distance, kernel_distance, precision_recall
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
    "density_coverage",
    "feature_statistics",
    "frechet_distance",
    "geometry_score",
    "kernel_distance",
    "load_digits_classifier",
    "mode_metrics",
    "plot_rlt",
    "precision_recall",
    "relative_living_times",
]
