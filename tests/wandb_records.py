"""Test helper: read an offline W&B run back through wandb's own reader, ``wandb leet inspect --json``.

wandb 0.31 writes an offline run only as its binary transaction log ``run-<id>.wandb``; its CLI prints
the log's records as one JSON object per line (``{"num", "type", <type>: {...}}``). This helper folds
those records into the run's attributes, config, history and summary, the way the W&B server would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class OfflineRun:
    """``history`` holds one dict per committed step, with wandb's ``_step``; ``config`` and ``summary``
    omit wandb's internal ``_wandb`` entry; ``metrics`` maps each ``define_metric`` name to its record."""

    run_id: str
    name: str
    group: str
    job_type: str
    tags: list[str]
    project: str
    config: dict
    history: list[dict]
    summary: dict
    metrics: dict[str, dict]


def find_wandb_file(path: Path) -> Path:
    """``path`` itself, or the newest ``run-*.wandb`` below it (a resumed run writes a second one)."""
    path = Path(path)
    if path.is_file():
        return path
    found = {p.resolve() for p in path.rglob("run-*.wandb")}  # resolve(): the latest-run symlink
    assert found, f"{path} holds no run-*.wandb file"
    return max(found, key=lambda p: (p.stat().st_mtime_ns, str(p)))


def records(path: Path) -> list[dict]:
    """Every record of the transaction log, as wandb's CLI prints it."""
    wandb_file = find_wandb_file(path)
    result = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(wandb_file)],
                            capture_output=True, text=True, check=True)
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def _merge(target: dict, update: dict) -> None:
    """Set each of ``update``'s keys; the CLI spells a nested key with dots (``samples.path``),
    which become nested dicts again (``{"samples": {"path": ...}}``)."""
    for dotted, value in update.items():
        *parents, last = dotted.split(".")
        node = target
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value


def read_offline_run(path: Path) -> OfflineRun:
    run_record: dict[str, Any] | None = None
    config: dict = {}
    summary: dict = {}
    history: list[dict] = []
    metrics: dict[str, dict] = {}
    for record in records(path):
        kind = record["type"]
        body = record.get(kind, {})
        if kind == "run" and run_record is None:
            run_record = body
            _merge(config, body.get("config", {}).get("update", {}))
        elif kind == "config":
            _merge(config, body.get("update", {}))
        elif kind == "summary":
            _merge(summary, body.get("update", {}))
        elif kind == "history":
            row: dict = {}
            _merge(row, body.get("item", {}))
            history.append(row)
        elif kind == "metric":
            metrics[body.get("name") or body.get("glob_name")] = body
    assert run_record is not None, f"{path} holds no run record"
    config.pop("_wandb", None)
    summary.pop("_wandb", None)
    return OfflineRun(run_id=run_record["run_id"], name=run_record.get("display_name", ""),
                      group=run_record.get("run_group", ""), job_type=run_record.get("job_type", ""),
                      tags=list(run_record.get("tags", [])), project=run_record.get("project", ""),
                      config=config, history=history, summary=summary, metrics=metrics)
