"""A tuning study's protocol applied to its runs (``tuning.*``, docs/report.md, "Tuning protocol"): each
method's best setting chosen on the selection seeds only, an optimum at its grid's edge refused, and the
verdicts (each method's best vs SN's best) taken on the confirm seeds only; the command that runs the
confirm step (``stiefel-gan confirm``).

Note [selection and confirmation seeds]
    Picking the best of k settings on seeds S and testing it on the same S tests the maximum of k noisy
    means: its expected value is biased toward "better" even when no setting differs, and more so for the
    method with the larger grid. The protocol therefore selects on ``tuning.selection_seeds`` and tests
    on ``tuning.confirm_seeds``, disjoint, where every selected setting (SN's best included) runs on every
    confirm seed. Given the selection, the confirm runs are fresh draws, so the sign-flip test of their
    paired differences keeps its level. A selected setting at its grid's edge is not an optimum but a
    bound (the best may lie beyond), so it gets no verdict until the grid is extended.
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from ..config.compose import SOURCE_CONFIG_DIR, compose_config
from ..config.checks import config_mismatch
from ..config.schema import TuningConfig
from ..config.tuning import Setting, grid_text, is_numeric, method_grids
from ..measure.statistics import PairedDifference, TestedDifference, holm_decisions, paired_difference
from .discovery import Run, find_run_dirs, group_variants, load_runs
from .summary import (STATISTIC_NAMES, Baseline, better_direction, headline_key, report_settings, seed_statistic,
                      sn_variants)


def tuning_protocol(runs: dict[str, list[Run]]) -> TuningConfig | None:
    """The ``tuning`` section the runs were made with, or None when they declare no protocol (no
    ``tuning.confirm_seeds``, or runs made before the section existed); a one-line ValueError when the runs
    declare different ones."""
    sections = {json.dumps(r.config["tuning"], sort_keys=True) for rs in runs.values() for r in rs if "tuning" in r.config}
    if len(sections) > 1:
        raise ValueError(f"runs with tuning sections {'; '.join(sorted(sections))} are not allowed in one report: "
                         "report the runs of one study (its config declares one tuning protocol)")
    protocol = TuningConfig(**json.loads(sections.pop())) if sections else None
    return protocol if protocol is not None and protocol.confirm_seeds else None


def chosen_elsewhere(runs: dict[str, list[Run]], protocol: TuningConfig | None) -> bool:
    """Whether the runs of a tuning study hold none of its selection seeds: the confirm runs of settings
    chosen by a selection made elsewhere, at another budget (the 500-step selection's bests run again at
    ``budget=digits_long``). Nothing can be selected from them, so their report is an ordinary one: the
    study's declared comparisons against its SN variant (docs/report.md, "Tuning protocol")."""
    return protocol is not None and not runs_on_seeds(runs, protocol.selection_seeds)


def runs_on_seeds(runs: dict[str, list[Run]], seeds) -> dict[str, list[Run]]:
    """The runs whose seed is one of ``seeds``, by variant (variants left with none dropped)."""
    kept = {label: [r for r in rs if r.seed in set(seeds)] for label, rs in runs.items()}
    return {label: rs for label, rs in kept.items() if rs}


@dataclass(frozen=True)
class MethodChoice:
    """One method's grid on the selection seeds: each setting's ``score`` (the mean of the protocol's
    statistic over the selection seeds it has, signed so that smaller is better; NaN without runs, +inf
    where the statistic is undefined on a seed), the ``best`` setting, and why the best cannot be confirmed
    yet (``problem``: its grid's edge, selection runs missing, or no setting defined; None when it can)."""

    method: str
    grid: list[Setting]
    score: dict[str, float]
    best: Setting | None
    problem: str | None
    is_sn: bool


def _edge_problem(method: str, grid: list[Setting], best: Setting) -> str | None:
    """The one line that refuses a best at its numeric grid's edge, saying which way to extend it."""
    if not is_numeric(grid) or len(grid) < 2 or best not in (grid[0], grid[-1]):
        return None
    where, way = (("top", f"above {grid[-1].value}") if best is grid[-1] else ("bottom", f"below {grid[0].value}"))
    return f"{method}'s best {best.key}={best.value} is the {where} of its grid {grid_text(grid)}: extend it {way}"


