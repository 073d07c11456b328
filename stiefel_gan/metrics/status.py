"""Why a metric has no value: :class:`MetricUnavailable` and its machine-readable reasons.

A metric of generated samples is *unavailable* when the samples make it undefined (NaN
images of a diverged generator) or when computing it would take unbounded time (a Geometry
Score whose witness complex a collapsed generator has made enormous).  The metric then raises
:class:`MetricUnavailable` instead of returning a number, so that a caller can log ``NaN``
next to ``error.reason`` and the run goes on::

    try:
        scores["digits_fd"] = evaluator.frechet_distance(fake)
    except MetricUnavailable as error:
        scores["digits_fd"], statuses["digits_fd"] = float("nan"), error.reason

It subclasses :class:`ValueError`: the input's values are what make the metric undefined, and
callers that already catch ``ValueError`` for bad input keep working.  Wrong arguments (shapes,
a negative ``std``) still raise a plain ``ValueError``: those are bugs of the caller, not
properties of what the generator produced.
"""

from __future__ import annotations

#: Some sample, feature or distance is NaN or infinite.
NONFINITE = "nonfinite"
#: The witness complex of a Geometry Score needs more work than its budget allows
#: (:func:`stiefel_gan.metrics.geometry.relative_living_times`).
COMPLEX_TOO_LARGE = "complex_too_large"
#: Every reason a metric of this package gives.
REASONS = (NONFINITE, COMPLEX_TOO_LARGE)


class MetricUnavailable(ValueError):
    """A metric is undefined for its input, or too expensive to compute for it.

    Parameters
    ----------
    reason : str
        One of :data:`REASONS`: short and stable, for logs and dashboards.
    detail : str
        What was found, for a human reader; the exception's message is ``"<detail> (<reason>)"``.
    """

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"reason={reason!r}: expected one of {REASONS}")
        super().__init__(f"{detail} ({reason})")
        self.reason = reason
        self.detail = detail

    def __reduce__(self):
        # the default rebuilds from the message alone, which __init__ does not take: needed to cross processes
        return type(self), (self.reason, self.detail)
