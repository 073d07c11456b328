"""Local reports from finished runs: ``report.md`` with statistics over seeds, and PNG figures.

Runs are grouped into *variants*: by the config's ``variant`` label where a study set one (the
``configs/variant/*`` presets), otherwise by what differs between the runs' configs apart from the seed
and names. Within a variant the runs are seeds. The report (documented table by table in
``docs/report.md``):

1. **Sample quality first**, one table per quality metric: per variant the number of seeds ``n``, the
   final value, the mean of the last :data:`~stiefel_gan.statistics.LAST_EVALUATIONS` evaluations and the
   area under the quality curve (its time average, :func:`~stiefel_gan.statistics.curve_area`), each as
   mean ± std over seeds; and each one's difference from the SN baseline, paired by seed, with a
   bootstrap 95% interval (:func:`~stiefel_gan.statistics.paired_bootstrap`), marked *inconclusive* where
   the interval contains 0.
2. In a tuning study (labels ``<method>@<setting>``), per method its best and its median setting.
3. Losses and D's outputs; then the scalar diagnostics (Lipschitz bounds, saturation); each in its own table.
4. Per layer: the spectrum curve fitted to each layer's reshaped spectrum, and the operator-norm and
   FFT-norm ratios to the reshaped norm (SN vs fair SN first).
5. Figures: curves with seed bands, samples, squared spectra (Miyato's Fig. 3 view), reshaped vs
   operator spectra, gradient norms; every seed, or the median seed when a variant has more than
   :data:`MAX_SEEDS_SHOWN` (said in the caption).
"""

from __future__ import annotations

import io
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from PIL import Image  # noqa: E402

from .config import disc_label, flatten  # noqa: E402
from .data import MIXTURES, mixture_centers, mixture_std  # noqa: E402
from .manifold.spectra import curve_values  # noqa: E402
from .metrics.toy import HIGH_QUALITY_STDS  # noqa: E402
from .statistics import (  # noqa: E402
    CONFIDENCE,
    LAST_EVALUATIONS,
    PairedDifference,
    Summary,
    curve_area,
    last_mean,
    paired_bootstrap,
    summarize,
)
from .rundir import CONFIG_FILE, METRICS_FILE, REPORT_FILE, RunDir  # noqa: E402
from .tracking import read_metrics  # noqa: E402

#: losses and D's mean outputs: their own table, in this order
HEADLINE = ("loss/d", "loss/g", "d/real", "d/fake")
#: per-layer or bookkeeping keys, shown in the per-layer tables and figures or not at all
PER_LAYER_PREFIXES = ("sigma_max/", "drift/", "tau/", "eps/", "sigma/", "lr/", "perf/", "grad_norm/",
                      "spectrum/", "lambda/", "operator_norm/", "fft_norm/", "reshape_norm/", "norm_ratio/",
                      "fit_tau/", "fit_eps/", "fit_rmse/")
QUALITY_PREFIX = "quality/"
#: ``quality/`` keys that say how a number was measured (protocol sample counts, the Geometry Score's
#: gamma, the number of modes) or a spread within one run (IS / KID std): listed, not compared
MEASUREMENT_SETTINGS = {"n_fake", "n_real", "n_is", "is_splits", "kid_subsets", "kid_subset_size", "geometry_gamma",
                        "n_modes", "isc_std", "kid_std"}
#: quality metrics where lower is better; the others listed in HIGHER_IS_BETTER improve upwards
LOWER_IS_BETTER = {"digits_fd", "fid", "kid_mean", "class_kl", "mode_kl", "geometry_score"}
HIGHER_IS_BETTER = {"isc_mean", "classes_covered", "modes_covered", "high_quality_fraction"}
#: the metric that ranks settings and picks the median seed: the first of these a report has
PRIMARY_QUALITY = ("fid", "digits_fd", "isc_mean", "modes_covered", "high_quality_fraction", "mode_kl",
                   "geometry_score")