def choose_settings(runs: dict[str, list[Run]], protocol: TuningConfig, key: str) -> dict[str, MethodChoice]:
    """Each method's best setting by the mean of ``protocol.statistic`` of ``key`` over the selection seeds
    only (Note [selection and confirmation seeds]); ``runs``: every finished run of the study.

    Note [an undefined statistic is the worst outcome]
        A finished run can leave its statistic undefined: a key with no reading at any evaluation has no
        curve, so no final value, mean or area (an evaluation with no sample on any mode does have one:
        Note [an empty mode histogram reads as the worst] in stiefel_gan.measure.table). That run was made
        and measured nothing good, so its setting scores worse than every defined one (+inf), instead of
        being averaged over its other seeds, which would rank it by its lucky seeds, or blocking the study
        as if a run had not been made.
    """
    selection = runs_on_seeds(runs, protocol.selection_seeds)
    sign = -1.0 if better_direction(key) == "higher" else 1.0
    sn = sn_variants(runs)
    choices = {}
    grids = method_grids(runs)
    # SN's methods first (the baseline), then the others, each in the order the runs came
    for method in sorted(grids, key=lambda m: not all(s.label in sn for s in grids[m])):
        grid = grids[method]
        score, missing = {}, []
        for setting in grid:
            values = seed_statistic(selection.get(setting.label, []), key, protocol.statistic)
            lacking = sorted(set(protocol.selection_seeds) - set(values))
            if lacking:
                missing.append(f"{setting.label} (seeds {lacking})")
            if not values:
                score[setting.label] = math.nan
            elif any(not math.isfinite(v) for v in values.values()):
                score[setting.label] = math.inf  # Note [an undefined statistic is the worst outcome]
            else:
                score[setting.label] = sign * float(np.mean(list(values.values())))
        scored = [setting for setting in grid if math.isfinite(score[setting.label])]
        best = min(scored, key=lambda setting: score[setting.label]) if scored else None
        if missing:
            problem = (f"{method}'s selection runs are missing: {', '.join(missing)}; run them on the selection "
                       f"seeds {list(protocol.selection_seeds)}")
        elif best is None:
            problem = (f"{method} has no setting whose {key} is defined on every selection seed; extend its grid "
                       "toward settings that learn")
        else:
            problem = _edge_problem(method, grid, best)
        choices[method] = MethodChoice(method, grid, score, best, problem, all(s.label in sn for s in grid))
    return choices


@dataclass(frozen=True)
class TuningOutcome:
    """The protocol applied: each method's choice, the baseline (SN's best over every SN setting, or why
    none), each compared method's test on the confirm seeds, and the confirm runs found per best."""

    protocol: TuningConfig
    key: str
    choices: dict[str, MethodChoice]
    baseline: Baseline
    decisions: dict[str, TestedDifference] = field(default_factory=dict)
    confirmed_seeds: dict[str, list[int]] = field(default_factory=dict)

    @property
    def problems(self) -> list[str]:
        return [choice.problem for choice in self.choices.values() if choice.problem is not None]


def tune(runs: dict[str, list[Run]], protocol: TuningConfig, key: str, alpha: float) -> TuningOutcome:
    """Apply ``protocol`` to the study's finished ``runs`` on ``key`` (the headline metric).

    SN's best is the best of every SN method's best (``sn@lr_d`` and Miyato's presets); while an SN method's
    best is unresolved (an edge, missing runs) there is no baseline and no verdict. Each other method's best
    minus SN's best, paired by confirm seed (never a selection seed), on ``protocol.statistic``, is tested
    by the sign-flip test; the family is every compared method, tested by Holm at ``alpha`` (a method whose
    best is unresolved counts in it with p = 1, as a declared comparison without pairs does)."""
    choices = choose_settings(runs, protocol, key)
    sn_choices = [c for c in choices.values() if c.is_sn]
    unresolved = [c.problem for c in sn_choices if c.problem is not None]
    if not sn_choices:
        baseline = Baseline(None, "the tuning study has no SN method")
    elif unresolved:
        baseline = Baseline(None, f"SN's best is unresolved ({unresolved[0]})")
    else:
        best = min(sn_choices, key=lambda c: c.score[c.best.label]).best
        statistic = STATISTIC_NAMES[protocol.statistic][0]
        baseline = Baseline(best.label, f"SN's best setting, by the {statistic} of {key} on the selection "
                                        f"seeds {list(protocol.selection_seeds)}, of {sum(len(c.grid) for c in sn_choices)} "
                                        "SN settings")
    confirm = runs_on_seeds(runs, protocol.confirm_seeds)
    bests = [c.best.label for c in choices.values() if c.best is not None and c.problem is None]
    confirmed = {label: sorted({r.seed for r in confirm.get(label, [])}) for label in bests}
    if baseline.label is None:
        return TuningOutcome(protocol, key, choices, baseline, {}, confirmed)
    reference = seed_statistic(confirm.get(baseline.label, []), key, protocol.statistic)
    differences = {}
    for choice in choices.values():
        if choice.is_sn:
            continue
        if choice.problem is not None or choice.best is None:
            differences[choice.method] = PairedDifference(math.nan, math.nan, math.nan, 0)
            continue
        differences[choice.method] = paired_difference(
            seed_statistic(confirm.get(choice.best.label, []), key, protocol.statistic), reference)
    return TuningOutcome(protocol, key, choices, baseline, holm_decisions(differences, alpha), confirmed)


