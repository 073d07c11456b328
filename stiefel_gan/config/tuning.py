"""A tuning study's grids and protocol (``tuning.*``, :class:`~.schema.TuningConfig`), checked from its
variants' labels and its config alone, before any job runs (docs/studies.md, "Tuning protocol").

A tuning study's variants are labelled ``<method>@<key>=<value>`` (``sn@lr_d=2e-4``,
``sn_miyato@optim=A``): the part before :data:`SETTING_SEPARATOR` groups a method's settings. A method's
grid is *numeric* when every setting sets the same single key to a positive number (its best may then sit
at an edge, which the report refuses to call: :mod:`stiefel_gan.report.tuning`), else *categorical*
(Miyato's presets A-F: no order, no edge).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Mapping

from .schema import REPORT_STATISTICS, TuningConfig
from .seeds import fewest_pairs_for_a_verdict

#: separates a tuning study's method from its setting in a variant label: ``sn@lr_d=2e-4``
SETTING_SEPARATOR = "@"

#: A verdict from paired seeds needs at least this many: with ``n`` seeds the smallest two-sided sign-flip
#: p-value is ``2^(1-n)`` (stiefel_gan.measure.statistics, Note [sign-flip test of paired differences]),
#: 0.0625 with 5 seeds, 0.03125 with 6.
MIN_CONFIRM_SEEDS = 6

#: A numeric grid is log-spaced when the ratios of neighbouring values agree within this factor (the largest
#: ratio over the smallest): the 1-2-5 series (ratios 2 and 2.5, 1.25) and half decades (3 and 3.33, 1.11)
#: pass, a linear grid 1, 2, ..., 6 (ratios 2 down to 1.2, 1.67) does not.
LOG_SPACING_TOLERANCE = 1.3


@dataclass(frozen=True)
class Setting:
    """One variant of a tuning study: ``label`` = ``<method>@<key>=<value>``; ``value`` as written."""

    label: str
    method: str
    key: str
    value: str

    @property
    def number(self) -> float | None:
        """The value as a positive finite number, or None (a categorical value: ``A``, several keys)."""
        try:
            number = float(self.value)
        except ValueError:
            return None
        return number if math.isfinite(number) and number > 0 and "," not in self.key else None


def parse_setting(label: str) -> Setting | None:
    """The :class:`Setting` of ``label``, or None for a label without :data:`SETTING_SEPARATOR`."""
    if SETTING_SEPARATOR not in label:
        return None
    method, setting = label.split(SETTING_SEPARATOR, 1)
    key, _, value = setting.rpartition("=")
    return Setting(label, method, key, value)


def method_grids(labels: Iterable[str]) -> dict[str, list[Setting]]:
    """``{method: its settings}`` of the labels that have a setting; a numeric grid in ascending order."""
    grids: dict[str, list[Setting]] = defaultdict(list)
    for label in labels:
        setting = parse_setting(label)
        if setting is not None:
            grids[setting.method].append(setting)
    for method, grid in grids.items():
        if is_numeric(grid):
            grid.sort(key=lambda setting: setting.number)
    return dict(grids)


def is_numeric(grid: list[Setting]) -> bool:
    """Every setting sets the same one key to a positive number (an ordered axis, with two edges)."""
    return all(setting.number is not None for setting in grid) and len({setting.key for setting in grid}) == 1


def grid_text(grid: list[Setting]) -> str:
    """``2e-4..1e-2`` (numeric) or ``A, B, C`` (categorical), as the labels write the values."""
    if is_numeric(grid):
        return f"{grid[0].value}..{grid[-1].value}"
    return ", ".join(setting.value for setting in grid)


def confirm_seeds_needed(alpha: float, comparisons: int) -> int:
    """The fewest confirm seeds with which Holm's first step over ``comparisons`` sign-flip tests can pass
    at ``alpha`` (:func:`~.seeds.fewest_pairs_for_a_verdict`: 8 for 4 comparisons at 0.05), and never fewer
    than :data:`MIN_CONFIRM_SEEDS`."""
    return max(MIN_CONFIRM_SEEDS, fewest_pairs_for_a_verdict(alpha, max(comparisons, 1)))


def tuning_seeds_problem(tuning: TuningConfig) -> str | None:
    """Why ``tuning``'s statistic or seeds cannot make a protocol (one line), or None. No ``confirm_seeds``:
    no protocol declared, nothing to check."""
    if not tuning.confirm_seeds:
        return None
    if tuning.statistic not in REPORT_STATISTICS:
        return f"tuning.statistic={tuning.statistic!r} is not allowed: use one of {', '.join(REPORT_STATISTICS)}"
    for key, seeds in (("selection_seeds", tuning.selection_seeds), ("confirm_seeds", tuning.confirm_seeds)):
        if len(set(seeds)) != len(seeds) or not seeds:
            return f"tuning.{key}={list(seeds)} is not allowed: use distinct seeds, at least one"
    overlap = sorted(set(tuning.selection_seeds) & set(tuning.confirm_seeds))
    if overlap:
        return (f"tuning.confirm_seeds={list(tuning.confirm_seeds)} is not allowed: seed(s) {overlap} are also "
                f"selection seeds ({list(tuning.selection_seeds)}); a setting chosen on a seed is never confirmed "
                "on it: use disjoint seeds")
    if len(tuning.confirm_seeds) < MIN_CONFIRM_SEEDS:
        return (f"tuning.confirm_seeds={list(tuning.confirm_seeds)} is not allowed: {len(tuning.confirm_seeds)} "
                f"seeds, and below {MIN_CONFIRM_SEEDS} no two-sided sign-flip test reaches p < 0.05 (2^(1-n)); "
                f"use at least {MIN_CONFIRM_SEEDS} seeds")
    return None


def tuning_problem(tuning: TuningConfig, is_sn: Mapping[str, bool], seeds: Iterable[int], alpha: float) -> str | None:
    """Why a study with ``tuning`` cannot run its grid (one line), or None: its seeds
    (:func:`tuning_seeds_problem`), a variant label without a setting, a method with a different number of
    settings than the others, a numeric grid that is not log-spaced (:data:`LOG_SPACING_TOLERANCE`), no SN
    method, too few confirm seeds for Holm over the methods compared with SN (:func:`confirm_seeds_needed`),
    or a job ``seeds`` that is neither a selection nor a confirm seed. ``is_sn``: the study's variant labels,
    whether each is an SN variant."""
    problem = tuning_seeds_problem(tuning)
    if problem is not None or not tuning.confirm_seeds:
        return problem
    bare = sorted(label for label in is_sn if parse_setting(label) is None)
    if bare:
        return (f"variant {bare[0]!r} is not allowed in a tuning study (tuning.confirm_seeds set): label every variant "
                f"<method>{SETTING_SEPARATOR}<key>=<value>, e.g. sn@lr_d=2e-4")
    grids = method_grids(is_sn)
    sizes = {method: len(grid) for method, grid in grids.items()}
    if len(set(sizes.values())) > 1:
        counts = ", ".join(f"{method} {size}" for method, size in sizes.items())
        return (f"unequal tuning grids are not allowed: {counts} settings; give every method the same number of "
                "settings, so that no method is tuned harder than another")
    for method, grid in grids.items():
        if is_numeric(grid) and len(grid) > 2:
            ratios = [b.number / a.number for a, b in zip(grid, grid[1:])]
            if min(ratios) <= 1 or max(ratios) / min(ratios) > LOG_SPACING_TOLERANCE:
                values = ", ".join(setting.value for setting in grid)
                return (f"{method}'s grid {grid[0].key} = {values} is not allowed: it is not log-spaced (neighbour "
                        f"ratios {', '.join(f'{r:.3g}' for r in ratios)}); use values with one ratio between "
                        f"neighbours (within a factor {LOG_SPACING_TOLERANCE}), e.g. 1-2-5 or half decades")
    sn_methods = {method for method, grid in grids.items() if all(is_sn[s.label] for s in grid)}
    if not sn_methods:
        return "a tuning study without an SN method is not allowed: its verdicts compare each method's best with SN's best"
    compared = len(grids) - len(sn_methods)
    needed = confirm_seeds_needed(alpha, compared)
    if len(tuning.confirm_seeds) < needed:
        return (f"tuning.confirm_seeds={list(tuning.confirm_seeds)} is not allowed: {len(tuning.confirm_seeds)} seeds, "
                f"and with {compared} methods compared with SN, Holm's first threshold alpha/{compared} = "
                f"{alpha / compared:.3g} needs 2^(1-n) below it: use at least {needed} seeds")
    stray = sorted(set(seeds) - set(tuning.selection_seeds) - set(tuning.confirm_seeds))
    if stray:
        return (f"train.seed={stray[0]} is not allowed in this tuning study: use its selection seeds "
                f"{list(tuning.selection_seeds)} or its confirm seeds {list(tuning.confirm_seeds)} "
                "(stiefel-gan confirm runs every method's best on all of those)")
    return None