#: a variant with more seeds than this shows its median seed (by the primary metric) in the figures
MAX_SEEDS_SHOWN = 5
#: the baseline "learned" (Note [did the baseline learn]): a lower-is-better metric fell to at most this
#: fraction of its first evaluation; modes covered reached at least this fraction of the modes
LEARNED_FRACTION = 0.75
#: separates a tuning study's method from its setting in a variant label: ``sn@lr_d=2e-4``
SETTING_SEPARATOR = "@"

IGNORED_FOR_VARIANTS = {"train.seed", "run_name", "name", "resume", "train.progress", "train.device", "train.threads",
                        "wandb.tags", "wandb.mode", "wandb.group", "out_dir"}


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


def _load_config(run_dir: Path) -> dict:
    return OmegaConf.to_container(OmegaConf.load(RunDir(run_dir).config))


def _lookup(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


def _labels_by_differing_keys(configs: dict[Path, dict]) -> dict[Path, str]:
    """Label each run by its discriminator (``sn``, ``stiefel_grid``, ``stiefel_fixed_svd``:
    :func:`~stiefel_gan.config.disc_label`) and the config keys that differ between the runs (seed and
    names aside)."""
    # values as JSON text, so that lists (tags, learn) compare and hash like scalars
    flats = {d: {k: json.dumps(v) for k, v in flatten(c).items() if k not in IGNORED_FOR_VARIANTS}
             for d, c in configs.items()}
    discs = {d: disc_label(OmegaConf.create(c["disc"])) for d, c in configs.items()}
    keys = set().union(*flats.values())
    varying = {k for k in keys if len({f.get(k) for f in flats.values()}) > 1}
    # show the discriminator first; disc knobs that only belong to one discriminator are implied by it
    varying = {k for k in varying if not k.startswith("disc.")
               or len({(discs[d], f.get(k)) for d, f in flats.items()}) > len(set(discs.values()))}
    return {d: " ".join([discs[d]] + [f"{key}={_lookup(c, key)}" for key in sorted(varying)])
            for d, c in configs.items()}


def group_variants(run_dirs: list[Path]) -> dict[str, list[Path]]:
    """Group runs into variants: by the config's ``variant`` label where set, else by the differing config keys.

    Runs without a label are labelled among themselves by what differs between their configs (seed and
    names aside); runs with one keep it.
    """
    configs = {d: _load_config(d) for d in run_dirs}
    unlabelled = {d: c for d, c in configs.items() if not c.get("variant")}
    labels = _labels_by_differing_keys(unlabelled) if unlabelled else {}
    groups: dict[str, list[Path]] = defaultdict(list)
    for d, config in configs.items():
        groups[config.get("variant") or labels[d]].append(d)
    return dict(groups)


# ------------------------------------------------------------------------------------------------ runs


@dataclass
class Run:
    """One run directory's config, seed, logged rows and last spectra."""

    run_dir: Path
    config: dict
    rows: list[dict]
    spectra: dict = field(default_factory=dict)

    @property
    def seed(self) -> int:
        return int(self.config["train"]["seed"])

    def curve(self, key: str) -> tuple[list[int], list[float]]:
        """Steps and finite values where ``key`` was logged (the last value of a step that was logged twice)."""
        by_step = {}
        for row in self.rows:
            value = row.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                by_step[int(row["step"])] = float(value)
        steps = sorted(by_step)
        return steps, [by_step[s] for s in steps]

    def final(self, key: str) -> float:
        values = self.curve(key)[1]
        return values[-1] if values else math.nan

    def keys(self) -> set[str]:
        return set().union(*self.rows) - {"step"} if self.rows else set()


def _last_spectra(run_dir: Path) -> dict:
    files = sorted(RunDir(run_dir).spectra_dir.glob("step_*.json"))
    return json.loads(files[-1].read_text()) if files else {}


def load_runs(groups: dict[str, list[Path]]) -> dict[str, list[Run]]:
    return {label: [Run(d, _load_config(d), read_metrics(d), _last_spectra(d)) for d in dirs]
            for label, dirs in groups.items()}


# ------------------------------------------------------------------------------------------ statistics


def _metric_name(key: str) -> str:
    return key[len(QUALITY_PREFIX):] if key.startswith(QUALITY_PREFIX) else key


def better_direction(key: str) -> str | None:
    """``"lower"``, ``"higher"`` or None (unknown) for a quality key."""
    name = _metric_name(key)
    if name in LOWER_IS_BETTER:
        return "lower"
    return "higher" if name in HIGHER_IS_BETTER else None


def quality_keys(runs: dict[str, list[Run]]) -> list[str]:
    """The compared quality metrics, the primary one first (then alphabetical)."""
    keys = {k for rs in runs.values() for r in rs for k in r.keys()
            if k.startswith(QUALITY_PREFIX) and _metric_name(k) not in MEASUREMENT_SETTINGS}
    primary = primary_quality_key(keys)
    return sorted(keys, key=lambda k: (k != primary, k))


def primary_quality_key(keys) -> str | None:
    for name in PRIMARY_QUALITY:
        if QUALITY_PREFIX + name in keys:
            return QUALITY_PREFIX + name
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


def _per_seed(runs: list[Run], key: str, statistic: str) -> dict[int, float]:
    """``{seed: statistic}``; a seed run twice in one variant counts once, as the mean of its runs."""
    values: dict[int, list[float]] = defaultdict(list)
    for run in runs:
        values[run.seed].append(getattr(curve_statistics(run, key), statistic))
    return {seed: float(np.mean(v)) for seed, v in values.items()}


def _ranking_value(runs: list[Run], key: str) -> float:
    """Mean final value, signed so that smaller is better (NaN last)."""
    mean = summarize(list(_per_seed(runs, key, "final").values())).mean
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


@dataclass(frozen=True)
class Baseline:
    label: str | None
    reason: str


def choose_baseline(runs: dict[str, list[Run]], key: str | None) -> Baseline:
    """The SN baseline: the variant whose ``disc.kind`` is ``sn`` (study contract).

    Several SN variants: the one labelled ``sn``; else, in a tuning study, SN's best setting by the
    primary metric (each method is compared with tuned SN); else the first.
    """
    sn = [label for label, rs in runs.items() if all(r.config["disc"]["kind"] == "sn" for r in rs)]
    if not sn:
        return Baseline(None, "no variant has disc.kind=sn: differences from SN are not shown")
    if len(sn) == 1:
        return Baseline(sn[0], "the variant with disc.kind=sn")
    if "sn" in sn:
        return Baseline("sn", f"the variant labelled sn (of {len(sn)} with disc.kind=sn)")
    if key is not None and all(SETTING_SEPARATOR in label for label in sn):
        best = min(sn, key=lambda label: _ranking_value(runs[label], key))
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
    name, direction = _metric_name(key), better_direction(key)
    if name == "modes_covered":
        n_modes = run.final(QUALITY_PREFIX + "n_modes")
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
    per_seed = "; ".join(f"seed {run.seed}: {_number(run.curve(key)[1][0])} → {_number(run.final(key))}"
                         + ("" if learned else " (did not learn)") for run, learned in verdicts)
    failed = sum(learned is False for _, learned in verdicts)
    lines = ["## Did the baseline learn?", "", f"{key} of **{baseline.label}**, first evaluation → final: {per_seed}.", ""]
    if failed:
        lines += [f"**The baseline did not learn in {failed} of {len(verdicts)} seeds**: differences from it in those "
                  "seeds compare a variant with a baseline that never left its start, not with a working SN.", ""]
    else:
        lines += ["The baseline learned in every seed (the rule: docs/report.md).", ""]
    return lines


# ------------------------------------------------------------------------------------------ formatting


def _number(value: float) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4g}"


