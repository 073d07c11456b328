"""What the report computes before it formats anything: the quality keys and their directions (from the
one metric table, :mod:`stiefel_gan.measure.table`), per-seed statistics (final, last evaluations,
area under the curve), the median seed, the baseline and whether it learned, each variant's paired
difference from it, and the study's declared comparisons and contrasts with their verdicts.
"""

from __future__ import annotations

import difflib
import json
import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from ..config.schema import (
    STIEFEL_ONLY_KEYS,
    Regressor,
    ReportConfig,
    comparisons_problem,
    contrasts_problem,
    parse_regressor,
    regress_on_problem,
)
from ..measure.regression import ClusteredFit, clustered_least_squares
from ..measure.statistics import (
    LAST_EVALUATIONS,
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
from .discovery import SETTING_SEPARATOR, Run, lookup

#: what each of :data:`~stiefel_gan.config.schema.REPORT_STATISTICS` is called in a sentence and in a column
STATISTIC_NAMES = {"final": ("final value", "final"),
                   "last": (f"mean of the last {LAST_EVALUATIONS} evaluations", f"last {LAST_EVALUATIONS}"),
                   "area": ("area under the curve (its time average)", "AUC")}

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
    * modes covered (2-D mixtures, stacked digits): at least ``LEARNED_FRACTION`` of the modes (6 of 8,
      19 of 25, 750 of 1,000) at the end;
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
                  "seeds compare a variant with a baseline short of the rule (docs/report.md), not with a working SN.", ""]
    else:
        lines += ["The baseline learned in every seed (the rule: docs/report.md).", ""]
    return lines


def difference_from_baseline(runs: dict[str, list[Run]], label: str, baseline: Baseline, key: str,
                             statistic: str) -> PairedDifference:
    """Variant ``label`` minus the baseline on ``statistic`` of ``key``, paired by seed (no correction)."""
    return paired_difference(seed_statistic(runs[label], key, statistic),
                             seed_statistic(runs[baseline.label], key, statistic))


def report_settings(runs: dict[str, list[Run]], overrides: dict | None = None) -> ReportConfig:
    """The ``report`` section the runs were made with, with ``overrides`` (``stiefel-gan report``'s
    ``report.KEY=VALUE`` arguments) on top, checked against the variants found: a one-line ValueError when
    the runs declare different sections, a comparison or contrast the runs do not hold
    (:func:`~stiefel_gan.config.schema.comparisons_problem`, :func:`~stiefel_gan.config.schema.contrasts_problem`)
    or a ``report.regress_on`` they cannot give
    (:func:`regression_problem`; its logged keys only where the runs' rows were read). Runs made before
    the section existed carry none and declare nothing."""
    sections = {json.dumps(r.config["report"], sort_keys=True)
                for rs in runs.values() for r in rs if "report" in r.config}
    if len(sections) > 1:
        raise ValueError(f"runs with report sections {'; '.join(sorted(sections))} are not allowed in one report: "
                         "report the runs of one study (its config declares one report section)")
    report_config = ReportConfig(**{**(json.loads(sections.pop()) if sections else {}), **(overrides or {})})
    problem = (comparisons_problem(report_config.comparisons, set(runs), sn_variants(runs))
               or contrasts_problem(report_config.contrasts, set(runs), sn_variants(runs))
               or regression_problem(runs, report_config.regress_on))
    if problem is not None:
        raise ValueError(f"{problem} (the runs found)")
    return report_config


def _examples(keys, near: str) -> str:
    """A few of ``keys`` for a message: those closest to ``near`` first."""
    keys = sorted(keys)
    close = difflib.get_close_matches(near, keys, n=3, cutoff=0.5)
    return ", ".join(close + [k for k in keys if k not in close][:max(0, 4 - len(close))]) or "none"


def regression_problem(runs: dict[str, list[Run]], regress_on: list[str]) -> str | None:
    """Why the runs cannot give ``report.regress_on`` (one line), or None: its form and config keys
    (:func:`~stiefel_gan.config.schema.regress_on_problem`), a config key no run's config has, a logged
    key no run logged (or none at the ``@STEP`` named). Logged keys are checked only when some run's rows
    were read (:func:`~stiefel_gan.report.markdown.check_reports` reads them when a logged key is named)."""
    problem = regress_on_problem(regress_on)
    if problem is not None:
        return problem
    every = [r for rs in runs.values() for r in rs]
    logged = set().union(*(r.keys() for r in every)) if every else set()
    for entry in regress_on:
        regressor = parse_regressor(entry)
        if not regressor.logged:
            if not any(_has_config_key(r.config, regressor.key) for r in every):
                return f"report.regress_on entry {entry!r} is not allowed: no run's config has {regressor.key}"
        elif logged:
            if regressor.key not in logged:
                return (f"report.regress_on entry {entry!r} is not allowed: no run logged {regressor.key}; "
                        f"logged keys include {_examples(logged - {'step'}, regressor.key)}")
            steps = set().union(*(r.curve(regressor.key)[0] for r in every))
            if regressor.step is not None and regressor.step not in steps:
                return (f"report.regress_on entry {entry!r} is not allowed: no run logged {regressor.key} at step "
                        f"{regressor.step}; it was logged at steps {', '.join(map(str, sorted(steps)[:6]))}"
                        + (", ..." if len(steps) > 6 else ""))
    return None


