"""Local reports from finished runs: ``report.md`` with statistics over seeds, and PNG figures.

Runs are grouped into *variants*: by the config's ``variant`` label where a study set one (the
``configs/variant/*`` presets), otherwise by what differs between the runs' configs apart from the seed
and names. Within a variant the runs are seeds. The report (documented table by table in
``docs/report.md``):

1. **Sample quality first**, one table per quality metric: per variant the number of seeds ``n``, the
   final value, the mean of the last :data:`~stiefel_gan.measure.statistics.LAST_EVALUATIONS` evaluations and the
   area under the quality curve (its time average, :func:`~stiefel_gan.measure.statistics.curve_area`), each as
   mean ± std over seeds; and each one's difference from the SN baseline, paired by seed, with its
   two-sided sign-flip p-value and its size in baseline seed SDs
   (:func:`~stiefel_gan.measure.statistics.paired_difference`). Only the comparisons the study declared
   (``report.comparisons``) and the contrasts between two variants it declared (``report.contrasts``:
   ``A - B`` paired by seed) get a verdict word, after Holm's correction across them together
   (:func:`~stiefel_gan.report.summary.declared_decisions`), in their own section (and a comparison in its
   cell).
2. In a tuning study (labels ``<method>@<setting>``), per method its best and its median setting.
3. Losses and D's outputs; then the scalar diagnostics (Lipschitz bounds, saturation); each in its own table.
4. Per layer: the spectrum curve fitted to each layer's reshaped spectrum, and the operator-norm and
   FFT-norm ratios to the reshaped norm (SN vs fair SN first).
5. Figures: curves with seed bands, samples, squared spectra (Miyato's Fig. 3 view), reshaped vs
   operator spectra, gradient norms; every seed, or the median seed when a variant has more than
   :data:`MAX_SEEDS_SHOWN` (said in the caption).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from pathlib import Path

from ..config.paths import REPORT_FILE
from ..config.seeds import fewest_pairs_for_a_verdict, smallest_sign_flip_p_value
from ..config.schema import REPORT_STATISTICS, ReportConfig, parse_regressor
from ..measure.regression import INTERCEPT, Coefficient
from ..measure.statistics import (
    EXACT_SIGN_FLIP_PAIRS,
    LAST_EVALUATIONS,
    PairedDifference,
    Summary,
    TestedDifference,
    last_mean,
    summarize,
)
from ..run.records import read_metrics
from .discovery import SETTING_SEPARATOR, Run, group_variants, load_config, load_runs, records_by_layer
from .floor import Floor, headline_floor, within_floor
from .figures import plot_curves, plot_gradient_norms, plot_operator_spectra, plot_samples, plot_spectra
from .tuning import chosen_elsewhere, runs_on_seeds, study_dir, tune, tuning_protocol, tuning_section
from .summary import (
    HEADLINE,
    MAX_SEEDS_SHOWN,
    MEASUREMENT_SETTINGS,
    PER_LAYER_PREFIXES,
    PREFIX,
    STATISTIC_NAMES,
    Baseline,
    HeadlineRegression,
    baseline_check,
    better_direction,
    choose_baseline,
    declared_decisions,
    difference_from_baseline,
    format_number,
    headline_key,
    headline_regression,
    metric_name,
    quality_keys,
    ranking_value,
    report_settings,
    seed_statistic,
)


def _summary(summary: Summary) -> str:
    if summary.n == 0:
        return "-"
    if summary.n == 1:
        return format_number(summary.mean)
    return f"{format_number(summary.mean)} ± {float(summary.std):.2g}"


def _difference(difference: PairedDifference, lost: str = "") -> str:
    """A difference as a number: the mean, its uncorrected sign-flip p-value and its size in baseline
    seed SDs (left out where undefined); never a verdict. ``lost`` says which seeds failed runs took from
    the variant or the baseline (the numbers stand on the seeds that are left)."""
    if difference.n == 0:
        return "-"
    size = f", {difference.effect:+.2g} SD" if math.isfinite(difference.effect) else ""
    text = f"{difference.mean:+.4g} (p {difference.p_value:.3g}{size})"
    return f"{text} ({lost})" if lost else text


def _verdict(tested: TestedDifference, direction: str | None, in_floor: bool = False) -> str:
    """The verdict of a declared comparison, with its Holm-adjusted p-value: **better** / **worse** (or
    **higher** / **lower** for a metric without a direction) where that is at most alpha, else inconclusive;
    ``in_floor``: both variants sit within the metric's calibration floor, so nothing is called
    (Note [the floor])."""
    holm = f"(Holm p {tested.adjusted_p_value:.3g})"
    if in_floor:
        return f"within the floor: not called {holm}"
    if not tested.significant:
        return f"inconclusive {holm}"
    if direction is None:
        return ("**higher** " if tested.difference.mean > 0 else "**lower** ") + holm
    improved = (tested.difference.mean < 0) == (direction == "lower")
    return ("**better** " if improved else "**worse** ") + holm


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(row) + " |" for row in rows])


def _step_range(first: int, last: int) -> str:
    return f"step {last}" if first == last else f"steps {first}-{last}"


def statistic_steps(runs: dict[str, list[Run]], key: str) -> dict[str, str]:
    """Per statistic of :data:`~stiefel_gan.config.schema.REPORT_STATISTICS`, the evaluation steps of ``key``
    it is taken over, from the runs' own records (``"steps 250-500"``), or ``"steps vary"`` where runs
    differ: the final value is the last evaluation, ``last`` the last :data:`LAST_EVALUATIONS`, the area
    the whole curve."""
    ranges: dict[str, set[str]] = defaultdict(set)
    for rs in runs.values():
        for run in rs:
            steps = run.curve(key)[0]
            if steps:
                ranges["final"].add(_step_range(steps[-1], steps[-1]))
                ranges["last"].add(_step_range(steps[-LAST_EVALUATIONS:][0], steps[-1]))
                ranges["area"].add(_step_range(steps[0], steps[-1]))
    return {s: (next(iter(ranges[s])) if len(ranges[s]) == 1 else "steps vary") for s in REPORT_STATISTICS
            if ranges[s]}


def quality_tables(runs: dict[str, list[Run]], keys: list[str], baseline: Baseline, report_config: ReportConfig,
                   decisions: dict[tuple[str, str], TestedDifference], headline: str,
                   lost: dict[str, str] | None = None, floor: Floor | None = None) -> list[str]:
    """One table per quality key; the cells of the declared comparisons (``decisions`` at ``(label, baseline)``:
    row ``label``, table ``headline``, column ``report_config.statistic``) carry their verdict, no other cell
    does (a declared contrast has no cell: its verdict is in :func:`declared_section` only).
    ``lost`` (:func:`lost_seeds`) marks the variants that lost seeds to runs that did not finish, in their
    ``n`` and in each difference that pairs them."""
    lost = lost or {}
    lines = []
    for key in keys:
        direction = better_direction(key)
        lines += ["", f"### {key}" + (f" ({direction} is better)" if direction else ""), ""]
        steps = statistic_steps(runs, key)
        header = ["variant", "n"] + [STATISTIC_NAMES[s][1] + (f" ({steps[s]})" if s in steps else "")
                                     for s in REPORT_STATISTICS]
        if baseline.label is not None:
            header += [f"Δ {STATISTIC_NAMES[s][1]}" + (f" vs {baseline.label}" if s == REPORT_STATISTICS[0] else "")
                       for s in REPORT_STATISTICS]
        rows = []
        for label, rs in runs.items():
            summaries = [summarize(list(seed_statistic(rs, key, s).values())) for s in REPORT_STATISTICS]
            n = str(summaries[0].n) + (f" ({lost[label]})" if label in lost else "")
            row = [label, n] + [_summary(s) for s in summaries]
            if baseline.label is not None:
                if label == baseline.label:
                    row += ["baseline"] * len(REPORT_STATISTICS)
                else:
                    both = "; ".join(f"{name}: {lost[name]}" for name in (label, baseline.label) if name in lost)
                    for statistic in REPORT_STATISTICS:
                        cell = _difference(difference_from_baseline(runs, label, baseline, key, statistic), both)
                        declared = decisions.get((label, baseline.label))
                        if key == headline and statistic == report_config.statistic and declared is not None:
                            cell += " " + _verdict(declared, direction, within_floor(runs, label, baseline.label, floor))
                        row.append(cell)
            rows.append(row)
        lines += _table(header, rows)
    return lines


def _seeds_floor(alpha: float, declared: int) -> str:
    """The sentence that says how many seeds a verdict needs (Note [sign-flip test of paired differences]),
    for a family of ``declared`` comparisons and contrasts."""
    floors = ", ".join(f"{n} seeds: {smallest_sign_flip_p_value(n):.4g}" for n in (3, 5, 6))
    single = fewest_pairs_for_a_verdict(alpha)
    text = (f"With n seeds the smallest two-sided sign-flip p-value is 2/2^n = 2^(1-n) ({floors}), so a verdict "
            f"at alpha {alpha:g} needs at least {single} seeds for a single declared comparison")
    if declared > 1:
        text += (f", and with {declared} declared (comparisons and contrasts together), Holm's first threshold is "
                 f"alpha/{declared}: at least {fewest_pairs_for_a_verdict(alpha, declared)} seeds")
    return text + "."


def _tested_name(pair: tuple[str, str], baseline: Baseline) -> str:
    """A declared comparison by its variant's label, a contrast as ``A − B``."""
    first, second = pair
    return first if second == baseline.label else f"{first} − {second}"