def _summary(summary: Summary) -> str:
    if summary.n == 0:
        return "-"
    if summary.n == 1:
        return _number(summary.mean)
    return f"{_number(summary.mean)} ± {float(summary.std):.2g}"


def _difference(difference: PairedDifference, direction: str | None) -> str:
    if difference.n == 0:
        return "-"
    text = f"{difference.mean:+.4g}"
    if difference.n < 2:
        return f"{text} (1 seed: no interval)"
    text += f" [{difference.low:+.3g}, {difference.high:+.3g}]"
    if difference.inconclusive:
        return f"{text} inconclusive"
    if direction is None:
        return text + (" higher" if difference.mean > 0 else " lower")
    improved = (difference.mean < 0) == (direction == "lower")
    return text + (" **better**" if improved else " **worse**")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(row) + " |" for row in rows])


# ------------------------------------------------------------------------------------------ tables


def quality_tables(runs: dict[str, list[Run]], keys: list[str], baseline: Baseline) -> list[str]:
    lines = []
    statistics = ("final", "last", "area")
    for key in keys:
        direction = better_direction(key)
        lines += ["", f"### {key}" + (f" ({direction} is better)" if direction else ""), ""]
        header = ["variant", "n", "final", f"last {LAST_EVALUATIONS}", "AUC"]
        if baseline.label is not None:
            header += [f"Δ final vs {baseline.label}", f"Δ last {LAST_EVALUATIONS}", "Δ AUC"]
        rows = []
        for label, rs in runs.items():
            per_seed = {s: _per_seed(rs, key, s) for s in statistics}
            summaries = [summarize(list(per_seed[s].values())) for s in statistics]
            row = [label, str(summaries[0].n)] + [_summary(s) for s in summaries]
            if baseline.label is not None:
                if label == baseline.label:
                    row += ["baseline"] * 3
                else:
                    row += [_difference(paired_bootstrap(per_seed[s], _per_seed(runs[baseline.label], key, s)),
                                        direction) for s in statistics]
            rows.append(row)
        lines += _table(header, rows)
    return lines


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
        ranked = sorted(labels, key=lambda label: _ranking_value(runs[label], key))
        best, median = ranked[0], ranked[(len(ranked) - 1) // 2]
        rows.append([method, str(len(labels))]
                    + [cell for label in (best, median) for cell in
                       (label.split(SETTING_SEPARATOR, 1)[1],
                        _summary(summarize(list(_per_seed(runs[label], key, "final").values()))))])
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
                cell += f" (last {LAST_EVALUATIONS}: {_number(lasts.mean)})"
            cells.append(cell)
        rows.append([label, str(len(rs))] + cells)
    return _table(header, rows)


def _layer_records(runs: dict[str, list[Run]]) -> dict[str, dict[str, list[dict]]]:
    """``{layer: {variant: [record of each run]}}`` from the runs' last spectra, layers in network order."""
    records: dict[str, dict[str, list[dict]]] = {}
    for label, rs in runs.items():
        for run in rs:
            for layer, record in run.spectra.get("layers", {}).items():
                records.setdefault(layer, {}).setdefault(label, []).append(record)
    return records


def _sn_first(labels: list[str], runs: dict[str, list[Run]]) -> list[str]:
    kind = {label: runs[label][0].config["disc"]["kind"] for label in labels}
    order = {"sn": 0, "fair_sn": 1}
    return sorted(labels, key=lambda label: order.get(kind[label], 2))


def fit_table(runs: dict[str, list[Run]]) -> list[str]:
    records = _layer_records(runs)
    layers = [layer for layer, per in records.items() if any("fit" in r for rs in per.values() for r in rs)]
    if not layers:
        return []
    labels = list(runs)
    rows = []
    for layer in layers:
        row = [layer]
        for label in labels:
            fits = [r["fit"] for r in records[layer].get(label, []) if "fit" in r]
            if fits:
                tau = summarize([f["tau"] for f in fits])
                eps = summarize([f["eps"] for f in fits])
                rmse = summarize([f["rmse"] for f in fits])
                row.append(f"τ {_summary(tau)}, ε {_summary(eps)} (rmse {_number(rmse.mean)})")
            else:
                row.append("-")
        rows.append(row)
    return (["", "## Spectrum shape per layer (last diagnostics step)", "",
             "The curve ε + (1 - ε)(1 - t)^τ of docs/design.md fitted by least squares to each layer's reshaped "
             "singular values divided by the largest (mean ± std over seeds; rmse: RMS residual). τ < 1 is "
             "concave; in Miyato's squared view (spectra.png) the curve is squared and concave for τ < 0.5.", ""]
            + _table(["layer"] + labels, rows))


def norm_ratio_tables(runs: dict[str, list[Run]]) -> list[str]:
    records = _layer_records(runs)
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


# ------------------------------------------------------------------------------------------ figures


def _panel_grid(n_panels: int, max_cols: int, panel_size: tuple[float, float]):
    """A figure with ``n_panels`` axes in rows of at most ``max_cols``; unused axes are hidden."""
    cols = min(max_cols, n_panels)
    rows = math.ceil(n_panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(panel_size[0] * cols, panel_size[1] * rows), squeeze=False)
    for ax in list(axes.flat)[n_panels:]:
        ax.axis("off")
    return fig, list(axes.flat)[:n_panels]


def _save(fig, path: Path, dpi: int = 110) -> Path:
    """Save as a 256-colour palette PNG: plots and grey sample grids lose nothing visible, and the files
    shrink several times (figures are published in docs/, where each must stay small)."""
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi)
    plt.close(fig)
    buffer.seek(0)
    with Image.open(buffer) as image:
        image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path