def _has_config_key(config: dict, key: str) -> bool:
    try:
        lookup(config, key)
    except (KeyError, TypeError):
        return False
    return True


def regressor_value(run: Run, regressor: Regressor) -> tuple[float, str | None]:
    """``(value, None)``, or ``(NaN, why the run has none)``: a config key from the run's config (a
    spectrum key, :data:`~stiefel_gan.config.schema.STIEFEL_ONLY_KEYS`, only where ``disc.kind`` is
    ``stiefel``: another kind does not read it); a logged key's last finite value, or its value at
    ``regressor.step``; the natural log of a positive value for ``log(...)``."""
    if regressor.logged:
        by_step = dict(zip(*run.curve(regressor.key)))
        if regressor.step is None:
            value = by_step[max(by_step)] if by_step else math.nan
        else:
            value = by_step.get(regressor.step, math.nan)
        if math.isnan(value):
            return math.nan, f"{regressor.key} not logged" + ("" if regressor.step is None else f" at step {regressor.step}")
    else:
        kind = run.config["disc"]["kind"]
        if regressor.key in STIEFEL_ONLY_KEYS and kind != "stiefel":
            return math.nan, f"{regressor.key} not read by disc.kind={kind}"
        value = lookup(run.config, regressor.key) if _has_config_key(run.config, regressor.key) else None
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return math.nan, f"{regressor.key} not a number"
    if regressor.log:
        if not value > 0:
            return math.nan, f"{regressor.key} <= 0 under log"
        value = math.log(value)
    return float(value), None


@dataclass(frozen=True)
class HeadlineRegression:
    """:func:`headline_regression`: the fit (None where it could not be made, ``problem`` says why), the
    regressors as written, and how many runs were left out for each reason."""

    key: str
    statistic: str
    regressors: tuple[str, ...]
    fit: ClusteredFit | None
    left_out: dict[str, int]
    problem: str | None = None


def headline_regression(runs: dict[str, list[Run]], key: str, report_config: ReportConfig) -> HeadlineRegression | None:
    """``report_config.statistic`` of ``key`` per run fitted on ``report_config.regress_on`` with an
    intercept over every run that has all of them (:func:`regressor_value`), fitted in each seed with a t
    interval over the seeds' fits (:func:`~stiefel_gan.measure.regression.clustered_least_squares`). None when
    nothing is named."""
    if not report_config.regress_on:
        return None
    regressors = [parse_regressor(entry) for entry in report_config.regress_on]
    rows, outcomes, seeds, left_out = [], [], [], defaultdict(int)
    for rs in runs.values():
        for run in rs:
            values = [regressor_value(run, regressor) for regressor in regressors]
            outcome = getattr(curve_statistics(run, key), report_config.statistic)
            why = next((reason for _, reason in values if reason is not None),
                       None if math.isfinite(outcome) else f"no {key}")
            if why is not None:
                left_out[why] += 1
                continue
            rows.append([value for value, _ in values])
            outcomes.append(outcome)
            seeds.append(run.seed)
    names = tuple(map(str, regressors))
    try:
        fit = clustered_least_squares(np.asarray(rows, dtype=np.float64).reshape(len(rows), len(names)), outcomes,
                                      seeds, names)
    except ValueError as error:
        return HeadlineRegression(key, report_config.statistic, names, None, dict(left_out), str(error))
    return HeadlineRegression(key, report_config.statistic, names, fit, dict(left_out))


def headline_key(runs: dict[str, list[Run]]) -> str:
    """The headline quality metric of the runs' dataset (:data:`~stiefel_gan.measure.table.HEADLINE`; a
    report holds one dataset): what the declared comparisons test."""
    (dataset,) = {r.config["data"]["name"] for rs in runs.values() for r in rs}
    return DATASET_HEADLINES[dataset]


def declared_decisions(runs: dict[str, list[Run]], baseline: Baseline, key: str,
                       report_config: ReportConfig) -> dict[tuple[str, str], TestedDifference]:
    """The study's declared family, ``{(A, B): A - B}`` on ``report_config.statistic`` of ``key`` paired by the
    seeds both ran: each of ``report_config.comparisons`` minus the baseline, then each
    ``report_config.contrasts`` pair ``[A, B]`` (two variants, neither SN's), all tested together by Holm's
    correction at ``report_config.alpha`` (:func:`~stiefel_gan.measure.statistics.holm_decisions`): adding a
    contrast raises every member's threshold, as adding a comparison does. The only verdicts a report gives;
    empty when nothing is declared."""
    pairs = [(label, baseline.label) for label in report_config.comparisons]
    pairs += [(first, second) for first, second in report_config.contrasts]
    if not pairs:
        return {}
    return holm_decisions({(first, second): paired_difference(seed_statistic(runs[first], key, report_config.statistic),
                                                              seed_statistic(runs[second], key, report_config.statistic))
                           for first, second in pairs}, report_config.alpha)


def format_number(value: float) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4g}"
