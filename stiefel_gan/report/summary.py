"""What the report computes before it formats anything: the quality keys and their directions (from the
one metric table, :mod:`stiefel_gan.measure.table`), per-seed statistics (final, last evaluations,
area under the curve), the median seed, the baseline and whether it learned, each variant's paired
difference from it, and the study's declared comparisons with their verdicts.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from ..config.schema import ReportConfig, comparisons_problem
from ..measure.statistics import (
    PairedDifference,
    TestedDifference,
    curve_area,
    holm_decisions,
    last_mean,
    paired_difference,
    summarize,
)
from ..measure.table import HEADLINE as DATASET_HEADLINES
from ..measure.table import METRICS, PREFIX, REPORT_RANKING, goal_of
from .discovery import SETTING_SEPARATOR, Run

#: losses and D's mean outputs: their own table, in this order
HEADLINE = ("loss/d", "loss/g", "d/real", "d/fake")

#: per-layer or bookkeeping keys, shown in the per-layer tables and figures or not at all
PER_LAYER_PREFIXES = ("sigma_max/", "drift/", "tau/", "eps/", "sigma/", "lr/", "perf/", "grad_norm/",
                      "spectrum/", "lambda/", "operator_norm/", "fft_norm/", "reshape_norm/", "norm_ratio/",
                      "fit_tau/", "fit_eps/", "fit_rmse/")

#: ``quality/`` keys that say how a number was measured (protocol sample counts, the Geometry Score's
#: gamma, the number of modes) or a spread within one run (IS / KID std): listed, not compared
MEASUREMENT_SETTINGS = {metric.name for metric in METRICS if metric.goal is None}

#: a variant with more seeds than this shows its median seed (by the primary metric) in the figures
MAX_SEEDS_SHOWN = 5

#: the baseline "learned" (Note [did the baseline learn]): a lower-is-better metric fell to at most this
#: fraction of its first evaluation; modes covered reached at least this fraction of the modes
LEARNED_FRACTION = 0.75


def metric_name(key: str) -> str:
    return key[len(PREFIX):] if key.startswith(PREFIX) else key


def better_direction(key: str) -> str | None:
    """``"lower"``, ``"higher"`` or None (unknown) for a quality key."""
    return {"minimize": "lower", "maximize": "higher", None: None}[goal_of(key)]


def quality_keys(runs: dict[str, list[Run]]) -> list[str]:
    """The compared quality metrics, the primary one first (then alphabetical)."""
    keys = {k for rs in runs.values() for r in rs for k in r.keys()
            if k.startswith(PREFIX) and metric_name(k) not in MEASUREMENT_SETTINGS}
    primary = primary_quality_key(keys)
    return sorted(keys, key=lambda k: (k != primary, k))


def primary_quality_key(keys) -> str | None:
    for name in REPORT_RANKING:
        if PREFIX + name in keys:
            return PREFIX + name
    return min(keys) if keys else None


@dataclass(frozen=True)
class CurveStatistics:
    """One run's statistics of one metric's curve."""

    final: float
    last: float
    area: float


def curve_statistics(run: Run, key: str) -> CurveStatistics:
    steps, values = run.curve(key)
    if not values:
        return CurveStatistics(math.nan, math.nan, math.nan)
    return CurveStatistics(values[-1], last_mean(values), curve_area(steps, values))


def seed_statistic(runs: list[Run], key: str, statistic: str) -> dict[int, float]:
    """``{seed: statistic}``; a seed run twice in one variant counts once, as the mean of its runs."""
    values: dict[int, list[float]] = defaultdict(list)
    for run in runs:
        values[run.seed].append(getattr(curve_statistics(run, key), statistic))
    return {seed: float(np.mean(v)) for seed, v in values.items()}


def ranking_value(runs: list[Run], key: str) -> float:
    """Mean final value, signed so that smaller is better (NaN last)."""
    mean = summarize(list(seed_statistic(runs, key, "final").values())).mean
    if math.isnan(mean):
        return math.inf
    return -mean if better_direction(key) == "higher" else mean


def median_run(runs: list[Run], key: str | None) -> Run:
    """The run whose final ``key`` is the (lower) median over the variant's runs (the first run without ``key``)."""
    if key is None:
        return runs[0]
    ranked = sorted(runs, key=lambda r: (math.isnan(r.final(key)), r.final(key)))
    return ranked[(len(ranked) - 1) // 2]


def shown_runs(runs: list[Run], key: str | None) -> list[Run]:
    """Every seed, or only the median one when there are more than :data:`MAX_SEEDS_SHOWN`."""
    return runs if len(runs) <= MAX_SEEDS_SHOWN else [median_run(runs, key)]


def sn_variants(runs: dict[str, list[Run]]) -> set[str]:
    """The labels whose every run has ``disc.kind=sn``: the baseline and its settings."""
    return {label for label, rs in runs.items() if all(r.config["disc"]["kind"] == "sn" for r in rs)}


@dataclass(frozen=True)
class Baseline:
    label: str | None
    reason: str


def choose_baseline(runs: dict[str, list[Run]], key: str | None) -> Baseline:
    """The SN baseline: the variant whose ``disc.kind`` is ``sn`` (study contract).

    Several SN variants: the one labelled ``sn``; else, in a tuning study, SN's best setting by the
    primary metric (each method is compared with tuned SN); else the first.
    """
    sn_labels = sn_variants(runs)
    sn = [label for label in runs if label in sn_labels]
    if not sn:
        return Baseline(None, "no variant has disc.kind=sn: differences from SN are not shown")
    if len(sn) == 1:
        return Baseline(sn[0], "the variant with disc.kind=sn")
    if "sn" in sn:
        return Baseline("sn", f"the variant labelled sn (of {len(sn)} with disc.kind=sn)")
    if key is not None and all(SETTING_SEPARATOR in label for label in sn):
        best = min(sn, key=lambda label: ranking_value(runs[label], key))
        return Baseline(best, f"SN's best setting by the final {key} (of {len(sn)} SN settings)")
    return Baseline(sn[0], f"the first of {len(sn)} variants with disc.kind=sn ({', '.join(sn)})")


def baseline_learned(run: Run, key: str) -> bool | None:
    """Whether one baseline run learned by ``key`` (None: the rule does not cover ``key``).

    Note [did the baseline learn]
    ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    A difference from a baseline that never left its initial state compares nothing, so the report
    checks the baseline first, seed by seed, on the primary metric:

    * lower is better (FD, FID, ...): the final value is at most ``LEARNED_FRACTION`` of the first
      evaluation's (the distance fell by a quarter or more);
    * modes covered (2-D mixtures): at least ``LEARNED_FRACTION`` of the mixture's modes (6 of 8,
      19 of 25) at the end;
    * higher is better otherwise (IS, ...): the final value exceeds the first.
    """
    steps, values = run.curve(key)
    if not values:
        return None
    name, direction = metric_name(key), better_direction(key)
    if name == "modes_covered":
        n_modes = run.final(PREFIX + "n_modes")
        return None if math.isnan(n_modes) else values[-1] >= LEARNED_FRACTION * n_modes
    if direction == "lower":
        return values[-1] <= LEARNED_FRACTION * values[0]
    if direction == "higher":
        return values[-1] > values[0]
    return None


def baseline_check(runs: dict[str, list[Run]], baseline: Baseline, key: str | None) -> list[str]:
    """A paragraph saying, seed by seed, whether the baseline learned (Note [did the baseline learn])."""
    if baseline.label is None or key is None:
        return []
    verdicts = [(run, baseline_learned(run, key)) for run in sorted(runs[baseline.label], key=lambda r: r.seed)]
    if all(learned is None for _, learned in verdicts):
        return []
    per_seed = "; ".join(f"seed {run.seed}: {format_number(run.curve(key)[1][0])} → {format_number(run.final(key))}"
                         + ("" if learned else " (did not learn)") for run, learned in verdicts)
    failed = sum(learned is False for _, learned in verdicts)
    lines = ["## Did the baseline learn?", "", f"{key} of **{baseline.label}**, first evaluation → final: {per_seed}.", ""]
    if failed:
        lines += [f"**The baseline did not learn in {failed} of {len(verdicts)} seeds**: differences from it in those "
                  "seeds compare a variant with a baseline that never left its start, not with a working SN.", ""]
    else:
        lines += ["The baseline learned in every seed (the rule: docs/report.md).", ""]
    return lines


def difference_from_baseline(runs: dict[str, list[Run]], label: str, baseline: Baseline, key: str,
                             statistic: str) -> PairedDifference:
    """Variant ``label`` minus the baseline on ``statistic`` of ``key``, paired by seed (no correction)."""
    return paired_difference(seed_statistic(runs[label], key, statistic),
                             seed_statistic(runs[baseline.label], key, statistic))


def report_settings(runs: dict[str, list[Run]]) -> ReportConfig:
    """The ``report`` section the runs were made with, checked against the variants found: a one-line
    ValueError when the runs declare different sections or a comparison the runs do not hold
    (:func:`~stiefel_gan.config.schema.comparisons_problem`). Runs made before the section existed carry
    none and declare nothing."""
    sections = {json.dumps(r.config["report"], sort_keys=True)
                for rs in runs.values() for r in rs if "report" in r.config}
    if len(sections) > 1:
        raise ValueError(f"runs with report sections {'; '.join(sorted(sections))} are not allowed in one report: "
                         "report the runs of one study (its config declares one report section)")
    report_config = ReportConfig(**json.loads(sections.pop())) if sections else ReportConfig()
    problem = comparisons_problem(report_config.comparisons, set(runs), sn_variants(runs))
    if problem is not None:
        raise ValueError(f"{problem} (the runs found)")
    return report_config


def headline_key(runs: dict[str, list[Run]]) -> str:
    """The headline quality metric of the runs' dataset (:data:`~stiefel_gan.measure.table.HEADLINE`; a
    report holds one dataset): what the declared comparisons test."""
    (dataset,) = {r.config["data"]["name"] for rs in runs.values() for r in rs}
    return DATASET_HEADLINES[dataset]


def declared_decisions(runs: dict[str, list[Run]], baseline: Baseline, key: str,
                       report_config: ReportConfig) -> dict[str, TestedDifference]:
    """The study's declared comparisons (``report_config.comparisons``), each variant minus the baseline on
    ``report_config.statistic`` of ``key`` paired by seed, tested together by Holm's correction at
    ``report_config.alpha`` (:func:`~stiefel_gan.measure.statistics.holm_decisions`): the only verdicts a
    report gives. Empty when nothing is declared."""
    if not report_config.comparisons:
        return {}
    return holm_decisions({label: difference_from_baseline(runs, label, baseline, key, report_config.statistic)
                           for label in report_config.comparisons}, report_config.alpha)


def format_number(value: float) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4g}"