def _colors(labels) -> dict[str, tuple]:
    cycle = plt.get_cmap("tab10")
    return {label: cycle(i % 10) for i, label in enumerate(labels)}


def plot_samples(runs: dict[str, list[Run]], key: str | None, path: Path, every_seed: bool = True) -> Path | None:
    """Rows: variants; columns: the shown seeds' final sample grids (one row of variants side by side when
    each shows one seed). ``every_seed=False``: each variant's median seed by ``key`` only (a figure small
    enough to publish)."""
    panels = {label: [(r, sorted(RunDir(r.run_dir).samples_dir.glob("step_*.png")))
                      for r in (shown_runs(rs, key) if every_seed else [median_run(rs, key)])]
              for label, rs in runs.items()}
    panels = {label: [(r, files[-1]) for r, files in shown if files] for label, shown in panels.items()}
    panels = {label: shown for label, shown in panels.items() if shown}
    if not panels:
        return None
    cols = max(len(shown) for shown in panels.values())
    panel_size = (1.75, 2.15)  # at dpi 100 a 146-pixel sample grid is drawn at about 1.2x
    if cols == 1:  # one panel per variant: in rows of at most 8
        fig, axes = _panel_grid(len(panels), 8, panel_size)
        rows = [[ax] for ax in axes]
    else:
        fig, grid = plt.subplots(len(panels), cols, figsize=(panel_size[0] * cols, panel_size[1] * len(panels)),
                                 squeeze=False)
        rows = list(grid)
    for row, (label, shown) in zip(rows, panels.items()):
        for ax in row:
            ax.axis("off")
        for ax, (run, image) in zip(row, shown):
            ax.imshow(plt.imread(image), cmap="gray", interpolation="nearest")  # sharp pixels, small files
            ax.set_title(f"{label}\nseed {run.seed}", fontsize=7)  # two lines: long tuning labels stay apart
    return _save(fig, path, dpi=100)


