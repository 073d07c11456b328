"""The calibration table in markdown, and its block in ``docs/metrics.md``.

Each dataset's table lives between ``<!-- calibration:<dataset> -->`` and ``<!-- /calibration:<dataset> -->``;
:func:`write_calibration_block` replaces that block and nothing else, so the text around it (this
project's own explanation, another section) stays byte for byte. A file without the block gets it at
the end of its ``## Calibration`` section; a missing file is created with the page's title and that
section's explanation (:data:`CALIBRATION_SECTION`).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from ..measure.calibration import Calibration
from ..measure.table import PREFIX
from .summary import format_number

TITLE = "# Metrics: what each number means and how far it can be trusted"
SECTION_HEADING = "## Calibration"

CALIBRATION_SECTION = f"""{SECTION_HEADING}

A metric's value says little by itself: what it gives real data at the same sample count (the
*floor*), and how far it moves when that data is degraded by a known amount, is what makes
"158 vs 571" readable. `stiefel-gan calibrate data=<dataset>` evaluates samples of known quality
through the same evaluation a run gives its generator's samples at its end (`SampleQuality.evaluate`;
the untrained generator through `SampleQuality` itself), at the studies' budget (`budget=digits`:
16 px, 1,000 samples, the 450 held-out digits as the reference; `budget=mixtures`: 2,000 points), and
writes the table below for that dataset. The columns are the dataset's compared metrics of the metric
table (`stiefel_gan/measure/table.py`).

How to read a table:

- **The floor** is the first row: real data resampled with replacement. It is above 0 because a
  finite sample's statistics differ from the reference's (Frechet distances are biased upwards at
  small n); no generator is expected to go below it at the same n.
- **The spread** of a row is over the 5 calibration seeds (0-4): mean ± std, then the range (min-max).
  It is what resampling alone moves a number by.
- **The rows between** say how large a difference is: a run whose value lies between two rows
  is as far from real data as those degradations are.
- **The rule**: a report does not claim that two variants differ when both sit within the
  calibration spread of the floor (within the floor row's range); and a difference between two
  variants is read against the distance between the rows that bracket them, not as a raw number.
"""


def block_markers(dataset: str) -> tuple[str, str]:
    return f"<!-- calibration:{dataset} -->", f"<!-- /calibration:{dataset} -->"


def _cell(values: list[float]) -> str:
    """``mean ± std (min-max)`` over the seeds (sample std, ``ddof = 1``), to the std's second significant
    digit; ``NaN (k of n seeds)`` where some seeds had no value (the metric was undefined for them)."""
    array = np.asarray(values, dtype=np.float64)
    missing = int((~np.isfinite(array)).sum())
    if missing:
        return f"NaN ({missing} of {len(array)} seeds)"
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    if std == 0:
        return f"{format_number(float(array[0]))} ± 0"
    decimals = max(0, 1 - math.floor(math.log10(std)))
    mean, low, high = (f"{value:.{decimals}f}" for value in (array.mean(), array.min(), array.max()))
    return f"{mean} ± {std:.{decimals}f} ({low}-{high})"


def calibration_table(calibration: Calibration) -> str:
    """The markdown table: one line per row (its name, what it is, one cell per column)."""
    names = [key.removeprefix(PREFIX) for key in calibration.columns]
    lines = ["| row | what it is | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for result in calibration.results:
        cells = [_cell(result.values(key)) for key in calibration.columns]
        lines.append(f"| {result.row.name} | {result.row.meaning} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def calibration_block(calibration: Calibration, command: str, provenance: str) -> str:
    """The block of one dataset: markers, a heading, how it was made, the table."""
    cfg = calibration.cfg
    start, end = block_markers(cfg.data.name)
    setting = f"n = {cfg.metrics.n_samples} samples a row and seed"
    if cfg.data.name == "digits":
        reference = "the 450 held-out digits" if cfg.data.split == "train" else "all 1,797 digits"
        setting += f", {cfg.data.image_size} px, reference: {reference}"
    seeds = ", ".join(map(str, calibration.seeds))
    return "\n".join([
        start,
        f"### {cfg.data.name}",
        "",
        f"Regenerate with `{command}` ({setting}; seeds {seeds}). Made at {provenance}.",
        "",
        calibration_table(calibration),
        end,
    ])


_SECTION = re.compile(rf"^{SECTION_HEADING}[ \t]*$", re.M)


def _section_end(text: str) -> int | None:
    """Where the ``## Calibration`` section of ``text`` ends (at the next ``## `` heading, or the end of
    the text); None when it has no such section."""
    section = _SECTION.search(text)
    if section is None:
        return None
    following = re.compile(r"^## ", re.M).search(text, section.end())
    return following.start() if following else len(text)


def write_calibration_block(path: Path, dataset: str, block: str) -> None:
    """Put ``block`` (from :func:`calibration_block`) into the markdown file ``path``: in place of that
    dataset's block, else at the end of the ``## Calibration`` section (added at the end when the file has
    none), the file created with :data:`TITLE` when it does not exist. Nothing else of the file changes."""
    path = Path(path)
    text = path.read_text() if path.exists() else f"{TITLE}\n\n"
    start, end = block_markers(dataset)
    if start in text and end in text and text.index(start) < text.index(end):
        before, _, rest = text.partition(start)
        _, _, after = rest.partition(end)
        text = before + block + after
    else:
        if _section_end(text) is None:
            text = text.rstrip("\n") + "\n\n" + CALIBRATION_SECTION
        cut = _section_end(text)
        head = text[:cut].rstrip("\n")
        tail = text[cut:]
        text = head + "\n\n" + block + "\n" + ("\n" + tail if tail else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
