"""The one table of quality metrics: every ``quality/*`` key a run can log, its direction, the datasets
that log it, and each dataset's headline metric.

Everything that names a quality metric reads it from here: the W&B summary (best and last value in
the right direction, :mod:`stiefel_gan.run.tracker`), the objective a Hydra sweeper optimizes
(:func:`stiefel_gan.run.runner.objective`), the report's directions and ranking
(:mod:`stiefel_gan.report.summary`), the dashboard's headline panel and the W&B sweep files
(``configs/sweeps/*.yaml``, whose ``metric`` a test compares with :data:`HEADLINE`). A test runs every
dataset kind and checks that each ``quality/*`` key a run emits is a row of :data:`METRICS`.

A row's ``goal`` is ``"minimize"`` or ``"maximize"`` for a quality number, ``None`` for a number that
says how the quality was measured (a protocol's sample counts, the Geometry Score's ``gamma``, a spread
within one run): those are logged next to the numbers and listed by the report, never compared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PREFIX = "quality/"

IMAGE_DATASETS = ("cifar10", "stl10")
MIXTURE_DATASETS = ("ring8", "grid25")
#: the datasets whose samples fall into a known, finite set of modes: the mixtures' Gaussians, the stacked
#: digits' 1,000 digit triples
MODE_DATASETS = (*MIXTURE_DATASETS, "stacked_digits")
ALL_DATASETS = ("digits", "stacked_digits", *MIXTURE_DATASETS, *IMAGE_DATASETS)


@dataclass(frozen=True)
class Metric:
    """One ``quality/<name>`` key: ``goal`` is ``minimize``, ``maximize`` or None (a measurement setting);
    ``group`` names the computation that gives it, whose keys are NaN together when it is unavailable
    (:class:`~stiefel_gan.metrics.status.MetricUnavailable`)."""

    name: str
    goal: str | None
    datasets: tuple[str, ...]
    group: str
    meaning: str

    @property
    def key(self) -> str:
        return PREFIX + self.name


METRICS = (
    # the digits (stiefel_gan.metrics.digits): the 64-d features of the project's 16 px digits classifier,
    # generated vs the reference digits (stiefel_gan.metrics.features)
    Metric("digits_fd", "minimize", ("digits",), "digits_features",
           "Frechet distance in the digits classifier's features"),
    Metric("kid", "minimize", ("digits",), "digits_features",
           "KID (unbiased cubic-kernel MMD^2, mean over 100 subsets of 400) in the digits classifier's features"),
    Metric("precision", "maximize", ("digits",), "digits_features",
           "share of samples inside the real digits' 3-NN manifold (Kynkaanniemi et al. 2019)"),
    Metric("recall", "maximize", ("digits",), "digits_features",
           "share of real digits inside the samples' 3-NN manifold (Kynkaanniemi et al. 2019)"),
    Metric("density", "maximize", ("digits",), "digits_features",
           "real digits' 5-NN balls per sample, over 5 (about 1 for real digits; Naeem et al. 2020)"),
    Metric("coverage", "maximize", ("digits",), "digits_features",
           "share of real digits whose 5-NN ball holds a sample (Naeem et al. 2020)"),
    Metric("classes_covered", "maximize", ("digits",), "class_coverage",
           "digit classes with at least their share of samples"),
    Metric("classes_covered_confident", "maximize", ("digits",), "class_coverage",
           "digit classes with their share of samples predicted at softmax >= 0.9"),
    Metric("class_kl", "minimize", ("digits",), "class_coverage", "KL of the predicted-class histogram from uniform"),
    Metric("memorization_ratio", None, ("digits",), "memorization",
           "nearest-training-digit distance of samples over that of held-out digits (< 1: copying)"),
    # the 2-D mixtures (stiefel_gan.metrics.toy) and the stacked digits (stiefel_gan.metrics.stacked)
    Metric("modes_covered", "maximize", MODE_DATASETS, "mode_metrics",
           "modes with a sample that counts (mixtures: within 3 std; stacked digits: 3 confident channels)"),
    Metric("high_quality_fraction", "maximize", MIXTURE_DATASETS, "mode_metrics",
           "samples within 3 std of their nearest mode"),
    Metric("confident_fraction", "maximize", ("stacked_digits",), "mode_metrics",
           "samples whose three channels the digits classifier gives a digit at softmax >= 0.9"),
    Metric("mode_kl", "minimize", MODE_DATASETS, "mode_metrics",
           "KL of the histogram of the samples that count over the modes, from uniform"),
    Metric("n_modes", None, MODE_DATASETS, "mode_metrics", "the dataset's number of modes"),
    # CIFAR-10 / STL-10 through torch-fidelity (stiefel_gan.metrics.fidelity), with the protocol's counts
    Metric("isc_mean", "maximize", IMAGE_DATASETS, "fidelity", "Inception Score, mean over splits"),
    Metric("isc_std", None, IMAGE_DATASETS, "fidelity", "Inception Score, std over splits"),
    Metric("fid", "minimize", IMAGE_DATASETS, "fidelity", "Frechet Inception Distance"),
    Metric("kid_mean", "minimize", IMAGE_DATASETS, "fidelity", "Kernel Inception Distance, mean over subsets"),
    Metric("kid_std", None, IMAGE_DATASETS, "fidelity", "Kernel Inception Distance, std over subsets"),
    Metric("n_fake", None, IMAGE_DATASETS, "fidelity", "generated images of the protocol"),
    Metric("n_real", None, IMAGE_DATASETS, "fidelity", "real images of the protocol"),
    Metric("n_is", None, IMAGE_DATASETS, "fidelity", "generated images the Inception Score sees"),
    Metric("is_splits", None, IMAGE_DATASETS, "fidelity", "splits of the Inception Score"),
    Metric("kid_subsets", None, IMAGE_DATASETS, "fidelity", "subsets of the KID"),
    Metric("kid_subset_size", None, IMAGE_DATASETS, "fidelity", "images per KID subset"),
    # every dataset, at the end of a run (stiefel_gan.metrics.geometry)
    Metric("geometry_score", "minimize", ALL_DATASETS, "geometry", "Geometry Score of real vs generated samples"),
    Metric("geometry_gamma", None, ALL_DATASETS, "geometry", "the Geometry Score's filtration parameter gamma"),
)
BY_KEY = {metric.key: metric for metric in METRICS}
BY_NAME = {metric.name: metric for metric in METRICS}


def compared_keys(group: str, dataset: str) -> tuple[str, ...]:
    """The ``quality/*`` keys with a goal that computation ``group`` gives on ``dataset``: what is NaN
    when that computation is unavailable (its settings rows, such as ``geometry_gamma``, are not)."""
    return tuple(m.key for m in METRICS if m.group == group and m.goal is not None and dataset in m.datasets)

#: Each dataset's headline quality metric: what a sweep optimizes, W&B's headline panel shows and a
#: study compares first.
#: The stacked digits' is the modes covered, not the mode KL: the KL is over the confident samples only, NaN
#: while there is none (a short run's blobs) and small for a generator with a few confident samples spread
#: evenly; the count is always defined, needs quality and spread at once, and is far from saturating at 1,000
#: (docs/metrics.md, "Stacked digits (1,000 modes)").
HEADLINE = {"digits": "quality/digits_fd", "stacked_digits": "quality/modes_covered", "ring8": "quality/mode_kl",
            "grid25": "quality/mode_kl", "cifar10": "quality/fid", "stl10": "quality/fid"}

#: The metric that ranks a report's settings and picks its median seed: the first of these the report
#: has (the 2-D mixtures rank by modes covered, then by the high-quality fraction, as the first round's
#: reports did; their headline for sweeps stays the mode KL, which does not saturate at 8 of 8).
REPORT_RANKING = ("fid", "digits_fd", "isc_mean", "modes_covered", "high_quality_fraction", "mode_kl",
                  "geometry_score")

#: ``quality/<key>`` -> ``minimize`` | ``maximize`` for every compared metric (the W&B summary keeps its best)
METRIC_GOALS = {metric.key: metric.goal for metric in METRICS if metric.goal is not None}

#: dataset -> ``(headline key, goal)``
OBJECTIVES = {dataset: (key, BY_KEY[key].goal) for dataset, key in HEADLINE.items()}


def evaluation_reading(row: dict, key: str) -> float | None:
    """The value of ``key`` in one logged row, as tables and tests read it: the number where it is finite;
    for the mode KL where no sample counted (``modes_covered`` 0 of a logged ``n_modes``), ``log(n_modes)``
    (Note [an empty mode histogram reads as the worst]); None where nothing was measured.

    Note [an empty mode histogram reads as the worst]
        The KL of a mode histogram from uniform is at most ``log M``, reached with every sample on one
        mode; with no sample that counts the histogram is undefined and the metric logs NaN
        (:func:`stiefel_gan.metrics.toy.kl_from_uniform`). Such an evaluation is a generator that hit no
        mode at all, at least as bad as one that hit a single mode, so it reads as ``log M``. Dropped as
        "not measured", it would let a run that collapsed at its end be scored by its evaluations before
        the collapse.
    """
    value = row.get(key)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    modes, covered = row.get(PREFIX + "n_modes"), row.get(PREFIX + "modes_covered")
    if key == PREFIX + "mode_kl" and isinstance(modes, (int, float)) and modes >= 1 and covered == 0:
        return math.log(modes)
    return None


def goal_of(name: str) -> str | None:
    """``minimize`` / ``maximize`` for a metric name with or without the ``quality/`` prefix; None for a
    measurement setting or a name the table does not have."""
    metric = BY_NAME.get(name.removeprefix(PREFIX))
    return metric.goal if metric is not None else None