def plot_curves(runs: dict[str, list[Run]], keys: list[str], path: Path) -> Path | None:
    """Metric vs step per variant: the mean over seeds, and a band from the seeds' minimum to maximum."""
    if not keys:
        return None
    colors = _colors(runs)
    fig, axes = _panel_grid(len(keys), 3, (4.5, 3.2))
    for ax, key in zip(axes, keys):
        for label, rs in runs.items():
            per_step = defaultdict(list)
            for run in rs:
                for step, value in zip(*run.curve(key)):
                    per_step[step].append(value)
            if not per_step:
                continue
            steps = sorted(per_step)
            ax.plot(steps, [np.mean(per_step[s]) for s in steps], color=colors[label], label=label)
            if len(rs) > 1:
                ax.fill_between(steps, [min(per_step[s]) for s in steps], [max(per_step[s]) for s in steps],
                                color=colors[label], alpha=0.2, linewidth=0)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("generator step")
    axes[0].legend(fontsize=7)
    return _save(fig, path)


def _squared_view(values) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(values, dtype=float)
    xs = np.linspace(0, 1, values.size) if values.size > 1 else np.zeros(1)
    return xs, (values / values.max()) ** 2


def plot_spectra(runs: dict[str, list[Run]], key: str | None, path: Path) -> Path | None:
    """Miyato's Fig. 3 view: each layer's normalized *squared* reshaped spectrum ``(s_i / s_0)^2`` vs
    ``i / (k - 1)``, one panel per layer, one thin line per shown seed in the variant's colour, and the
    squared fitted curve of the variant's mean (tau, eps) dashed."""
    records = _layer_records({label: shown_runs(rs, key) for label, rs in runs.items()})
    # a layer with one singular value (D's last, 1 x n) has no shape to show
    records = {layer: per for layer, per in records.items()
               if any(len(r.get("reshaped", [])) > 1 for rs in per.values() for r in rs)}
    if not records:
        return None
    colors = _colors(runs)
    fig, axes = _panel_grid(len(records), 4, (3.6, 2.9))
    curve_points = 100
    for ax, (layer, per_variant) in zip(axes, records.items()):
        for label, layer_records in per_variant.items():
            for index, record in enumerate(layer_records):
                values = record.get("reshaped", [])
                if len(values) and max(values) > 0:
                    xs, ys = _squared_view(values)
                    ax.plot(xs, ys, color=colors[label], alpha=0.7, linewidth=1,
                            marker="o" if len(values) < 3 else None, label=label if index == 0 else None)
            fits = [r["fit"] for r in layer_records if "fit" in r]
            if fits:
                tau, eps = np.mean([f["tau"] for f in fits]), np.mean([f["eps"] for f in fits])
                fitted = curve_values(curve_points, float(tau), float(eps), 1.0).numpy() ** 2
                ax.plot(np.linspace(0, 1, curve_points), fitted, "--", color=colors[label], linewidth=1)
    return _save_squared_view(fig, axes, list(records), path, legend_fontsize=7)


