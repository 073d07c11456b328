"""Finding runs on disk and grouping them into variants.

A directory is a run when it holds its config and its metrics (:meth:`RunDir.is_run`). Runs are
grouped by the config's ``variant`` label where a study set one, otherwise by the keys that differ
between their configs apart from :data:`~stiefel_gan.config.naming.NOT_VARIANT_KEYS` (the seed,
names, bookkeeping): within a variant the runs are seeds.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from ..config.naming import NOT_VARIANT_KEYS, disc_label
from ..config.paths import CONFIG_FILE, METRICS_FILE, RunDir
from ..config.schema import flatten
from ..config.tuning import SETTING_SEPARATOR  # noqa: F401 (the report's modules import it from here)
from ..measure.table import evaluation_reading
from ..run.records import read_metrics, read_status



def find_run_dirs(root: Path) -> list[Path]:
    """``root`` itself if it is a run directory, else every run directory below it."""
    root = Path(root)
    if not root.exists():
        raise ValueError(f"{root} is not allowed: no such directory")
    if (root / METRICS_FILE).is_file():
        return [root]
    runs = sorted(p.parent for p in root.rglob(METRICS_FILE) if (p.parent / CONFIG_FILE).is_file())
    if not runs:
        raise ValueError(f"{root} is not allowed: it holds no run directory (no {METRICS_FILE} with a {CONFIG_FILE})")
    return runs


def load_config(run_dir: Path) -> dict:
    return OmegaConf.to_container(OmegaConf.load(RunDir(run_dir).config))


def lookup(config: dict, dotted: str):
    """The value of a dotted key (``disc.tau``) in a nested config; a KeyError where it has none."""
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


def _labels_by_differing_keys(configs: dict[Path, dict]) -> dict[Path, str]:
    """Label each run by its discriminator (``sn``, ``stiefel_grid``, ``stiefel_fixed_svd``:
    :func:`~stiefel_gan.config.disc_label`) and the config keys that differ between the runs (seed and
    names aside)."""
    # values as JSON text, so that lists (tags, learn) compare and hash like scalars
    flats = {d: {k: json.dumps(v) for k, v in flatten(c).items() if k not in NOT_VARIANT_KEYS}
             for d, c in configs.items()}
    discs = {d: disc_label(OmegaConf.create(c["disc"])) for d, c in configs.items()}
    keys = set().union(*flats.values())
    varying = {k for k in keys if len({f.get(k) for f in flats.values()}) > 1}
    # show the discriminator first; disc knobs that only belong to one discriminator are implied by it
    varying = {k for k in varying if not k.startswith("disc.")
               or len({(discs[d], f.get(k)) for d, f in flats.items()}) > len(set(discs.values()))}
    return {d: " ".join([discs[d]] + [f"{key}={lookup(c, key)}" for key in sorted(varying)])
            for d, c in configs.items()}


def group_variants(run_dirs: list[Path]) -> dict[str, list[Path]]:
    """Group runs into variants: by the config's ``variant`` label where set, else by the differing config keys.

    Runs without a label are labelled among themselves by what differs between their configs (seed and
    names aside); runs with one keep it.
    """
    configs = {d: load_config(d) for d in run_dirs}
    unlabelled = {d: c for d, c in configs.items() if not c.get("variant")}
    labels = _labels_by_differing_keys(unlabelled) if unlabelled else {}
    groups: dict[str, list[Path]] = defaultdict(list)
    for d, config in configs.items():
        groups[config.get("variant") or labels[d]].append(d)
    return dict(groups)


@dataclass
class Run:
    """One run directory's config, seed, logged rows, last spectra and ``status.json`` (None: a run
    written before runs recorded their status, which only a finished run could be reported from)."""

    run_dir: Path
    config: dict
    rows: list[dict]
    spectra: dict = field(default_factory=dict)
    status: dict | None = None
    #: the spectra recorded at step 0, before D's first update (empty for runs written before they were, and
    #: for a run whose only spectra are those): what the trained spectra moved from
    initial_spectra: dict = field(default_factory=dict)

    @property
    def seed(self) -> int:
        return int(self.config["train"]["seed"])

    @property
    def finished(self) -> bool:
        """It reached ``train.steps``: a failed, diverged, interrupted or still running run (or one
        killed outright, which stays ``running``) is no seed of its variant's statistics."""
        return self.status is None or self.status["status"] == "finished"

    def curve(self, key: str) -> tuple[list[int], list[float]]:
        """Steps and values where ``key`` was measured, read by
        :func:`~stiefel_gan.measure.table.evaluation_reading` (the last value of a step logged twice)."""
        by_step = {}
        for row in self.rows:
            value = evaluation_reading(row, key)
            if value is not None:
                by_step[int(row["step"])] = value
        steps = sorted(by_step)
        return steps, [by_step[s] for s in steps]

    def final(self, key: str) -> float:
        values = self.curve(key)[1]
        return values[-1] if values else math.nan

    def keys(self) -> set[str]:
        return set().union(*self.rows) - {"step"} if self.rows else set()


def _first_and_last_spectra(run_dir: Path) -> tuple[dict, dict]:
    """The spectra of the run's step 0 (``{}`` when it has none, or they are its only ones) and its last."""
    files = sorted(RunDir(run_dir).spectra_dir.glob("step_*.json"))
    if not files:
        return {}, {}
    last = json.loads(files[-1].read_text())
    first = json.loads(files[0].read_text()) if len(files) > 1 else {}
    return (first if first.get("step") == 0 else {}), last


def load_runs(groups: dict[str, list[Path]]) -> dict[str, list[Run]]:
    runs = {}
    for label, dirs in groups.items():
        runs[label] = []
        for d in dirs:
            initial, last = _first_and_last_spectra(d)
            runs[label].append(Run(d, load_config(d), read_metrics(d), last, read_status(d), initial))
    return runs


def records_by_layer(runs: dict[str, list[Run]], initial: bool = False) -> dict[str, dict[str, list[dict]]]:
    """``{layer: {variant: [record of each run]}}`` from the runs' last spectra (``initial``: their step-0
    spectra), layers in network order."""
    records: dict[str, dict[str, list[dict]]] = {}
    for label, rs in runs.items():
        for run in rs:
            spectra = run.initial_spectra if initial else run.spectra
            for layer, record in spectra.get("layers", {}).items():
                records.setdefault(layer, {}).setdefault(label, []).append(record)
    return records
