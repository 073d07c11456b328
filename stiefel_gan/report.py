"""Local reports from finished runs: ``report.md`` with a table per variant and PNG plots.

A *variant* is a run's config without its seed (and names): runs that differ only by seed are
aggregated as mean and standard deviation of their final metrics.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from .config import disc_label, flatten  # noqa: E402
from .tracking import read_metrics  # noqa: E402

#: final metrics shown in the table, in this order, when present (other non-diagnostic keys follow)
HEADLINE = ("loss/d", "loss/g", "d/real", "d/fake")
#: per-layer or bookkeeping keys, plotted elsewhere or not at all
PER_LAYER_PREFIXES = ("sigma_max/", "drift/", "tau/", "eps/", "sigma/", "lr/", "perf/", "grad_norm/",
                      "spectrum/", "lambda/", "operator_norm/", "fft_norm/", "reshape_norm/", "norm_ratio/")


def find_run_dirs(root: Path) -> list[Path]:
    """``root`` itself if it is a run directory, else every run directory below it."""
    root = Path(root)
    if not root.exists():
        raise ValueError(f"{root} is not allowed: no such directory")
    if (root / "metrics.jsonl").is_file():
        return [root]
    runs = sorted(p.parent for p in root.rglob("metrics.jsonl") if (p.parent / "config.yaml").is_file())
    if not runs:
        raise ValueError(f"{root} is not allowed: it holds no run directory (no metrics.jsonl with a config.yaml)")
    return runs


def _disc_name(config: dict) -> str:
    """The study variant a run belongs to, else the label of its discriminator (``stiefel_grid``, ``sn``)."""
    return config.get("variant") or disc_label(OmegaConf.create(config["disc"]))


def _variant_label(config: dict, varying: set[str]) -> str:
    parts = [_disc_name(config)] + [f"{key}={_lookup(config, key)}" for key in sorted(varying)
                                    if key not in ("disc.kind", "variant")]
    return " ".join(parts)


def _lookup(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


IGNORED_FOR_VARIANTS = {"train.seed", "run_name", "name", "resume", "train.progress", "train.device", "train.threads",
                        "wandb.tags", "wandb.mode", "wandb.group", "out_dir"}


def group_variants(run_dirs: list[Path]) -> dict[str, list[Path]]:
    """Group runs whose configs differ only by seed; label each group by what differs between groups."""
    configs = {d: OmegaConf.to_container(OmegaConf.load(d / "config.yaml")) for d in run_dirs}
    # values as JSON text, so that lists (tags, learn) compare and hash like scalars
    flats = {d: {k: json.dumps(v) for k, v in flatten(c).items() if k not in IGNORED_FOR_VARIANTS}
             for d, c in configs.items()}
    keys = set().union(*flats.values())
    varying = {k for k in keys if len({f.get(k) for f in flats.values()}) > 1}
    # show the variant (or discriminator) first; the knobs it implies are not repeated
    names = {d: _disc_name(c) for d, c in configs.items()}
    varying = {k for k in varying if not (k.startswith("disc.") or k.startswith("optim.")) or
               len({(names[d], f.get(k)) for d, f in flats.items()}) > len(set(names.values()))}
    groups: dict[str, list[Path]] = defaultdict(list)
    for d in run_dirs:
        groups[_variant_label(configs[d], varying)].append(d)
    return dict(groups)


def _final_row(run_dir: Path) -> dict:
    rows = read_metrics(run_dir)
    if not rows:
        return {}
    final = {}
    for row in rows:  # some metrics are logged less often than others: keep each one's latest value
        final.update({k: v for k, v in row.items() if v is not None})
    return final


def _table_keys(finals: list[dict]) -> list[str]:
    keys = set().union(*finals) - {"step"}
    shown = [k for k in HEADLINE if k in keys]
    # sample quality first, then Lipschitz bounds and saturation, then anything else
    order = ("quality/", "lipschitz/", "saturation/")
    rest = [k for k in keys if k not in HEADLINE and not k.startswith(PER_LAYER_PREFIXES)]
    shown += sorted(rest, key=lambda k: (next((i for i, p in enumerate(order) if k.startswith(p)), len(order)), k))
    return shown


def _mean_std(values: list[float]) -> str:
    values = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not values:
        return "-"
    mean = float(np.mean(values))
    return f"{mean:.4g}" if len(values) == 1 else f"{mean:.4g} ± {float(np.std(values, ddof=1)):.2g}"


def _latest_samples(run_dir: Path) -> Path | None:
    samples = sorted((run_dir / "samples").glob("step_*.png"))
    return samples[-1] if samples else None


def plot_samples(groups: dict[str, list[Path]], path: Path) -> Path | None:
    """One panel per variant: the final sample grid of its first seed, side by side."""
    images = {label: _latest_samples(dirs[0]) for label, dirs in groups.items()}
    images = {label: image for label, image in images.items() if image is not None}
    if not images:
        return None
    fig, axes = plt.subplots(1, len(images), figsize=(3.2 * len(images), 3.6), squeeze=False)
    for ax, (label, image) in zip(axes[0], images.items()):
        ax.imshow(plt.imread(image), cmap="gray")
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _panel_grid(n_panels: int, max_cols: int, panel_size: tuple[float, float]):
    """A figure with ``n_panels`` axes in rows of at most ``max_cols``; unused axes are hidden."""
    cols = min(max_cols, n_panels)
    rows = math.ceil(n_panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(panel_size[0] * cols, panel_size[1] * rows), squeeze=False)
    for ax in list(axes.flat)[n_panels:]:
        ax.axis("off")
    return fig, list(axes.flat)[:n_panels]


def plot_curves(groups: dict[str, list[Path]], keys: list[str], path: Path) -> Path | None:
    """Metric vs step, one line per variant (mean over seeds), one panel per metric."""
    if not keys:
        return None
    fig, axes = _panel_grid(len(keys), 3, (4.5, 3.2))
    for ax, key in zip(axes, keys):
        for label, dirs in groups.items():
            per_step = defaultdict(list)
            for d in dirs:
                for row in read_metrics(d):
                    value = row.get(key)
                    if isinstance(value, (int, float)) and math.isfinite(value):
                        per_step[row["step"]].append(value)
            if per_step:
                steps = sorted(per_step)
                ax.plot(steps, [np.mean(per_step[s]) for s in steps], label=label)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("generator step")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _last_spectra(run_dir: Path) -> dict:
    files = sorted((run_dir / "spectra").glob("step_*.json"))
    return json.loads(files[-1].read_text()) if files else {}


def plot_spectra(groups: dict[str, list[Path]], path: Path) -> Path | None:
    """Miyato's Fig. 3 view: each layer's reshaped spectrum normalized by its largest value, x = i/(k-1),
    one panel per layer, one line per variant (last diagnostics step, first seed). Concave (SN-like)
    or convex shows at a glance."""
    spectra = {label: _last_spectra(dirs[0]).get("layers", {}) for label, dirs in groups.items()}
    layers = list(dict.fromkeys(name for per_layer in spectra.values() for name in per_layer))
    if not layers:
        return None
    fig, axes = _panel_grid(len(layers), 4, (3.6, 2.9))
    for ax, layer in zip(axes, layers):
        for label, per_layer in spectra.items():
            values = np.asarray(per_layer.get(layer, {}).get("reshaped", []), dtype=float)
            if values.size:
                xs = np.linspace(0, 1, values.size) if values.size > 1 else np.zeros(1)
                ax.plot(xs, values / values.max(), label=label, marker="o" if values.size < 3 else None)
        ax.set_title(layer, fontsize=9)
        ax.set_ylim(0, 1.05)
    axes[0].legend(fontsize=7)
    fig.supxlabel("normalized index i / (k - 1)")
    fig.supylabel("singular value / largest")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_gradient_norms(groups: dict[str, list[Path]], path: Path) -> Path | None:
    """Final gradient norm of D's loss w.r.t. each layer's effective weight W, and for Stiefel layers
    w.r.t. X (Riemannian) and lambda: one line per variant and factor, layers in network order."""
    finals = {label: _final_row(dirs[0]) for label, dirs in groups.items()}
    factors = ("W", "X", "lambda")
    curves = {}
    for label, row in finals.items():
        for factor in factors:
            keys = [k for k in row if k.startswith("grad_norm/") and k.endswith(f"/{factor}")]
            if keys:
                curves[(label, factor)] = {k[len("grad_norm/"):-len(factor) - 1]: row[k] for k in keys}
    if not curves:
        return None
    layers = list(dict.fromkeys(layer for values in curves.values() for layer in values))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len(layers)), 3.8))
    styles = {"W": "-", "X": "--", "lambda": ":"}
    for (label, factor), values in curves.items():
        ax.plot([layers.index(layer) for layer in values], list(values.values()), styles[factor], marker="o",
                label=f"{label} ({factor})")
    ax.set_xticks(range(len(layers)), layers, rotation=45, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("||grad of D loss||")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def scatter_png(points: np.ndarray, path: Path) -> None:
    """2-D samples as a scatter plot."""
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(points[:, 0], points[:, 1], s=3, alpha=0.6)
    ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_comparison(run_dirs: list[Path], out_dir: Path) -> Path:
    """Write ``out_dir/report.md`` (+ ``samples.png``, ``curves.png``) comparing the runs' variants."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    groups = group_variants(run_dirs)
    finals = {label: [_final_row(d) for d in dirs] for label, dirs in groups.items()}
    keys = _table_keys([row for rows in finals.values() for row in rows])
    lines = ["# stiefel_gan report", "",
             f"{len(run_dirs)} run(s), {len(groups)} variant(s); final values, mean ± std over seeds.", "",
             "| variant | seeds | step | " + " | ".join(keys) + " |",
             "|---|---|---|" + "---|" * len(keys)]
    for label, rows in finals.items():
        steps = {int(r.get("step", 0)) for r in rows}
        cells = [_mean_std([r.get(k) for r in rows]) for k in keys]
        lines.append(f"| {label} | {len(rows)} | {'/'.join(map(str, sorted(steps)))} | " + " | ".join(cells) + " |")
    lines += ["", "Runs:", ""] + [f"- {label}: " + ", ".join(str(d) for d in dirs) for label, dirs in groups.items()]
    figures = (("Samples (final, first seed)", plot_samples(groups, out_dir / "samples.png")),
               ("Metrics vs step", plot_curves(groups, keys, out_dir / "curves.png")),
               ("Normalized spectra of D's layers (last diagnostics step)", plot_spectra(groups, out_dir / "spectra.png")),
               ("Gradient norms of D's loss per layer (final)", plot_gradient_norms(groups, out_dir / "gradients.png")))
    for title, figure in figures:
        if figure is not None:
            lines += ["", f"## {title}", "", f"![{title}]({figure.name})"]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report