def plot_operator_spectra(runs: dict[str, list[Run]], key: str | None, path: Path) -> Path | None:
    """Per conv layer, the squared normalized reshaped spectrum (solid) next to the circular-FFT operator's
    (dashed), one line per shown seed in the variant's colour."""
    records = _layer_records({label: shown_runs(rs, key) for label, rs in runs.items()})
    convs = {layer: per for layer, per in records.items()
             if any("fft_normalized" in r for rs in per.values() for r in rs)}
    if not convs:
        return None
    colors = _colors(runs)
    fig, axes = _panel_grid(len(convs), 4, (3.6, 2.9))
    for ax, (layer, per_variant) in zip(axes, convs.items()):
        for label, layer_records in per_variant.items():
            for index, record in enumerate(layer_records):
                if "fft_normalized" not in record:
                    continue
                ax.plot(*_squared_view(record["reshaped"]), "-", color=colors[label], alpha=0.7, linewidth=1,
                        label=f"{label} reshaped" if index == 0 else None)
                operator = np.asarray(record["fft_normalized"]) ** 2
                ax.plot(np.linspace(0, 1, operator.size), operator, "--", color=colors[label], alpha=0.7,
                        linewidth=1, label=f"{label} operator (FFT)" if index == 0 else None)
    return _save_squared_view(fig, axes, list(convs), path, legend_fontsize=6)


