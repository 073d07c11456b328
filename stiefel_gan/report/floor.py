"""The calibration floor of a report's headline metric, measured at the runs' own settings, and the rule
that no difference is called between two variants that both sit within it (docs/report.md, "The floor").

Note [the floor]
    A sample-quality metric is not zero for perfect samples: the held-out digits, resampled at the runs'
    sample count, are an FD of about 5 away from themselves, and the draws scatter over a range
    (``stiefel-gan calibrate``, docs/metrics.md). A generator whose FD lies inside that range is as good as
    the metric can tell, so two such generators are not "different" whatever a paired test says about their
    last digits: the test then measures the metric's sampling noise, which the paired seeds do not cancel
    (each run draws its own samples). The report therefore measures the floor row of the calibration
    (:func:`~stiefel_gan.measure.calibration.sampling_floor`: real reference data resampled, one draw per
    calibration seed) at the runs' data and metric settings, states it, and a declared comparison whose two
    variants both have a mean final value within it (at most the floor's largest draw for a lower-is-better
    metric, at least its smallest for a higher-is-better one) gets no verdict. The test stays in the Holm
    family, so the other verdicts' thresholds do not move.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from ..config.compose import load_run_config
from ..measure.statistics import summarize
from .discovery import Run
from .summary import better_direction, seed_statistic


@dataclass(frozen=True)
class Floor:
    """The headline ``key``'s values for real reference data resampled (one per calibration seed), at
    ``n_samples`` samples; ``row``: what was resampled."""

    key: str
    values: tuple[float, ...]
    n_samples: int
    row: str

    def holds(self, value: float) -> bool:
        """Whether ``value`` (a mean final value) lies within the floor's spread, in the key's direction."""
        if not math.isfinite(value):
            return False
        direction = better_direction(self.key)
        if direction == "lower":
            return value <= max(self.values)
        if direction == "higher":
            return value >= min(self.values)
        return False

    def text(self) -> str:
        stats = summarize(list(self.values))
        return (f"{stats.mean:.3g}, range {min(self.values):.3g}-{max(self.values):.3g} ({self.row} resampled, "
                f"n = {self.n_samples}, {len(self.values)} draws)")


_MEASURED: dict[str, Floor | None] = {}


def headline_floor(runs: dict[str, list[Run]], key: str | None) -> Floor | None:
    """The floor of ``key`` at the runs' data and metric settings, measured once per settings in a process
    (Note [the floor]); None where the dataset has no calibration (CIFAR-10 needs Inception weights and the
    data on disk), the key has no direction, or the runs' data or metric settings differ."""
    from ..measure.calibration import CALIBRATED_DATASETS, sampling_floor

    every = [r for rs in runs.values() for r in rs]
    if key is None or not every or better_direction(key) is None:
        return None
    settings = {json.dumps({part: r.config.get(part) for part in ("data", "metrics")}, sort_keys=True) for r in every}
    if len(settings) > 1 or every[0].config["data"]["name"] not in CALIBRATED_DATASETS:
        return None
    (setting,) = settings
    if setting not in _MEASURED:
        result = sampling_floor(load_run_config(every[0].run_dir))
        values = tuple(v for v in result.values(key) if math.isfinite(v))
        _MEASURED[setting] = (Floor(key, values, int(every[0].config["metrics"]["n_samples"]), result.row.name)
                              if values else None)
    return _MEASURED[setting]


def within_floor(runs: dict[str, list[Run]], first: str, second: str, floor: Floor | None) -> bool:
    """Whether variants ``first`` and ``second`` both have a mean final value of the floor's key within the
    floor: a difference between them is not called (Note [the floor]). A variant without runs (a tuning best
    whose confirm runs have not been made) has no mean, so it is not within the floor."""
    if floor is None:
        return False
    means = [summarize(list(seed_statistic(runs.get(label, []), floor.key, "final").values())).mean
             for label in (first, second)]
    return all(floor.holds(mean) for mean in means)
