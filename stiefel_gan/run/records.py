"""The run's local records: ``metrics.jsonl``, ``series.jsonl``, ``metric_status.jsonl`` and ``status.json``,
written and read back.

JSON has no non-finite numbers, so ``nan``, ``inf`` and ``-inf`` are written as the *strings* ``"nan"``,
``"inf"`` and ``"-inf"`` (lossless, unlike ``null``, which would merge a diverged ``inf`` loss with a
``nan`` one); :func:`read_metrics` and :func:`read_series` turn them back into floats. Every line is
flushed when written, so a crash loses at most the line being written; a torn last line (no
trailing newline) is ignored by the readers.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Iterator

from ..config.paths import METRIC_STATUS_FILE, METRICS_FILE, RUN_STATUSES, SERIES_FILE, RunDir

#: How non-finite floats are spelled in the JSONL files (JSON itself has no NaN or infinity).
_NONFINITE_TO_JSON = {"nan": "nan", "inf": "inf", "-inf": "-inf"}

_JSON_TO_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def encode_float(value: float) -> float | str:
    """A float as JSON can hold it: finite values unchanged, ``nan``/``inf``/``-inf`` as strings."""
    if math.isfinite(value):
        return value
    return _NONFINITE_TO_JSON[repr(value)]


def decode_float(value: float | int | str) -> float:
    if isinstance(value, str):
        return _JSON_TO_NONFINITE[value]
    return float(value)


def write_line(handle, row: dict) -> None:
    # allow_nan=False: a non-finite float that escaped encode_float must fail here, not write a
    # line ("NaN") that strict JSON readers reject.
    handle.write(json.dumps(row, allow_nan=False) + "\n")
    handle.flush()


def _complete_lines(path: Path) -> Iterator[dict]:
    """Yield the object of each complete line of a JSONL file.

    A last line without its newline is a write torn by a crash and is skipped; a malformed complete
    line is corruption and raises.
    """
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    # the element after the last "\n" is either "" or the torn tail: both are dropped
    for number, line in enumerate(lines[:-1], start=1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number} is not a JSON line ({error.msg})") from None


def read_metrics(run_dir: Path) -> list[dict]:
    """The rows of ``run_dir/metrics.jsonl``: ``{"step": int, name: float, ...}``, in logged order.

    ``"nan"``, ``"inf"`` and ``"-inf"`` strings are returned as the floats they stand for.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise ValueError(f"run_dir={str(run_dir)!r} has no {METRICS_FILE}")
    return [
        {key: (int(value) if key == "step" else decode_float(value)) for key, value in row.items()}
        for row in _complete_lines(path)
    ]


def read_series(run_dir: Path) -> list[dict]:
    """The rows of ``run_dir/series.jsonl``: ``{"step", "key", "xs", "series"}`` with float lists."""
    path = Path(run_dir) / SERIES_FILE
    if not path.is_file():
        raise ValueError(f"run_dir={str(run_dir)!r} has no {SERIES_FILE}")
    return [
        {
            "step": int(row["step"]),
            "key": row["key"],
            "xs": [decode_float(x) for x in row["xs"]],
            "series": {name: [decode_float(y) for y in ys] for name, ys in row["series"].items()},
        }
        for row in _complete_lines(path)
    ]


def read_metric_status(run_dir: Path) -> list[dict]:
    """The rows of ``run_dir/metric_status.jsonl``: ``{"step": int, "quality/<metric>_status": reason}``
    for each evaluation that left a metric NaN; ``[]`` when none did (the file is then absent)."""
    path = Path(run_dir) / METRIC_STATUS_FILE
    return list(_complete_lines(path)) if path.is_file() else []


def _replace_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temp file in ``path``'s directory, then ``os.replace`` it onto ``path``: a crash
    during the write leaves the old file or the new one, never half of one."""
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, prefix=path.name,
                                     suffix=".tmp", delete=False) as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, path)


def truncate_jsonl(path: Path, last_step: int) -> None:
    """Keep the complete rows with ``step <= last_step``, rewritten atomically."""
    if not path.is_file():
        return
    kept = [row for row in _complete_lines(path) if row["step"] <= last_step]
    _replace_atomically(path, "".join(json.dumps(row, allow_nan=False) + "\n" for row in kept))


def write_status(run_dir: Path, status: str, reason: str, step: int) -> dict:
    """Write ``run_dir/status.json``, ``{"status", "reason", "step"}``, atomically (a reader, the report
    of a study still running, never sees half of it); returns what it wrote."""
    if status not in RUN_STATUSES:
        raise ValueError(f"status={status!r} is not allowed: use one of {', '.join(RUN_STATUSES)}")
    record = {"status": status, "reason": reason, "step": int(step)}
    _replace_atomically(RunDir(run_dir).status, json.dumps(record) + "\n")
    return record


def read_status(run_dir: Path) -> dict | None:
    """``run_dir/status.json`` as written by :func:`write_status`; ``None`` for a run written before runs
    recorded their status."""
    path = RunDir(run_dir).status
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