def declared_section(runs: dict[str, list[Run]], baseline: Baseline, report_config: ReportConfig,
                     decisions: dict[tuple[str, str], TestedDifference], headline: str,
                     floor: Floor | None = None) -> list[str]:
    """The declared family of ``headline`` (:func:`~stiefel_gan.report.summary.declared_decisions`): how many
    comparisons and contrasts were tested, how, each one's numbers and verdict, and the fewest seeds a
    verdict needs."""
    lines = ["## Declared comparisons", ""]
    if not decisions:
        return lines + ["None: the study's config declares no `report.comparisons` and no `report.contrasts`, so "
                        "no cell of this report carries a verdict; every Δ is a number with its uncorrected "
                        "p-value. " + _seeds_floor(report_config.alpha, 1), ""]
    direction = better_direction(headline)
    m = len(decisions)
    comparisons, contrasts = len(report_config.comparisons), len(report_config.contrasts)
    family = []
    if comparisons:
        family.append(f"{comparisons} comparison(s) with the baseline (`report.comparisons`: each variant minus "
                      f"**{baseline.label}**)")
    if contrasts:
        family.append(f"{contrasts} contrast(s) between two variants (`report.contrasts`: `variant` minus `minus`)")
    lines += [f"{m} test(s) declared with the study and tested here as one family: {' and '.join(family)}, on the "
              f"{STATISTIC_NAMES[report_config.statistic][0]} of {headline}"
              + (f" ({direction} is better)" if direction else "")
              + ", paired by the seeds both ran; two-sided sign-flip p-values (exact up to "
              f"{EXACT_SIGN_FLIP_PAIRS} seeds), Holm's step-down correction over the {m} together, called where "
              f"the adjusted p-value is at most alpha = {report_config.alpha:g}. Δ in SDs: the mean difference "
              "in seed SDs of the `minus` variant (the baseline's, for a comparison). Only these get a verdict; "
              "every Δ in the tables is a number with its uncorrected p-value.", ""]
    rows = [[first, second, str(t.difference.n), format_number(t.difference.mean),
             format_number(t.difference.p_value), format_number(t.adjusted_p_value),
             format_number(t.difference.effect), _verdict(t, direction, within_floor(runs, first, second, floor))]
            for (first, second), t in decisions.items()]
    lines += _table(["variant", "minus", "n", "Δ mean", "p", "Holm p", "Δ in SDs of minus", "verdict"], rows)
    lines += ["", _seeds_floor(report_config.alpha, m)]
    alpha = report_config.alpha
    first_step, last_step = fewest_pairs_for_a_verdict(alpha, m), fewest_pairs_for_a_verdict(alpha)
    if all(t.difference.n < first_step for t in decisions.values()):
        lines += [f"No declared test here has {first_step} or more paired seeds, so Holm's first step cannot "
                  "pass: nothing could be called, whatever the differences."]
    elif short := [_tested_name(pair, baseline) for pair, t in decisions.items() if t.difference.n < last_step]:
        lines += [f"{', '.join(short)}: fewer than {last_step} paired seeds, so no verdict was possible for it, "
                  "whatever the difference."]
    return lines + [""]


