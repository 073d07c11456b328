"""The report's figures: samples, quality curves with seed bands, squared normalized spectra with
their fitted curves, operator-vs-reshaped spectra, gradient norms per layer (PNG, matplotlib's Agg).
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from ..config.paths import RunDir
from ..manifold.spectra import curve_values
from .discovery import Run, records_by_layer
from .summary import median_run, shown_runs


#: Variants whose median-seed samples a published samples.png shows at full resolution (about 1.2x a sample
#: grid's pixels); with more, the figure's resolution falls so that its size stays under ~300 KB.
PUBLISHED_SAMPLE_PANELS = 12


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
    enough to publish: beyond :data:`PUBLISHED_SAMPLE_PANELS` variants the resolution falls so that the
    pixel count, and so the file, stays that of 16 panels)."""
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
    # a published figure (one panel a variant) keeps the pixels of PUBLISHED_SAMPLE_PANELS panels: dpi ~ 1/sqrt(n)
    dpi = 100 if every_seed or len(panels) <= PUBLISHED_SAMPLE_PANELS else \
        int(100 * math.sqrt(PUBLISHED_SAMPLE_PANELS / len(panels)))
    return _save(fig, path, dpi=dpi)


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
    ``i / (k - 1)``, one panel per layer, one thin line per shown seed in the variant's colour, the
    squared fitted curve of the variant's mean (tau, eps) dashed, and where the runs recorded one the
    spectrum at step 0 dotted (what training moved it from)."""
    shown = {label: shown_runs(rs, key) for label, rs in runs.items()}
    records, initial = records_by_layer(shown), records_by_layer(shown, initial=True)
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
            for record in initial.get(layer, {}).get(label, []):
                values = record.get("reshaped", [])
                if len(values) > 1 and max(values) > 0:
                    ax.plot(*_squared_view(values), ":", color=colors[label], alpha=0.6, linewidth=1)
    return _save_squared_view(fig, axes, list(records), path, legend_fontsize=7)


def plot_operator_spectra(runs: dict[str, list[Run]], key: str | None, path: Path) -> Path | None:
    """Per conv layer, the squared normalized reshaped spectrum (solid) next to the circular-FFT operator's
    (dashed), one line per shown seed in the variant's colour."""
    records = records_by_layer({label: shown_runs(rs, key) for label, rs in runs.items()})
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