def variant_presets(config_dir: Path = SOURCE_CONFIG_DIR) -> dict[str, str]:
    """``{variant label: configs/variant preset name}`` of every preset that sets a label."""
    presets = {}
    for path in sorted((Path(config_dir) / "variant").glob("*.yaml")):
        label = (yaml.safe_load(path.read_text()) or {}).get("variant")
        if label:
            presets[str(label)] = path.stem
    return presets


def confirm_overrides(runs: dict[str, list[Run]], outcome: TuningOutcome, extra: list[str] = ()) -> list[str]:
    """The overrides of ``stiefel-gan train -m`` that run every method's best setting (SN's best included)
    on exactly the confirm seeds, in the study's directory; a one-line ValueError while a best is
    unresolved (an edge, missing selection runs), when a best has no preset, or when the composed jobs
    would differ from the selection runs in more than the seed (pass the selection sweep's own overrides
    in ``extra``)."""
    if outcome.problems:
        raise ValueError(f"the confirm step is not allowed yet: {outcome.problems[0]}"
                         + (f" (and {len(outcome.problems) - 1} more unresolved)" if len(outcome.problems) > 1 else ""))
    presets = variant_presets()
    bests = [c.best.label for c in outcome.choices.values()]
    unknown = [label for label in bests if label not in presets]
    if unknown:
        raise ValueError(f"variant {unknown[0]!r} is not allowed in a confirm step: no configs/variant preset sets "
                         "this label; confirm the presets of a study's own grid")
    first = runs[bests[0]][0].config
    overrides = [f"experiment={first['name']}", "variant=" + ",".join(presets[label] for label in bests),
                 "train.seed=" + ",".join(str(seed) for seed in outcome.protocol.confirm_seeds),
                 f"out_dir={first['out_dir']}", *extra]
    for label in bests:  # a confirm run is its selection run on another seed, nothing else
        run = runs[label][0]
        job = compose_config([o for o in overrides if not o.startswith(("variant=", "train.seed="))]
                             + [f"variant={presets[label]}", f"train.seed={run.seed}"])
        mismatch = config_mismatch({"config": run.config}, job)
        if mismatch is not None:
            raise ValueError(f"the confirm runs of {label} would differ from its selection runs ({mismatch}): pass "
                             "the selection sweep's own overrides after the directory (stiefel-gan confirm DIR key=value)")
    return overrides


def study_dir(runs: dict[str, list[Run]]) -> str:
    """``<out_dir>/<name>`` of the runs: where the study's sweep wrote them."""
    config = next(iter(runs.values()))[0].config
    return str(Path(config["out_dir"]) / config["name"])


def confirm_plan(directory: Path, extra: list[str] = ()) -> list[str]:
    """The confirm step of the tuning study whose runs lie under ``directory``
    (:func:`confirm_overrides` of its finished runs); a one-line ValueError when they declare no protocol."""
    every = load_runs(group_variants(find_run_dirs(directory)))
    runs = {label: kept for label, rs in every.items() if (kept := [r for r in rs if r.finished])}
    protocol = tuning_protocol(runs)
    if protocol is None:
        raise ValueError(f"{directory} is not allowed: its runs declare no tuning protocol (tuning.confirm_seeds "
                         "is empty); stiefel-gan confirm runs the confirm step of a study such as experiment=tuning")
    outcome = tune(runs, protocol, headline_key(runs), report_settings(runs).alpha)
    return confirm_overrides(runs, outcome, list(extra))