def _interval(coefficient: Coefficient) -> str:
    if math.isnan(coefficient.low):
        return "-"
    return f"[{format_number(coefficient.low)}, {format_number(coefficient.high)}]"


def regression_sentence(coefficient: Coefficient, regression: HeadlineRegression) -> str:
    """Whether one coefficient's interval excludes 0, in words, with the other regressors named as held fixed."""
    others = [name for name in regression.regressors if name != coefficient.name]
    held = f" at matched {', '.join(others)}" if others else ""
    level = f"{regression.fit.confidence:.0%}"
    if math.isnan(coefficient.low):
        return (f"- `{coefficient.name}`: {format_number(coefficient.estimate)} per unit{held}; no interval "
                "(fewer than two seeds fitted on their own).")
    if coefficient.excludes_zero:
        return (f"- `{coefficient.name}` explains {coefficient.estimate:+.4g} of {regression.key} per unit{held}: "
                f"{level} interval {_interval(coefficient)}, which excludes 0.")
    return (f"- `{coefficient.name}`: no effect detected: the {level} interval {_interval(coefficient)} contains 0 "
            f"(estimate {coefficient.estimate:+.4g} per unit{held}).")


def regression_section(regression: HeadlineRegression | None) -> list[str]:
    """``report.regress_on``: the fit's table (coefficient, estimate, interval, per-seed sd, df, runs, seeds),
    R^2, the runs and seeds left out and why, and a sentence per regressor saying whether its interval
    excludes 0."""
    if regression is None:
        return []
    left = sum(regression.left_out.values())
    left_text = (f" {left} run(s) left out: " + "; ".join(f"{count} with {why}" for why, count in
                                                           sorted(regression.left_out.items())) + "."
                 if left else " No run was left out.")
    lines = ["## Regression", "",
             f"The {STATISTIC_NAMES[regression.statistic][0]} of {regression.key} per run (`report.statistic`), "
             f"fitted by least squares on {', '.join(f'`{name}`' for name in regression.regressors)} with an "
             "intercept (`report.regress_on`) over every run that has them all: a config key is the run's value "
             "(spectrum keys only for disc.kind=stiefel), a logged key its last value (`@STEP`: its value at that "
             "step), `log(...)` its natural log." + left_text]
    if regression.fit is None:
        return lines + ["", f"Not fitted: {regression.problem}.", ""]
    fit = regression.fit
    if fit.n_clusters == 0:
        method = ("No seed's runs can be fitted on their own (fewer runs than coefficients, or a collinear design "
                  "within the seed): the estimate is the pooled fit of all runs, without an interval.")
    else:
        method = (f"The model is fitted in each seed on its own runs (seeds are the independent units: a seed's runs "
                  f"share its data order, initialization and evaluation latents); the estimate is the mean of the "
                  f"{fit.n_clusters} seeds' fits")
        if fit.n_clusters >= 2:
            method += (f", the interval Student t over them: estimate ± t({1 / 2 + fit.confidence / 2:.3g}, "
                       f"df = {fit.degrees_of_freedom}) = {fit.t_quantile:.4g} × per-seed sd / √{fit.n_clusters}")
        method += " (docs/report.md, \"Regression\")."
        if fit.n_clusters_left_out:
            method += (f" {fit.n_clusters_left_out} seed(s) whose runs cannot be fitted on their own (fewer runs "
                       "than coefficients, or a collinear design within the seed) are left out.")
    lines += ["", method, ""]
    rows = [[c.name, format_number(c.estimate), _interval(c), format_number(c.per_seed_sd),
             str(fit.degrees_of_freedom) if fit.n_clusters >= 2 else "-", str(fit.n_observations), str(fit.n_clusters)]
            for c in fit.coefficients]
    lines += _table(["coefficient", "estimate", f"{fit.confidence:.0%} interval", "per-seed sd", "df", "n runs",
                     "n seeds"], rows)
    lines += ["", f"R² = {format_number(fit.r_squared)}.", ""]
    lines += [regression_sentence(c, regression) for c in fit.coefficients if c.name != INTERCEPT]
    return lines + [""]