def _save_squared_view(fig, axes, layers: list[str], path: Path, legend_fontsize: int) -> Path:
    """Label the panels of a squared-spectrum figure (one per layer, on the axes of :func:`_squared_view`)
    and save it."""
    for ax, layer in zip(axes, layers):
        ax.set_title(layer, fontsize=9)
        ax.set_ylim(0, 1.05)
    axes[0].legend(fontsize=legend_fontsize)
    fig.supxlabel("normalized index i / (k - 1)")
    fig.supylabel("(singular value / largest)²")
    return _save(fig, path)


def plot_gradient_norms(runs: dict[str, list[Run]], key: str | None, path: Path) -> Path | None:
    """Final gradient norm of D's loss w.r.t. each layer's effective weight W, and for Stiefel layers
    w.r.t. X (Riemannian) and lambda: one line per shown seed and factor, layers in network order."""
    factors = {"W": "-", "X": "--", "lambda": ":"}
    colors = _colors(runs)
    curves = []
    for label, rs in runs.items():
        for index, run in enumerate(shown_runs(rs, key)):
            # the last diagnostics row, whose keys are in network order
            row = next((row for row in reversed(run.rows) if any(k.startswith("grad_norm/") for k in row)), {})
            for factor in factors:
                values = {k[len("grad_norm/"):-len(factor) - 1]: value for k, value in row.items()
                          if k.startswith("grad_norm/") and k.endswith(f"/{factor}")}
                if values:
                    curves.append((label, index, factor, values))
    if not curves:
        return None
    layers = list(dict.fromkeys(layer for *_, values in curves for layer in values))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len(layers)), 3.8))
    for label, index, factor, values in curves:
        ax.plot([layers.index(layer) for layer in values], list(values.values()), factors[factor], marker="o",
                color=colors[label], alpha=0.8, markersize=3, label=f"{label} ({factor})" if index == 0 else None)
    ax.set_xticks(range(len(layers)), layers, rotation=45, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("||grad of D loss||")
    ax.legend(fontsize=7)
    return _save(fig, path)


def scatter_png(points: np.ndarray, path: Path, mixture: str | None = None) -> None:
    """2-D samples as a scatter plot; with ``mixture`` (a name of :data:`~stiefel_gan.data.MIXTURES`), over
    the real mixture's modes on fixed axes.

    Each mode is drawn as its centre and the circle of radius ``3 std`` within which a sample counts as
    high quality (:mod:`stiefel_gan.metrics.toy`); the axes span the modes plus a margin of half the
    largest centre coordinate, the same at every step and for every run, so plots compare at a glance.
    Points outside the axes are counted in the title.
    """
    fig = scatter_figure(points, mixture)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def scatter_figure(points: np.ndarray, mixture: str | None = None):
    """The figure :func:`scatter_png` saves."""
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(points[:, 0], points[:, 1], s=3, alpha=0.6, color="tab:blue", zorder=2)
    if mixture is not None:
        if mixture not in MIXTURES:
            raise ValueError(f"mixture={mixture!r} is not allowed: use one of {', '.join(MIXTURES)} or None")
        centers, std = mixture_centers(mixture).numpy(), mixture_std(mixture)
        limit = 1.5 * float(np.abs(centers).max())
        for center in centers:
            ax.add_patch(plt.Circle(center, HIGH_QUALITY_STDS * std, fill=False, color="tab:red", linewidth=1,
                                    zorder=3))
        ax.scatter(centers[:, 0], centers[:, 1], marker="x", s=20, color="tab:red", zorder=3)
        ax.set_xlim(-limit, limit)
        ax.set_ylim(-limit, limit)
        outside = int(np.sum(np.any(np.abs(points) > limit, axis=1)))
        ax.set_title(f"{mixture}: {len(points)} samples" + (f", {outside} outside the axes" if outside else ""),
                     fontsize=9)
    ax.set_aspect("equal")
    return fig


# ------------------------------------------------------------------------------------------ the report


def write_reports(run_dirs: list[Path], out_dir: Path, all_seed_samples: bool = True) -> list[Path]:
    """:func:`write_comparison` of the runs, one report per dataset: runs on different data compare nothing
    (a study over ``data=ring8,grid25`` gets ``out_dir/ring8/report.md`` and ``out_dir/grid25/report.md``,
    each against its own SN baseline)."""
    by_dataset: dict[str, list[Path]] = defaultdict(list)
    for run_dir in run_dirs:
        by_dataset[_load_config(run_dir)["data"]["name"]].append(run_dir)
    if len(by_dataset) == 1:
        return [write_comparison(run_dirs, out_dir, all_seed_samples)]
    return [write_comparison(dirs, Path(out_dir) / dataset, all_seed_samples) for dataset, dirs in sorted(by_dataset.items())]


def write_comparison(run_dirs: list[Path], out_dir: Path, all_seed_samples: bool = True) -> Path:
    """Write ``out_dir/report.md`` and its figures comparing the runs' variants (module docstring);
    ``all_seed_samples=False`` leaves out ``samples_all_seeds.png``, the one figure that grows with the seeds."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    groups = group_variants(run_dirs)
    runs = load_runs(groups)
    keys = quality_keys(runs)
    primary = keys[0] if keys else None
    baseline = choose_baseline(runs, primary)
    if baseline.label is not None:  # the baseline first
        runs = {baseline.label: runs[baseline.label], **{k: v for k, v in runs.items() if k != baseline.label}}
    labelled = any(r.config.get("variant") for rs in runs.values() for r in rs)
    all_keys = set().union(*(r.keys() for rs in runs.values() for r in rs))
    settings = sorted(k for k in all_keys if k.startswith(QUALITY_PREFIX) and _metric_name(k) in MEASUREMENT_SETTINGS)

    lines = ["# stiefel_gan report", "",
             f"{len(run_dirs)} run(s) in {len(runs)} variant(s), grouped by "
             + ("the config's `variant` label." if labelled else "the config keys that differ between runs."),
             f"Baseline: **{baseline.label}** ({baseline.reason})." if baseline.label
             else f"Baseline: none ({baseline.reason}).",
             f"Per variant over seeds: mean ± std of the final value, of the mean of the last {LAST_EVALUATIONS} "
             "evaluations and of the area under the curve (its time average); n is the number of seeds. "
             f"Δ: variant minus baseline paired by seed, mean [{CONFIDENCE:.0%} percentile-bootstrap interval], "
             "*inconclusive* where the interval contains 0 (with 2 or 3 seeds the interval is the range of the "
             "per-seed differences: a difference is called only when every seed agrees).", ""]
    lines += baseline_check(runs, baseline, primary)
    if keys:
        lines += ["## Sample quality"] + quality_tables(runs, keys, baseline)
    if settings:
        lines += ["", "Measured with: " + ", ".join(
            f"{key} = {_summary(summarize([r.final(key) for rs in runs.values() for r in rs]))}" for key in settings)]
    lines += tuning_table(runs, primary)
    losses = [k for k in HEADLINE if k in all_keys]
    if losses:
        lines += ["", "## Losses and D's outputs (final, mean ± std over seeds; last "
                  f"{LAST_EVALUATIONS}: mean of the last {LAST_EVALUATIONS} logged values)", ""]
        lines += scalar_table(runs, losses, with_last=True)
    order = ("lipschitz/", "saturation/")
    diagnostics = sorted((k for k in all_keys if k not in HEADLINE and not k.startswith(QUALITY_PREFIX)
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
         "dashed: the fitted curve, squared)", plot_spectra(runs, primary, out_dir / "spectra.png")),
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