def confirm_command(overrides: list[str]) -> str:
    """The shell line of the confirm step."""
    return "stiefel-gan train -m " + " ".join(shlex.quote(o) for o in overrides)


def _score(value: float, key: str) -> str:
    if not math.isfinite(value):
        return "-"
    return f"{(-value if better_direction(key) == 'higher' else value):.4g}"


def tuning_section(outcome: TuningOutcome, study_dir: str, statistic_name: str, verdict, table) -> list[str]:
    """The report's tuning section: the protocol, each method's grid and best on the selection seeds, the
    edge refusals, the verdicts on the confirm seeds, and what to run next. ``verdict(tested, best)`` (the
    method's best setting's label) and ``table(header, rows)`` write a verdict and a table as the rest of the
    report does."""
    p, key = outcome.protocol, outcome.key
    lines = ["## Tuning protocol (declared with the study: `tuning.*`)", "",
             f"Each method's best setting: the best {statistic_name} of {key}, averaged over the **selection seeds "
             f"{list(p.selection_seeds)} only**; every table above shows those seeds only. Verdicts: each method's "
             f"best minus SN's best on the **confirm seeds {list(p.confirm_seeds)} only** (never a seed that "
             "selected it), paired by seed, sign-flip p-values, Holm over the methods compared. A best at its "
             "numeric grid's edge gets no verdict: the grid must be extended first.", ""]
    rows = []
    for choice in outcome.choices.values():
        ranked = sorted((s for s in choice.grid if math.isfinite(choice.score[s.label])), key=lambda s: choice.score[s.label])
        median = ranked[(len(ranked) - 1) // 2] if ranked else None
        rows.append([choice.method, grid_text(choice.grid) + ("" if is_numeric(choice.grid) else " (categorical)"),
                     choice.best.value if choice.best else "-",
                     _score(choice.score[choice.best.label], key) if choice.best else "-",
                     median.value if median else "-", _score(choice.score[median.label], key) if median else "-",
                     "edge or missing: see below" if choice.problem else "ok"])
    lines += table(["method", "grid", "best", f"its {statistic_name} (selection)", "median setting",
                     f"its {statistic_name}", "status"], rows)
    lines += [""] + [f"- {problem}" for problem in outcome.problems]
    lines += ["", f"Baseline of the verdicts: **{outcome.baseline.label}** ({outcome.baseline.reason})."
              if outcome.baseline.label else f"No verdicts: {outcome.baseline.reason}.", ""]
    if outcome.decisions:
        rows = []
        for method, tested in outcome.decisions.items():
            choice = outcome.choices[method]
            if choice.problem is not None:
                rows.append([method, choice.best.value if choice.best else "-", "0", "-", "-", "-",
                             "none: unresolved best"])
                continue
            d = tested.difference
            rows.append([method, choice.best.value, str(d.n), f"{d.mean:+.4g}" if d.n else "-",
                         f"{d.p_value:.3g}" if d.n else "-", f"{tested.adjusted_p_value:.3g}",
                         verdict(tested, choice.best.label)])
        lines += [f"### Confirmation: confirm seeds {list(p.confirm_seeds)} only, vs {outcome.baseline.label}", ""]
        lines += table(["method", "best", "n (confirm seeds)", f"Δ {statistic_name}", "p", "Holm p", "verdict"], rows)
        lines += [""]
    missing = {label: sorted(set(p.confirm_seeds) - set(seeds)) for label, seeds in outcome.confirmed_seeds.items()}
    missing = {label: seeds for label, seeds in missing.items() if seeds}
    if outcome.problems:
        lines += ["Confirm step: not yet (resolve the lines above, then `stiefel-gan confirm " f"{study_dir}`)."]
    elif missing:
        lines += [f"Confirm step: {len(missing)} best(s) lack confirm seeds ("
                  + "; ".join(f"{label}: {seeds}" for label, seeds in missing.items())
                  + f"): run `stiefel-gan confirm {study_dir}`."]
    else:
        lines += ["Confirm step: every best has run on every confirm seed."]
    return lines + [""]