def tuning_table(runs: dict[str, list[Run]], key: str | None) -> list[str]:
    """Per method of a tuning study (labels ``<method>@<setting>``): its best and its median setting."""
    methods: dict[str, list[str]] = defaultdict(list)
    for label in runs:
        if SETTING_SEPARATOR in label:
            methods[label.split(SETTING_SEPARATOR, 1)[0]].append(label)
    if not methods or key is None:
        return []
    rows = []
    for method, labels in methods.items():
        ranked = sorted(labels, key=lambda label: ranking_value(runs[label], key))
        best, median = ranked[0], ranked[(len(ranked) - 1) // 2]
        rows.append([method, str(len(labels))]
                    + [cell for label in (best, median) for cell in
                       (label.split(SETTING_SEPARATOR, 1)[1],
                        _summary(summarize(list(seed_statistic(runs[label], key, "final").values()))))])
    return (["", f"## Tuning: best and median setting per method (by the final {key}, mean over seeds)", "",
             "The median is the lower median of the settings ranked by that mean; a method's best setting "
             "is its own tuned value, its median what an untuned choice would give.", ""]
            + _table(["method", "settings", "best setting", "its final", "median setting", "its final"], rows))


def scalar_table(runs: dict[str, list[Run]], keys: list[str], with_last: bool) -> list[str]:
    """Per variant and key: the final value's mean ± std over seeds, and with ``with_last`` the mean over
    seeds of each run's mean of its last logged values."""
    header = ["variant", "n"] + keys
    rows = []
    for label, rs in runs.items():
        cells = []
        for key in keys:
            finals = summarize([r.final(key) for r in rs])
            cell = _summary(finals)
            if with_last and finals.n:
                lasts = summarize([last_mean(r.curve(key)[1]) for r in rs if r.curve(key)[1]])
                cell += f" (last {LAST_EVALUATIONS}: {format_number(lasts.mean)})"
            cells.append(cell)
        rows.append([label, str(len(rs))] + cells)
    return _table(header, rows)


def _sn_first(labels: list[str], runs: dict[str, list[Run]]) -> list[str]:
    kind = {label: runs[label][0].config["disc"]["kind"] for label in labels}
    order = {"sn": 0, "fair_sn": 1}
    return sorted(labels, key=lambda label: order.get(kind[label], 2))


def fit_table(runs: dict[str, list[Run]]) -> list[str]:
    """Per layer and variant, the spectrum curve fitted to the last diagnostics step's reshaped spectrum, and
    next to it the fit at step 0 where the runs recorded one: a trained spectrum that is flat because it
    never moved from a flat start reads differently from one that became flat."""
    records, initial = records_by_layer(runs), records_by_layer(runs, initial=True)
    layers = [layer for layer, per in records.items() if any("fit" in r for rs in per.values() for r in rs)]
    if not layers:
        return []
    labels = list(runs)

    def fitted(layer_records: list[dict]) -> str | None:
        fits = [r["fit"] for r in layer_records if "fit" in r]
        if not fits:
            return None
        tau, eps = summarize([f["tau"] for f in fits]), summarize([f["eps"] for f in fits])
        return f"τ {_summary(tau)}, ε {_summary(eps)} (rmse {format_number(summarize([f['rmse'] for f in fits]).mean)})"

    rows = []
    for layer in layers:
        row = [layer]
        for label in labels:
            trained = fitted(records[layer].get(label, []))
            start = fitted(initial.get(layer, {}).get(label, []))
            row.append("-" if trained is None else trained if start is None else f"{trained}; step 0: {start}")
        rows.append(row)
    return (["", "## Spectrum shape per layer (last diagnostics step; step 0 beside it where recorded)", "",
             "The curve ε + (1 - ε)(1 - t)^τ of docs/design.md fitted by least squares to each layer's reshaped "
             "singular values divided by the largest (mean ± std over seeds; rmse: RMS residual). τ < 1 is "
             "concave; in Miyato's squared view (spectra.png) the curve is squared and concave for τ < 0.5. "
             "\"step 0\": the same fit to the spectrum before D's first update, what training moved it from.", ""]
            + _table(["layer"] + labels, rows))


def norm_ratio_tables(runs: dict[str, list[Run]]) -> list[str]:
    records = records_by_layer(runs)
    convs = [layer for layer, per in records.items() if any("input_size" in r for rs in per.values() for r in rs)]
    if not convs:
        return []
    labels = _sn_first(list(runs), runs)
    lines = ["", "## Operator norm and FFT norm relative to the reshaped norm, per conv layer", "",
             "operator / reshaped: the largest singular value of the real (zero-padded, strided) convolution over "
             "that of the reshaped kernel, which SN divides by; FFT / reshaped: the same for the circular, "
             "stride-1 convolution (Sedghi et al.). Last diagnostics step, mean ± std over seeds."]
    for title, numerator in (("operator / reshaped", "operator_norm"), ("FFT / reshaped", "fft_norm")):
        rows = []
        for layer in convs:
            row = [layer]
            for label in labels:
                ratios = [r[numerator] / r["reshaped"][0] for r in records[layer].get(label, [])
                          if numerator in r and r["reshaped"] and r["reshaped"][0] > 0]
                row.append(_summary(summarize(ratios)))
            rows.append(row)
        lines += ["", f"### {title}", ""] + _table(["layer"] + labels, rows)
    return lines


def lost_seeds(every: dict[str, list[Run]]) -> dict[str, str]:
    """Per variant whose runs did not all finish, the seeds left and what ended the others:
    ``"2 of 3 seeds; 1 diverged"``. A seed counts when one of its runs finished."""
    lost = {}
    for label, rs in every.items():
        seeds, kept = {r.seed for r in rs}, {r.seed for r in rs if r.finished}
        if kept != seeds:
            ended = Counter(r.status["status"] for r in rs if r.seed not in kept)
            lost[label] = (f"{len(kept)} of {len(seeds)} seeds; "
                           + ", ".join(f"{count} {status}" for status, count in sorted(ended.items())))
    return lost


#: beside the headline in the report's first quality table: the fidelity / diversity split of Kynkaanniemi
#: et al., which an FD alone does not show (a G that draws class means has a fair FD, precision 1, recall 0)
FIDELITY_DIVERSITY = ("quality/precision", "quality/recall")


def headline_table(runs: dict[str, list[Run]], headline: str, floor: Floor | None) -> list[str]:
    """Final headline, precision and recall per variant (mean ± std over seeds) in one table, with the
    floor's line under it; empty where the runs logged no precision / recall (datasets other than the
    digits)."""
    every_key = set().union(*(r.keys() for rs in runs.values() for r in rs))
    keys = [headline, *(k for k in FIDELITY_DIVERSITY if k in every_key)]
    if len(keys) == 1 or headline not in every_key:
        return []
    rows = [[label, str(len(rs))] + [_summary(summarize(list(seed_statistic(rs, key, "final").values()))) for key in keys]
            for label, rs in runs.items()]
    lines = ["", f"### At a glance: {', '.join(keys)} (final, mean ± std over seeds)", ""]
    lines += _table(["variant", "n", *keys], rows)
    if floor is not None:
        lines += ["", f"Floor of {floor.key}: {floor.text()}."]
    return lines


def floor_lines(floor: Floor | None) -> list[str]:
    """The calibration floor of the headline at the runs' settings, and what it rules out."""
    if floor is None:
        return []
    return [f"Calibration floor of {floor.key} at these runs' data and metric settings: {floor.text()}. A variant "
            "whose mean final value lies within it is as good as the metric can tell; a declared comparison of two "
            "such variants is not called (docs/report.md, \"The floor\").", ""]


def single_seed_caveat(runs: dict[str, list[Run]]) -> list[str]:
    """One line when no variant has a second seed (``stiefel-gan compare``'s default): such a report shows
    that the runs work; it cannot say which variant is better, and the page with the suite's answers can."""
    if not runs or any(len(rs) > 1 for rs in runs.values()):
        return []
    last_step = max((int(row["step"]) for rs in runs.values() for r in rs for row in r.rows), default=None)
    until = f" to step {last_step}" if last_step is not None else ""
    return [f"**One seed per variant{until}: a demonstration, not a verdict.** A single seed early in training "
            "cannot tell which variant is better; the suite's answers, over seeds and at two budgets, are in "
            "docs/results.md of the stiefel_gan repository.", ""]


def unfinished_table(every: dict[str, list[Run]]) -> list[str]:
    """The runs that did not finish, by name and status (``status.json``), with the step and the reason."""
    rows = [[run.run_dir.name, label, str(run.seed), run.status["status"], str(run.status["step"]),
             run.status["reason"].replace("|", "\\|")]
            for label, rs in every.items() for run in rs if not run.finished]
    if not rows:
        return []
    return (["## Runs that did not finish", "",
             "Left out of every table and figure below: a diverged or failed run's last numbers are those of "
             "a run that broke, an interrupted or running one's those of a shorter one (resume=auto continues "
             "it). `running` is also what a run killed outright (SIGKILL, a lost node) leaves.", ""]
            + _table(["run", "variant", "seed", "status", "step", "reason"], rows) + [""])


def runs_by_dataset(run_dirs: list[Path]) -> dict[str, list[Path]]:
    """The run directories by their dataset's name, in order: one report each."""
    by_dataset: dict[str, list[Path]] = defaultdict(list)
    for run_dir in run_dirs:
        by_dataset[load_config(run_dir)["data"]["name"]].append(run_dir)
    return dict(sorted(by_dataset.items()))


def check_reports(run_dirs: list[Path], overrides: dict | None = None) -> None:
    """What :func:`write_reports` refuses, from the runs' configs (their ``report`` section, with
    ``overrides`` on top, against the variants found: :func:`~stiefel_gan.report.summary.report_settings`)
    and, where ``report.regress_on`` names a logged key, their logged rows, so that a command reporting
    several directories refuses before it writes any: a one-line ValueError."""
    for dirs in runs_by_dataset(run_dirs).values():
        configs = {d: load_config(d) for d in dirs}
        regress_on = (overrides or {}).get("regress_on") or next(
            (c["report"].get("regress_on", []) for c in configs.values() if "report" in c), [])
        try:
            needs_rows = any(parse_regressor(entry).logged for entry in regress_on)
        except ValueError:  # report_settings says what is wrong with it
            needs_rows = False
        report_settings({label: [Run(d, configs[d], rows=read_metrics(d) if needs_rows else []) for d in group]
                         for label, group in group_variants(dirs).items()}, overrides)


def write_reports(run_dirs: list[Path], out_dir: Path, all_seed_samples: bool = True,
                  overrides: dict | None = None) -> list[Path]:
    """:func:`write_comparison` of the runs, one report per dataset: runs on different data compare nothing
    (a study over ``data=ring8,grid25`` gets ``out_dir/ring8/report.md`` and ``out_dir/grid25/report.md``,
    each against its own SN baseline). Every dataset's runs are checked (:func:`check_reports`) before the
    first report is written. ``overrides``: ``report`` settings over the runs' own (``{"regress_on": [...]}``)."""
    check_reports(run_dirs, overrides)
    by_dataset = runs_by_dataset(run_dirs)
    if len(by_dataset) == 1:
        return [write_comparison(run_dirs, out_dir, all_seed_samples, overrides)]
    return [write_comparison(dirs, Path(out_dir) / dataset, all_seed_samples, overrides)
            for dataset, dirs in by_dataset.items()]


def write_comparison(run_dirs: list[Path], out_dir: Path, all_seed_samples: bool = True,
                     overrides: dict | None = None) -> Path:
    """Write ``out_dir/report.md`` and its figures comparing the runs' variants (module docstring);
    ``all_seed_samples=False`` leaves out ``samples_all_seeds.png``, the one figure that grows with the seeds;
    ``overrides``: ``report`` settings over the runs' own. A ``report`` section that does not fit the runs
    found is a one-line ValueError, before anything is written."""
    groups = group_variants(run_dirs)
    every = load_runs(groups)
    lost = lost_seeds(every)
    runs = {label: kept for label, rs in every.items() if (kept := [r for r in rs if r.finished])}
    report_config = report_settings(runs, overrides)
    finished = sum(map(len, runs.values()))
    protocol = tuning_protocol(runs)
    selected_elsewhere = chosen_elsewhere(runs, protocol)
    if selected_elsewhere:
        protocol = None
    tuning = tune(runs, protocol, headline_key(runs), report_config.alpha) if protocol else None
    floor = headline_floor(runs, headline_key(runs))
    if protocol:  # the tuning verdicts take the confirm seeds; every other table the selection seeds only
        confirm_runs = runs_on_seeds(runs, protocol.confirm_seeds)
        runs = runs_on_seeds(runs, protocol.selection_seeds)
    keys = quality_keys(runs)
    primary = keys[0] if keys else None
    baseline = tuning.baseline if tuning and tuning.baseline.label else choose_baseline(runs, primary)
    if baseline.label is not None:  # the baseline first
        runs = {baseline.label: runs[baseline.label], **{k: v for k, v in runs.items() if k != baseline.label}}
    headline = headline_key(runs)
    decisions = declared_decisions(runs, baseline, headline, report_config)
    regression = headline_regression(runs, headline, report_config)
    labelled = any(r.config.get("variant") for rs in runs.values() for r in rs)
    all_keys = set().union(*(r.keys() for rs in runs.values() for r in rs))
    settings = sorted(k for k in all_keys if k.startswith(PREFIX) and metric_name(k) in MEASUREMENT_SETTINGS)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    unfinished = len(run_dirs) - finished
    lines = ["# stiefel_gan report", "",
             f"{len(run_dirs)} run(s) in {len(every)} variant(s), grouped by "
             + ("the config's `variant` label." if labelled else "the config keys that differ between runs.")
             + (f" {unfinished} did not finish (listed below) and are left out" if unfinished else "")
             + (": " + "; ".join(f"{label} has {note}" for label, note in lost.items()) + "." if lost
                else "." if unfinished else ""),
             f"Baseline: **{baseline.label}** ({baseline.reason})." if baseline.label
             else f"Baseline: none ({baseline.reason}).",
             f"Per variant over seeds: mean ± std of the final value, of the mean of the last {LAST_EVALUATIONS} "
             "evaluations and of the area under the curve (its time average), each over the evaluation steps "
             "its column names (from the runs' records); n is the number of seeds. "
             "Δ: variant minus baseline paired by seed, the mean difference (p: its two-sided sign-flip p-value, "
             f"exact up to {EXACT_SIGN_FLIP_PAIRS} seeds, not corrected for the table's many cells; SD: the mean "
             "difference in baseline seed SDs, the ± of the baseline's row). Verdict words only for the "
             "comparisons and contrasts the study declared, after "
             f"Holm's correction across them together: {len(decisions)} here (Declared comparisons, below).", ""]
    lines += floor_lines(floor)
    if selected_elsewhere:
        lines += ["**Confirm seeds only**: these runs of a tuning study hold none of its selection seeds, so their "
                  "settings were chosen elsewhere (at another budget) and nothing is selected here; the verdicts are "
                  "the declared comparisons against the SN variant (`report.comparisons`).", ""]
    lines += single_seed_caveat(runs)
    lines += unfinished_table(every)
    lines += baseline_check(runs, baseline, primary)
    lines += declared_section(runs, baseline, report_config, decisions, headline, floor)
    lines += regression_section(regression)
    if keys:
        lines += ["## Sample quality"] + headline_table(runs, headline, floor) + quality_tables(runs, keys, baseline, report_config, decisions, headline, lost,
                                                        floor)
    if settings:
        lines += ["", "Measured with: " + ", ".join(
            f"{key} = {_summary(summarize([r.final(key) for rs in runs.values() for r in rs]))}" for key in settings)]
    if tuning:
        def tuning_verdict(tested: TestedDifference, best: str) -> str:
            in_floor = within_floor(confirm_runs, best, baseline.label, floor)
            return _verdict(tested, better_direction(headline), in_floor)
        lines += ["", *tuning_section(tuning, study_dir(runs), STATISTIC_NAMES[protocol.statistic][0],
                                      tuning_verdict, _table)]
    else:
        lines += tuning_table(runs, primary)
    losses = [k for k in HEADLINE if k in all_keys]
    if losses:
        lines += ["", "## Losses and D's outputs (final, mean ± std over seeds; last "
                  f"{LAST_EVALUATIONS}: mean of the last {LAST_EVALUATIONS} logged values)", ""]
        lines += scalar_table(runs, losses, with_last=True)
    order = ("lipschitz/", "saturation/")
    diagnostics = sorted((k for k in all_keys if k not in HEADLINE and not k.startswith(PREFIX)
                          and not k.startswith(PER_LAYER_PREFIXES)),
                         key=lambda k: (next((i for i, p in enumerate(order) if k.startswith(p)), len(order)), k))
    if diagnostics:
        lines += ["", "## Diagnostics (final, mean ± std over seeds)", ""] + scalar_table(runs, diagnostics,
                                                                                            with_last=False)
    lines += fit_table(runs)
    lines += norm_ratio_tables(runs)

    some_hidden = any(len(rs) > MAX_SEEDS_SHOWN for rs in runs.values())
    seeds_note = (f"every seed, except variants with more than {MAX_SEEDS_SHOWN} seeds: their median seed by the "
                  f"final {primary}") if some_hidden else "every seed"
    figures = (
        (f"Samples (final; the median seed of each variant by the final {primary})",
         plot_samples(runs, primary, out_dir / "samples.png", every_seed=False)),
        (f"Samples of every seed (final; {seeds_note})",
         plot_samples(runs, primary, out_dir / "samples_all_seeds.png") if all_seed_samples else None),
        ("Metrics vs step (mean over seeds; band: the seeds' minimum to maximum)",
         plot_curves(runs, keys + losses, out_dir / "curves.png")),
        (f"Normalized squared spectra of D's layers, Miyato's Fig. 3 view (last diagnostics step; {seeds_note}; "
         "dashed: the fitted curve, squared; dotted: the spectrum at step 0)", plot_spectra(runs, primary, out_dir / "spectra.png")),
        (f"Reshaped (solid) vs circular-FFT operator (dashed) spectra of D's convs, squared and normalized "
         f"({seeds_note})", plot_operator_spectra(runs, primary, out_dir / "operator_spectra.png")),
        (f"Gradient norms of D's loss per layer (final; {seeds_note})",
         plot_gradient_norms(runs, primary, out_dir / "gradients.png")),
    )
    for title, figure in figures:
        if figure is not None:
            lines += ["", f"## {title}", "", f"![{title}]({figure.name})"]
    lines += ["", "## Runs", ""] + [f"- {label}: " + ", ".join(f"{r.run_dir} (seed {r.seed})" for r in rs)
                                    for label, rs in runs.items()]
    report = out_dir / REPORT_FILE
    report.write_text("\n".join(lines) + "\n")
    return report
