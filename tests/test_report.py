"""`stiefel-gan report` from real tiny runs: statistics over seeds against an independent computation from
the runs' own records, variant labels and tuning summaries, per-layer tables, figures, 2-D scatter plots."""

import copy
import dataclasses
import functools
import itertools
import json

import matplotlib.pyplot as plt
import numpy as np
import pytest
import yaml
from helpers import TINY_MODELS, raises_one_line, tiny_run
from omegaconf import OmegaConf
from PIL import Image

from stiefel_gan.commands.cli import main
from stiefel_gan.config.compose import compose_config, load_run_config
from stiefel_gan.config.paths import CONFIG_FILE, METRICS_FILE
from stiefel_gan.config.schema import REPORT_STATISTICS, ReportConfig, config_dict
from stiefel_gan.data.images import load_digits
from stiefel_gan.data.mixtures import mixture_centers, mixture_std
from stiefel_gan.measure.calibration import sampling_floor
from stiefel_gan.measure.plots import scatter_figure
from stiefel_gan.config.paths import RunDir
from stiefel_gan.report.discovery import Run, find_run_dirs, group_variants, load_config
from stiefel_gan.report.figures import PUBLISHED_SAMPLE_PANELS, plot_samples
from stiefel_gan.report.markdown import tuning_table, write_comparison
from stiefel_gan.report.summary import (
    Baseline,
    CurveStatistics,
    baseline_check,
    baseline_learned,
    choose_baseline,
    declared_decisions,
    headline_key,
)
from stiefel_gan.run.records import read_metrics
from stiefel_gan.run.runner import run

#: quality every step and D's diagnostics at the end
TINY = tiny_run(4, *TINY_MODELS["standard_cnn"], "metrics.every=1", "metrics.diagnostics_every=4")
#: the 2-D ring at its full size, with the Geometry Score and a scatter grid of 64 points
MLP = tiny_run(3, "data=ring8", "model=mlp", "model.g_width=8", "model.d_width=8", "model.z_dim=4",
               "train.batch_size=16", "train.n_grid_samples=64", "metrics.n_samples=200", "metrics.every=1",
               "metrics.geometry_score=true", "metrics.gs_n=2", "metrics.gs_landmarks=16",
               "metrics.diagnostics_every=3")
#: the tuning study's variants (label -> overrides): two SN settings, one Stiefel (the ranking itself is tested
#: on runs held in memory below)
TUNING = {"sn@lr_d=1e-4": ["disc=sn", "optim.lr_d=1e-4"], "sn@lr_d=1e-2": ["disc=sn", "optim.lr_d=1e-2"],
          "stiefel_fixed@lr_stiefel=0.1": ["disc=stiefel_fixed", "optim.lr_stiefel=0.1"]}


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    for disc in ("sn", "stiefel_fixed"):
        for seed in (0, 1):
            run(compose_config([*TINY, f"out_dir={out}", f"disc={disc}", f"train.seed={seed}"]))
    assert main(["report", str(out / "default")]) == 0
    return out / "default"


@pytest.fixture(scope="module")
def report(sweep_dir):
    return (sweep_dir / "report.md").read_text()


@pytest.fixture(scope="module")
def tuning_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tuning")
    for label, overrides in TUNING.items():
        cfg = compose_config([*MLP, *overrides, f"out_dir={out}", "name=tuning"])
        cfg.variant = cfg.run_name = label  # the variant is what a configs/variant preset sets
        run(cfg)
    assert main(["report", str(out / "tuning")]) == 0
    return out / "tuning"


def table_after(report, heading):
    """The first markdown table after ``heading`` as a list of {column: cell} rows."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    table = []
    for line in lines[start + 1:]:
        if line.startswith("|"):
            table.append([cell.strip() for cell in line.strip("|").split("|")])
        elif table:
            break
    header, _, *rows = table
    return [dict(zip(header, row)) for row in rows]


#: the words a report calls a difference with (the verdict of a declared comparison)
VERDICT_WORDS = {"better", "worse", "higher", "lower", "inconclusive"}


def parse_difference(cell):
    """``+12.5 (p 0.25, +1.3 SD)`` -> (12.5, 0.25, 1.3); the effect is NaN where the cell leaves it out."""
    mean, _, rest = cell.partition(" (p ")
    inside = rest.split(")")[0].split(", ")
    effect = float(inside[1].removesuffix(" SD")) if len(inside) > 1 else float("nan")
    return float(mean), float(inside[0]), effect


def quality_curve(run_dir, key):
    rows = [r for r in read_metrics(run_dir) if key in r]
    return np.array([r["step"] for r in rows], dtype=float), np.array([r[key] for r in rows])


def test_runs_group_by_variant_across_seeds(sweep_dir):
    groups = group_variants(find_run_dirs(sweep_dir))
    assert sorted(groups) == ["sn", "stiefel_fixed"]
    assert all(len(dirs) == 2 for dirs in groups.values())


def test_quality_statistics_and_paired_differences_match_the_runs_records(sweep_dir, report):
    rows = {row["variant"]: row for row in table_after(report, "### quality/digits_fd")}
    assert list(rows) == ["sn", "stiefel_fixed"]  # the baseline first
    key = "quality/digits_fd"
    stats = {}
    for disc in ("sn", "stiefel_fixed"):
        per_seed = []
        for seed in (0, 1):
            steps, values = quality_curve(sweep_dir / f"{disc}-radam-s{seed}", key)
            assert len(values) == 4  # metrics.every=1 over 4 steps
            area = np.sum(np.diff(steps) * (values[1:] + values[:-1]) / 2) / (steps[-1] - steps[0])
            per_seed.append((values[-1], values[-3:].mean(), area))
        stats[disc] = np.array(per_seed)  # seed x (final, last 3, AUC)
    row = rows["stiefel_fixed"]
    assert row["n"] == "2"
    # each column names the evaluation steps it is taken over (1 to 4 here)
    for column, index in (("final (step 4)", 0), ("last 3 (steps 2-4)", 1), ("AUC (steps 1-4)", 2)):
        mean, std = row[column].split(" ± ")
        assert float(mean) == pytest.approx(stats["stiefel_fixed"][:, index].mean(), rel=1e-3)
        assert float(std) == pytest.approx(np.std(stats["stiefel_fixed"][:, index], ddof=1), rel=0.05, abs=0.01)
    # paired by seed: the mean difference, its sign-flip p-value over the 2^2 sign patterns of the two
    # differences, and the mean in SDs of the baseline's two seeds
    for column, index in (("Δ final vs sn", 0), ("Δ last 3", 1), ("Δ AUC", 2)):
        differences = stats["stiefel_fixed"][:, index] - stats["sn"][:, index]
        flips = [abs(np.mean(np.array(signs) * differences)) for signs in itertools.product((1, -1), repeat=2)]
        p_value = np.mean([flip >= abs(differences.mean()) * (1 - 1e-9) for flip in flips])
        effect = differences.mean() / np.std(stats["sn"][:, index], ddof=1)
        assert parse_difference(row[column]) == (pytest.approx(differences.mean(), rel=1e-3, abs=1e-3), p_value,
                                                 pytest.approx(effect, rel=0.05))
        assert not VERDICT_WORDS.intersection(row[column].replace("*", " ").split())  # nothing declared: no verdict
    assert rows["sn"]["Δ final vs sn"] == "baseline"
    assert ("## Declared comparisons\n\nNone: the study's config declares no `report.comparisons` and no "
            "`report.contrasts`") in report


def test_losses_and_diagnostics_have_their_own_tables(sweep_dir, report):
    quality_header = next(line for line in report.splitlines() if line.startswith("| variant | n | final"))
    assert "loss/d" not in quality_header and "lipschitz" not in quality_header
    losses = {row["variant"]: row for row in table_after(report, "## Losses and D's outputs")}
    finals = [[r for r in read_metrics(d) if "loss/d" in r][-1]["loss/d"] for d in sorted(sweep_dir.glob("sn-*"))]
    mean, std = losses["sn"]["loss/d"].split(" (last")[0].split(" ± ")
    assert float(mean) == pytest.approx(np.mean(finals), rel=1e-3)
    assert float(std) == pytest.approx(np.std(finals, ddof=1), rel=0.05)
    diagnostics = table_after(report, "## Diagnostics")
    assert "lipschitz/upper_bound" in diagnostics[0] and "quality/digits_fd" not in diagnostics[0]


def test_per_layer_tables_match_the_spectra_files(sweep_dir, report):
    fits = {row["layer"]: row for row in table_after(report, "## Spectrum shape per layer")}
    # the Stiefel layers' reshaped spectrum is the configured curve (tau=1, eps=0.1): the fit finds it
    tau, eps = fits["features.conv1"]["stiefel_fixed"].split("; step 0: ")[0].split(", ε ")
    assert float(tau.split("τ ")[1].split(" ±")[0]) == pytest.approx(1.0, rel=1e-3)
    assert float(eps.split(" ±")[0]) == pytest.approx(0.1, abs=1e-3)
    ratios = {row["layer"]: row for row in table_after(report, "### operator / reshaped")}
    assert list(ratios["features.conv1"])[1:3] == ["sn", "stiefel_fixed"]
    records = [json.loads(sorted((d / "spectra").glob("step_*.json"))[-1].read_text())["layers"]["features.conv1"]
               for d in sorted(sweep_dir.glob("sn-*"))]
    expected = np.mean([r["operator_norm"] / r["reshaped"][0] for r in records])
    assert float(ratios["features.conv1"]["sn"].split(" ±")[0]) == pytest.approx(expected, rel=1e-3)


def test_report_figures_render(sweep_dir, report):
    for name in ("samples.png", "samples_all_seeds.png", "curves.png", "spectra.png", "operator_spectra.png",
                 "gradients.png"):
        with Image.open(sweep_dir / name) as image:
            assert image.size[0] > 300 and image.size[1] > 200
            assert np.asarray(image.convert("L")).std() > 5  # not a blank canvas
        assert f"]({name})" in report
    with Image.open(sweep_dir / "samples_all_seeds.png") as image:  # 2 variants x 2 seeds: a square-ish grid
        assert 0.6 < image.size[0] / image.size[1] < 1.6
    with Image.open(sweep_dir / "samples.png") as image:  # each variant's median seed, side by side
        assert image.size[0] / image.size[1] > 1.6
        assert image.mode == "P"  # a palette PNG: the figures are published and must stay small


def test_runs_with_variant_labels_group_by_label_and_tuning_reports_best_and_median(tuning_dir):
    groups = group_variants(find_run_dirs(tuning_dir))
    assert sorted(groups) == sorted(TUNING)
    report = (tuning_dir / "report.md").read_text()
    assert "grouped by the config's `variant` label" in report
    methods = {row["method"]: row for row in table_after(report, "## Tuning")}
    assert methods["sn"]["settings"] == "2" and methods["stiefel_fixed"]["settings"] == "1"
    assert "geometry_gamma = 0.125" in report  # measured with the 2-D mixtures' gamma
    assert "Baseline: **sn@" in report


def make_run(label_seed_values, disc="sn"):
    """Runs held in memory: each a config and one logged quality row per step, as read from metrics.jsonl."""
    seed, values = label_seed_values
    rows = [{"step": step, "quality/fid": value} for step, value in zip((10, 20, 30), values)]
    return Run(run_dir=None, config={"disc": {"kind": disc}, "train": {"seed": seed}}, rows=rows)


def test_tuning_ranks_settings_by_the_final_metric_in_its_direction():
    finals = {"sn@a": (30.0, 32.0), "sn@b": (20.0, 22.0), "sn@c": (40.0, 38.0), "sn@d": (25.0, 27.0),
              "wc@x": (50.0, 50.0)}
    runs = {label: [make_run((seed, [99.0, 80.0, final]), "sn" if label.startswith("sn") else "wc")
                    for seed, final in enumerate(pair)] for label, pair in finals.items()}
    table = [[cell.strip() for cell in line.strip("|").split("|")] for line in tuning_table(runs, "quality/fid")
             if line.startswith("| sn") or line.startswith("| wc")]
    rows = {row[0]: row for row in table}
    # means 31, 21, 39, 26: best b (FID: lower is better), ranked b, d, a, c: the lower median is d
    assert (rows["sn"][2], rows["sn"][3], rows["sn"][4]) == ("b", "21 ± 1.4", "d")
    assert rows["wc"][2] == rows["wc"][4] == "x"
    assert choose_baseline(runs, "quality/fid").label == "sn@b"


def test_baseline_check_flags_each_seed_that_did_not_learn():
    # FID must fall to at most 3/4 of its first value: 100 -> 75 learned, 100 -> 76 did not
    runs = {"sn": [make_run((0, [100.0, 90.0, 75.0])), make_run((1, [100.0, 80.0, 76.0]))]}
    assert [baseline_learned(r, "quality/fid") for r in runs["sn"]] == [True, False]
    text = "\n".join(baseline_check(runs, Baseline("sn", "test"), "quality/fid"))
    assert "seed 0: 100 → 75;" in text and "seed 1: 100 → 76 (did not learn)" in text
    assert "did not learn in 1 of 2 seeds" in text
    # modes covered: at least 3/4 of the mixture's modes at the end, whatever the first evaluation
    covered = [Run(run_dir=None, config={"disc": {"kind": "sn"}, "train": {"seed": seed}},
                   rows=[{"step": 1, "quality/modes_covered": 8.0, "quality/n_modes": 8},
                         {"step": 2, "quality/modes_covered": final, "quality/n_modes": 8}])
               for seed, final in enumerate((6.0, 5.0))]
    assert [baseline_learned(r, "quality/modes_covered") for r in covered] == [True, False]
    assert "learned in every seed" in "\n".join(baseline_check({"sn": covered[:1]}, Baseline("sn", "t"),
                                                                 "quality/modes_covered"))


@pytest.mark.parametrize("mixture", ["ring8", "grid25"])
def test_mixture_scatter_shows_modes_on_fixed_axes(mixture):
    centers, std = mixture_centers(mixture).numpy(), mixture_std(mixture)
    limits = []
    for spread in (0.01, 100.0):  # collapsed and exploded generators get the same axes
        points = np.random.default_rng(0).normal(0, spread, (300, 2))
        fig = scatter_figure(points, mixture)
        ax = fig.axes[0]
        limits.append((ax.get_xlim(), ax.get_ylim()))
        circles = [p for p in ax.patches]
        assert len(circles) == len(centers)
        np.testing.assert_allclose([c.center for c in circles], centers)
        assert all(c.radius == pytest.approx(3 * std) for c in circles)
        outside = int(np.sum(np.any(np.abs(points) > 1.5 * np.abs(centers).max(), axis=1)))
        assert (f"{outside} outside the axes" in ax.get_title()) == (outside > 0)
        plt.close(fig)
    assert limits[0] == limits[1] == ((-1.5 * np.abs(centers).max(), 1.5 * np.abs(centers).max()),) * 2
    with pytest.raises(ValueError, match="mixture='ring9'"):
        scatter_figure(np.zeros((3, 2)), "ring9")


def test_report_of_a_directory_without_runs_is_a_one_line_error(tmp_path, stops_in_one_line):
    stops_in_one_line(["report", str(tmp_path)], "no run directory")


def test_report_out_writes_a_publishable_copy_elsewhere(sweep_dir, tmp_path, stops_in_one_line):
    published = tmp_path / "figures" / "study"
    assert main(["report", str(sweep_dir), "--out", str(published), "--samples", "median"]) == 0
    assert (published / "report.md").read_text().count("| sn | 2 |") >= 1
    assert not (published / "samples_all_seeds.png").exists()
    assert {p.name for p in published.glob("*.png")} >= {"samples.png", "curves.png", "spectra.png"}
    stops_in_one_line(["report", str(sweep_dir), str(sweep_dir), "--out", str(published)], "--out", "2 directories")


def test_a_directory_of_runs_on_two_datasets_gets_one_report_per_dataset(tmp_path):
    for data in ("ring8", "grid25"):
        for disc in ("sn", "stiefel_fixed"):
            cfg = compose_config([*MLP, f"data={data}", f"disc={disc}", f"out_dir={tmp_path}", "name=mixtures",
                                  "metrics.geometry_score=false"])
            cfg.variant = disc  # both datasets' runs carry the same label, as in experiment=mixtures
            cfg.run_name = f"{disc}-s0_{data}"
            run(cfg)
    assert main(["report", str(tmp_path / "mixtures")]) == 0
    assert not (tmp_path / "mixtures" / "report.md").exists()
    for data, n_modes in (("ring8", 8), ("grid25", 25)):
        report = (tmp_path / "mixtures" / data / "report.md").read_text()
        assert "2 run(s) in 2 variant(s)" in report and "Baseline: **sn**" in report
        n_modes_cell = table_after(report, "### quality/modes_covered")[0]
        assert n_modes_cell["variant"] == "sn" and n_modes_cell["n"] == "1"
        assert f"quality/n_modes = {n_modes}" in report


# ----------------------------------------------------------------------------- declared comparisons, verdicts

@functools.cache
def saved_config(disc):
    """The config a run with ``disc=<disc>`` saves, as plain values."""
    return config_dict(compose_config([f"disc={disc}", "wandb.mode=disabled"]))


def write_synthetic_run(root, label, seed, rows, disc="sn", report=None, **disc_keys):
    """A run directory with the config a study's run would save (``disc_keys`` over its ``disc``,
    ``report`` over its report section) and ``rows`` as its metrics.jsonl."""
    config = copy.deepcopy(saved_config(disc))
    config.update(name="study", variant=label, run_name=f"{label}-s{seed}")
    config["train"]["seed"] = seed
    config["disc"].update(disc_keys)
    config["report"].update(report or {})
    run_dir = root / f"{label}-s{seed}"
    run_dir.mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(config), run_dir / CONFIG_FILE)
    (run_dir / METRICS_FILE).write_text("".join(json.dumps(row) + "\n" for row in rows))
    return run_dir


def write_synthetic_study(root, finals, comparisons, extra_metric=True, contrasts=()):
    """Run directories with the config a study's run would save and a three-evaluation digits curve:
    ``finals`` maps each variant label to its per-seed final FD (``sn`` is the SN baseline); the study
    declares ``comparisons`` and ``contrasts``."""
    for label, values in finals.items():
        for seed, final in enumerate(values):
            rows = [{"step": step, "quality/digits_fd": value, **({"quality/classes_covered": 5.0 + seed % 3}
                                                                  if extra_metric else {})}
                    for step, value in ((100, 1500.0 + seed), (200, 1000.0 + final / 2), (300, final))]
            write_synthetic_run(root, label, seed, rows, "sn" if label == "sn" else "stiefel_fixed",
                                {"comparisons": list(comparisons), "contrasts": list(contrasts)})
    return root


def test_only_a_declared_comparison_gets_a_verdict(tmp_path):
    rng = np.random.default_rng(0)
    sn = 600 + rng.normal(0, 50, 8)
    finals = {"sn": sn, "big": sn - 300 + rng.normal(0, 20, 8), "other": sn - 300 + rng.normal(0, 20, 8),
              "few": (sn - 300)[:3]}  # big and other: the same large effect, in 8 seeds; few: 3 seeds
    study = write_synthetic_study(tmp_path / "study", finals, comparisons=["big", "few"])
    report = write_comparison(find_run_dirs(study), study).read_text()
    rows = {row["variant"]: row for row in table_after(report, "### quality/digits_fd")}
    declared = rows["big"]["Δ final vs sn"]
    mean, p_value, effect = parse_difference(declared)
    assert mean == pytest.approx(np.mean(finals["big"] - sn), rel=1e-3)
    assert p_value == pytest.approx(2 / 2 ** 8, rel=1e-3) and effect < -3  # every seed better; about 6 baseline SDs
    assert declared.endswith(f"**better** (Holm p {2 * 2 / 2 ** 8:.3g})")  # two declared: 2 x 0.0078
    assert rows["few"]["Δ final vs sn"].endswith("inconclusive (Holm p 0.25)")  # p 0.25 with 3 seeds: never called
    undeclared = [rows["big"]["Δ last 3"], rows["big"]["Δ AUC"], *(rows["other"][c] for c in rows["other"] if "Δ" in c)]
    undeclared += [row[c] for row in table_after(report, "### quality/classes_covered") for c in row if "Δ" in c]
    # other is as sure as big, but was not declared
    assert parse_difference(rows["other"]["Δ final vs sn"])[1] == pytest.approx(2 / 2 ** 8, rel=1e-3)
    for cell in undeclared:
        assert not VERDICT_WORDS.intersection(cell.replace("*", " ").split()), cell
    section = table_after(report, "## Declared comparisons")
    assert [(row["variant"], row["n"], row["verdict"].split(" (")[0]) for row in section] == [
        ("big", "8", "**better**"), ("few", "3", "inconclusive")]
    assert "2 test(s) declared with the study and tested here as one family: 2 comparison(s)" in report
    assert "Holm's correction across them together: 2 here" in report
    assert "few: fewer than 6 paired seeds, so no verdict was possible for it" in report
    assert "(3 seeds: 0.25, 5 seeds: 0.0625, 6 seeds: 0.03125)" in report
    assert "at least 6 seeds for a single declared comparison, and with 2 declared" in report


def simulated_study(rng, n_seeds, variants, effect=0.0):
    """Runs held in memory: each variant's per-seed final FD drawn from the baseline's own distribution,
    moved by ``effect`` (0: no true effect)."""
    def runs_of(label, shift):
        kind = "sn" if label == "sn" else "stiefel"
        return [Run(run_dir=None, config={"disc": {"kind": kind}, "train": {"seed": seed}, "data": {"name": "digits"}},
                    rows=[{"step": 500, "quality/digits_fd": value}])
                for seed, value in enumerate(rng.normal(600 + shift, 100, n_seeds))]
    return {"sn": runs_of("sn", 0.0), **{label: runs_of(label, effect) for label in variants}}


@pytest.mark.parametrize("n_seeds", [6, 8])
def test_a_study_without_a_true_effect_calls_nothing_in_95_percent_of_simulated_studies(n_seeds):
    # the function the report takes its verdicts from, on 200 simulated studies of 3 declared comparisons
    # (with 6 seeds none can be called: 2^(1-6) = 0.031 > 0.05 / 3; with 8 they can, and the family-wise
    # rate measured over 4,000 such studies is 3.9%)
    rng = np.random.default_rng(0)
    settings = ReportConfig(comparisons=["a", "b", "c"], alpha=0.05)
    calls = []
    for _ in range(200):
        runs = simulated_study(rng, n_seeds, settings.comparisons)
        decisions = declared_decisions(runs, choose_baseline(runs, "quality/digits_fd"), headline_key(runs), settings)
        assert set(decisions) == {("a", "sn"), ("b", "sn"), ("c", "sn")}
        assert all(t.difference.n == n_seeds for t in decisions.values())
        calls.append(any(t.significant for t in decisions.values()))
    assert sum(calls) <= 10  # at least 95% of the 200 studies call nothing
    if n_seeds == 8:
        assert sum(calls) > 0  # not vacuous: at 8 seeds a call is possible, and false ones happen at about alpha
        powered = [any(t.significant for t in declared_decisions(
            runs, choose_baseline(runs, "quality/digits_fd"), "quality/digits_fd", settings).values())
            for runs in (simulated_study(rng, n_seeds, settings.comparisons, effect=-300.0) for _ in range(20))]
        assert sum(powered) >= 15  # a true effect of 3 seed SDs is called in most studies


def enumerated_sign_flip_p_value(differences):
    """The two-sided sign-flip p-value by listing all 2^n sign patterns: the fraction whose |mean| reaches the
    observed one (the reference the report's scipy test is checked against)."""
    d = np.asarray(differences, dtype=float)
    observed = abs(d.mean())
    means = [abs(np.mean(np.array(signs) * d)) for signs in itertools.product((-1, 1), repeat=d.size)]
    return sum(m >= observed * (1 - 1e-12) for m in means) / 2 ** d.size


def test_a_declared_contrast_is_paired_by_seed_and_shares_holms_correction_with_the_comparisons(tmp_path):
    rng = np.random.default_rng(4)
    sn = 600 + rng.normal(0, 50, 8)
    svd = np.append(sn - 100 + rng.normal(0, 30, 8), 480.0)  # a ninth seed, which diag did not run
    finals = {"sn": sn, "other": sn + rng.normal(-20, 40, 8),  # the declared comparison: signs mixed
              "diag": svd[:8] + rng.uniform(20, 60, 8),  # diag - svd > 0 in all 8 seeds both ran
              "svd": svd,
              "diag_b": svd[:8] + rng.uniform(20, 60, 8), "svd_b": svd[:8]}  # as sure, but not declared
    study = write_synthetic_study(tmp_path / "study", finals, comparisons=["other"], contrasts=[["diag", "svd"]])
    report = write_comparison(find_run_dirs(study), study).read_text()
    comparison_d, contrast_d = finals["other"] - sn, finals["diag"] - svd[:8]
    p_comparison, p_contrast = enumerated_sign_flip_p_value(comparison_d), enumerated_sign_flip_p_value(contrast_d)
    assert p_contrast == 2 / 2 ** 8 and p_comparison > 2 * p_contrast  # the contrast comes first in Holm's order
    holm_contrast = 2 * p_contrast  # m = 2: the smallest p-value times 2
    holm_comparison = max(holm_contrast, p_comparison)  # then times 1, never below the step before
    rows = {(row["variant"], row["minus"]): row for row in table_after(report, "## Declared comparisons")}
    assert list(rows) == [("other", "sn"), ("diag", "svd")]  # comparisons, then contrasts; diag_b - svd_b: none
    for pair, differences, p_value, holm, spread in (
            (("other", "sn"), comparison_d, p_comparison, holm_comparison, np.std(sn, ddof=1)),
            (("diag", "svd"), contrast_d, p_contrast, holm_contrast, np.std(svd, ddof=1))):  # all 9 seeds of svd
        row = rows[pair]
        assert row["n"] == "8"
        assert float(row["Δ mean"]) == pytest.approx(np.mean(differences), rel=1e-3)
        assert float(row["p"]) == pytest.approx(p_value, rel=1e-3)
        assert float(row["Holm p"]) == pytest.approx(holm, rel=1e-3)
        assert float(row["Δ in SDs of minus"]) == pytest.approx(np.mean(differences) / spread, rel=1e-3)
    assert rows[("diag", "svd")]["verdict"] == f"**worse** (Holm p {holm_contrast:.3g})"  # FD: higher is worse
    called = "**better**" if np.mean(comparison_d) < 0 else "**worse**"
    assert rows[("other", "sn")]["verdict"] == (f"{called if holm_comparison <= 0.05 else 'inconclusive'} "
                                                f"(Holm p {holm_comparison:.3g})")
    # the comparison's cell carries its verdict; no other cell of the tables does, diag_b and svd_b's included
    quality = {row["variant"]: row for row in table_after(report, "### quality/digits_fd")}
    assert quality["other"]["Δ final vs sn"].endswith(rows[("other", "sn")]["verdict"])
    cells = [cell for label, row in quality.items() if label != "other" for column, cell in row.items() if "Δ" in column]
    assert cells and not any(VERDICT_WORDS.intersection(cell.replace("*", " ").split()) for cell in cells)
    assert "diag_b − svd_b" not in report and "diag_b | svd_b" not in report
    assert "1 comparison(s) with the baseline (`report.comparisons`: each variant minus **sn**) and 1 contrast(s)" \
           in report and "Holm's step-down correction over the 2 together" in report
    assert "and with 2 declared (comparisons and contrasts together), Holm's first threshold is alpha/2: at least " \
           "7 seeds." in report


def test_a_contrast_short_of_seeds_is_named_in_the_seed_floor_sentence(tmp_path):
    finals = {"sn": [600.0 + s for s in range(7)], "diag": [500.0 - s for s in range(3)],
              "svd": [450.0 + 3 * s for s in range(7)], "other": [300.0 + s for s in range(7)]}
    study = write_synthetic_study(tmp_path / "study", finals, comparisons=[], contrasts=[["diag", "svd"],
                                                                                         ["other", "svd"]])
    report = write_comparison(find_run_dirs(study), study).read_text()
    assert "diag − svd: fewer than 6 paired seeds, so no verdict was possible for it" in report
    assert "2 test(s) declared with the study and tested here as one family: 2 contrast(s)" in report


def test_contrasts_given_to_the_report_command_replace_the_studys(tmp_path):
    finals = {"sn": [600.0, 610.0, 605.0], "diag": [500.0, 505.0, 520.0], "svd": [480.0, 470.0, 490.0],
              "other": [300.0, 310.0, 320.0]}
    study = write_synthetic_study(tmp_path / "study", finals, comparisons=[], contrasts=[["other", "svd"]])
    published = tmp_path / "published"  # a setting may also follow the options
    assert main(["report", str(study), "--out", str(published), "--samples", "median", "report.contrasts=[[diag, svd]]"]) == 0
    report = (published / "report.md").read_text()
    (row,) = table_after(report, "## Declared comparisons")
    assert (row["variant"], row["minus"], row["n"]) == ("diag", "svd", "3")
    assert float(row["Δ mean"]) == pytest.approx(np.mean(np.subtract(finals["diag"], finals["svd"])), rel=1e-3)
    assert row["verdict"] == "inconclusive (Holm p 0.25)"  # 3 seeds: 2 / 2^3 at best
    assert "No declared test here has 6 or more paired seeds" in report


#: the synthetic study the bad contrasts are declared for: SN and three other variants, two seeds
CONTRAST_STUDY = {"sn": [600.0, 610.0], "diag": [500.0, 505.0], "svd": [480.0, 470.0], "other": [300.0, 310.0]}


@pytest.mark.parametrize("contrasts, named", [
    ("[[diag, nope]]", ["'nope' is not a variant of the study", "(diag, other, svd)"]),
    ("[[diag, sn]]", ["'sn' is an SN variant", "report.comparisons"]),
    ("[[diag, diag]]", ["['diag', 'diag'] is not a pair of two distinct variant labels", "[A, B]"]),
    ("[[diag, svd, other]]", ["['diag', 'svd', 'other'] is not a pair of two distinct variant labels"]),
    ("[diag, svd]", ["'diag' is not a pair of two distinct variant labels"]),
    ("[[diag, svd], [other, svd], [svd, diag]]", ["['svd', 'diag'] is declared twice", "in either order"]),
])
def test_a_bad_contrast_is_one_line_and_nothing_is_written(tmp_path, stops_in_one_line, contrasts, named):
    # given to the report command over the study's own section
    study = write_synthetic_study(tmp_path / "given", CONTRAST_STUDY, comparisons=[], extra_metric=False)
    stops_in_one_line(["report", str(study), f"report.contrasts={contrasts}"], "report.contrasts=", *named)
    # declared in the study's config, as the runs saved it
    declared = write_synthetic_study(tmp_path / "declared", CONTRAST_STUDY, comparisons=[], extra_metric=False,
                                     contrasts=yaml.safe_load(contrasts))
    raises_one_line(lambda: write_comparison(find_run_dirs(declared), declared), "report.contrasts=", *named)
    assert not list(tmp_path.rglob("report.md")) and not list(tmp_path.rglob("*.png"))


@pytest.mark.parametrize("contrasts, named", [
    ("[[smoke_stiefel,nope]]", ["'nope' is not a variant of the study", "(smoke_stiefel)"]),
    ("[[smoke_stiefel,smoke_stiefel]]", ["is not a pair of two distinct variant labels"]),
    ("[[smoke_stiefel,sn],[sn,smoke_stiefel]]", ["['sn', 'smoke_stiefel'] is declared twice"]),
])
def test_a_study_that_declares_a_bad_contrast_stops_before_its_first_job(tmp_path, stops_in_one_line, contrasts,
                                                                        named):
    stops_in_one_line(["train", "-m", "experiment=smoke", f"report.contrasts={contrasts}", "wandb.mode=disabled",
                       f"out_dir={tmp_path / 'runs'}"], "report.contrasts=", *named)
    assert not (tmp_path / "runs").exists()


def test_the_report_statistics_are_the_curve_statistics():
    assert REPORT_STATISTICS == tuple(f.name for f in dataclasses.fields(CurveStatistics))


# ----------------------------------------------------------------------- bad declarations: one line, nothing written

@pytest.mark.parametrize("comparisons, message", [
    (["big", "nope"], "'nope' is not a variant of the study; use labels of its variants compared with the SN "
                      "baseline (big, other)"),
    (["sn"], "'sn' is an SN variant, the baseline itself; use labels of the variants compared with it (big, other)"),
    (["big", "big"], "'big' is listed twice"),
])
def test_report_refuses_a_declared_comparison_the_runs_do_not_hold(tmp_path, capsys, comparisons, message):
    finals = {"sn": [600.0, 610.0], "big": [300.0, 310.0], "other": [500.0, 520.0]}
    good = write_synthetic_study(tmp_path / "good", finals, comparisons=["big"], extra_metric=False)
    bad = write_synthetic_study(tmp_path / "bad", finals, comparisons=comparisons, extra_metric=False)
    assert main(["report", str(good), str(bad)]) == 2  # the good directory comes first: it is not written either
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"report.comparisons={comparisons}" in err and message in err
    assert not list(tmp_path.rglob("report.md")) and not list(tmp_path.rglob("*.png"))


def test_report_refuses_runs_of_studies_that_declare_different_comparisons(tmp_path, capsys):
    finals = {"sn": [600.0], "big": [300.0]}
    write_synthetic_study(tmp_path / "mixed" / "one", finals, comparisons=["big"], extra_metric=False)
    write_synthetic_study(tmp_path / "mixed" / "two", {"sn": [600.0], "other": [500.0]}, comparisons=[],
                          extra_metric=False)
    assert main(["report", str(tmp_path / "mixed")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "report sections" in err and "one study" in err
    assert not list(tmp_path.rglob("report.md"))


@pytest.mark.parametrize("command", [
    ["train", "-m", "experiment=smoke"],  # the checked sweeper: the study's variants are its jobs'
    ["sweep", "smoke", "--local"],  # the W&B twin, expanded by W&B's own engine
    ["compare", "compare.seeds=[0]"],  # the main job: its variants are D's presets, labelled by D
])
def test_a_study_that_declares_a_comparison_it_does_not_run_stops_before_anything_is_written(
        tmp_path, capsys, monkeypatch, command):
    monkeypatch.chdir(tmp_path)  # the W&B sweep writes under the default out_dir, here
    assert main([*command, "report.comparisons=[stiefel_fixedd]", "wandb.mode=disabled",
                 f"out_dir={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "report.comparisons=['stiefel_fixedd'] is not allowed: 'stiefel_fixedd' is not a variant" in err
    assert ("(smoke_stiefel)" if command[0] != "compare" else "(stiefel_curve, stiefel_fixed, stiefel_grid)") in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("override, message", [
    ("report.alpha=1.5", "report.alpha=1.5 is not allowed: use a family-wise level in (0, 1)"),
    ("report.statistic=median", "report.statistic='median' is not allowed: use one of final, last, area"),
])
def test_a_report_setting_out_of_range_is_a_one_line_error(tmp_path, capsys, override, message):
    assert main(["train", override, "wandb.mode=disabled", f"out_dir={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "runs").exists()


def test_a_report_of_one_seed_per_variant_says_it_is_a_demonstration(tuning_dir, report):
    one_seed = (tuning_dir / "report.md").read_text()  # one seed per label, as `stiefel-gan compare` runs
    assert "**One seed per variant to step 3: a demonstration, not a verdict.**" in one_seed
    assert "docs/results.md" in one_seed
    assert "demonstration" not in report  # two seeds a variant


# ------------------------------------------------------------------------------- regression (report.regress_on)

#: shape_gain's taus, each at two of its sigmas (fewer runs: a report reads every run's config)
TAUS, SIGMAS = (0.25, 1.0, 4.0), (0.9, 1.2)
REGRESS_ON = ["log(disc.tau)", "log(lipschitz/lower_bound@0)"]


def write_shape_gain_study(root, rng, n_seeds, fd_per_log_tau, regress_on=REGRESS_ON):
    """A shape_gain-like study on disk: SN, and every (tau, sigma) of a fixed svd curve, each seed with its own
    offset. D's slope at step 0 falls with tau and grows as sigma^8 (the confound); the final FD is
    ``500 + fd_per_log_tau * log(tau) + 80 * log(slope_0)`` plus the seed's offset and noise. The slope
    logged at the last step is another number (what training made of it), so a fit that took it instead of
    the step-0 value would not find these coefficients."""
    truth = []
    for seed in range(n_seeds):
        offset = rng.normal(0, 30)
        write_synthetic_run(root, "sn", seed, [{"step": 0, "lipschitz/lower_bound": 1.0},
                                               {"step": 300, "quality/digits_fd": 600.0 + offset}],
                            report={"regress_on": regress_on})
        for tau, sigma in itertools.product(TAUS, SIGMAS):
            slope = sigma ** 8 * tau ** -0.5 * np.exp(rng.normal(0, 0.1))
            fd = 500 + fd_per_log_tau * np.log(tau) + 80 * np.log(slope) + offset + rng.normal(0, 5)
            rows = [{"step": 0, "lipschitz/lower_bound": slope},
                    {"step": 100, "quality/digits_fd": 1500.0},
                    {"step": 200, "quality/digits_fd": 1000.0},
                    {"step": 300, "quality/digits_fd": fd, "lipschitz/lower_bound": rng.uniform(1, 50)}]
            write_synthetic_run(root, f"svd_tau{tau:g}_sigma{sigma:g}", seed, rows, "stiefel_fixed",
                                {"regress_on": regress_on}, tau=tau, sigma=sigma)
            truth.append((np.log(tau), np.log(slope), fd))
    return np.array(truth)


def regression_rows(report):
    return {row["coefficient"]: row for row in table_after(report, "## Regression")}


def interval_of(row):
    low, high = row["95% interval"].strip("[]").split(", ")
    return float(low), float(high)


def test_the_regression_recovers_the_shape_effect_at_a_matched_slope(tmp_path):
    rng = np.random.default_rng(0)
    truth = write_shape_gain_study(tmp_path / "study", rng, n_seeds=6, fd_per_log_tau=-40.0)
    report = write_comparison(find_run_dirs(tmp_path / "study"), tmp_path / "study").read_text()
    rows = regression_rows(report)
    assert list(rows) == ["intercept", *REGRESS_ON]
    assert all((row["n runs"], row["n seeds"], row["df"]) == ("36", "6", "5") for row in rows.values())
    # the same fits computed here from the records' own numbers: one per seed (6 svd runs each), their mean
    design = np.column_stack([np.ones(len(truth)), truth[:, :2]])
    by_seed = np.stack([np.linalg.lstsq(design[s:s + 6], truth[s:s + 6, 2], rcond=None)[0] for s in range(0, 36, 6)])
    expected = by_seed.mean(axis=0)
    for (name, row), value, sd in zip(rows.items(), expected, by_seed.std(axis=0, ddof=1)):
        assert float(row["estimate"]) == pytest.approx(value, rel=1e-3)
        assert float(row["per-seed sd"]) == pytest.approx(sd, rel=1e-3)
    for name, true in (("log(disc.tau)", -40.0), ("log(lipschitz/lower_bound@0)", 80.0)):
        low, high = interval_of(rows[name])
        assert low < true < high and low < float(rows[name]["estimate"]) < high
    assert f"`log(disc.tau)` explains {expected[1]:+.4g} of quality/digits_fd per unit at matched " \
           "log(lipschitz/lower_bound@0)" in report and "which excludes 0" in report
    assert "6 run(s) left out: 6 with disc.tau not read by disc.kind=sn." in report
    assert "R² = " in report


def test_without_a_shape_effect_the_regression_detects_none(tmp_path):
    rng = np.random.default_rng(1)
    write_shape_gain_study(tmp_path / "study", rng, n_seeds=6, fd_per_log_tau=0.0)
    report = write_comparison(find_run_dirs(tmp_path / "study"), tmp_path / "study").read_text()
    low, high = interval_of(regression_rows(report)["log(disc.tau)"])
    assert low < 0 < high
    assert "- `log(disc.tau)`: no effect detected: the 95% interval" in report
    assert "`log(lipschitz/lower_bound@0)` explains" in report  # the slope still does


def test_regress_on_given_to_the_report_command_replaces_the_studys(tmp_path):
    rng = np.random.default_rng(2)
    write_shape_gain_study(tmp_path / "study", rng, n_seeds=2, fd_per_log_tau=-40.0, regress_on=[])
    assert main(["report", str(tmp_path / "study"), "report.regress_on=[disc.tau, disc.sigma]"]) == 0
    rows = regression_rows((tmp_path / "study" / "report.md").read_text())
    assert list(rows) == ["intercept", "disc.tau", "disc.sigma"] and rows["disc.tau"]["n seeds"] == "2"


@pytest.mark.parametrize("setting, named", [
    ("report.regress_on=[log(lipschitz/lower_bnd@0)]", ["no run logged lipschitz/lower_bnd", "lipschitz/lower_bound"]),
    ("report.regress_on=[lipschitz/lower_bound@7]", ["at step 7", "logged at steps 0, 300"]),
    ("report.regress_on=[disc.tauu]", ["disc.tauu is not a numeric key", "disc.tau"]),
    ("report.regress_on=[log(disc.tau]", ["'log(disc.tau'", "log(KEY)"]),
    ("report.regress_on=[disc.tau@0]", ["config key", "use disc.tau"]),
])
def test_a_regressor_the_runs_cannot_give_is_one_line_and_nothing_is_written(tmp_path, stops_in_one_line,
                                                                              setting, named):
    write_shape_gain_study(tmp_path / "study", np.random.default_rng(3), n_seeds=1, fd_per_log_tau=0.0,
                           regress_on=[])
    stops_in_one_line(["report", str(tmp_path / "study"), setting], *named)
    assert not list(tmp_path.rglob("report.md")) and not list(tmp_path.rglob("*.png"))


def test_a_study_config_with_a_bad_regressor_stops_before_its_runs(tmp_path, stops_in_one_line):
    stops_in_one_line(["train", "report.regress_on=[disc.sigmaa]", "wandb.mode=disabled",
                       f"out_dir={tmp_path / 'runs'}"], "disc.sigmaa is not a numeric key", "disc.sigma")
    assert not (tmp_path / "runs").exists()


def test_the_step_ranges_say_steps_vary_where_runs_were_evaluated_differently(tmp_path):
    for seed, steps in enumerate(((100, 200, 300), (100, 200, 300, 400))):
        write_synthetic_run(tmp_path, "sn", seed, [{"step": s, "quality/digits_fd": 900.0 - s} for s in steps])
    report = write_comparison(find_run_dirs(tmp_path), tmp_path).read_text()
    (row,) = table_after(report, "### quality/digits_fd")
    assert list(row)[2:5] == ["final (steps vary)", "last 3 (steps vary)", "AUC (steps vary)"]


def test_the_shape_table_puts_each_layer_s_step_0_fit_beside_its_trained_one(sweep_dir, report):
    fits = {row["layer"]: row for row in table_after(report, "## Spectrum shape per layer")}
    trained, start = fits["features.conv1"]["sn"].split("; step 0: ")
    for cell, step in ((trained, -1), (start, 0)):
        files = [sorted((d / "spectra").glob("step_*.json"))[step] for d in sorted(sweep_dir.glob("sn-*"))]
        taus = [json.loads(f.read_text())["layers"]["features.conv1"]["fit"]["tau"] for f in files]
        assert float(cell.split("τ ")[1].split(" ±")[0]) == pytest.approx(np.mean(taus), rel=1e-3)
    assert json.loads(files[0].read_text())["step"] == 0
    assert fits["features.conv1"]["stiefel_fixed"].count("τ 1") == 2  # a fixed curve does not move


def test_a_published_samples_figure_of_many_variants_stays_under_300_kb(tmp_path):
    """A tuning study's 36 variants, each with a sample grid of 9 x 9 real 16-px digits plus pixel noise: the
    published samples.png (each variant's median seed) keeps the pixels of PUBLISHED_SAMPLE_PANELS panels."""
    rng = np.random.default_rng(0)
    digits = load_digits(16).tensors[0][:, 0].numpy()
    runs = {}
    for index in range(36):
        label = f"sn@lr_d={index}"
        run_dir = write_synthetic_run(tmp_path, label, 0, [{"step": 10, "quality/digits_fd": 100.0 + index}])
        RunDir(run_dir).samples_dir.mkdir()
        tiles = digits[rng.choice(len(digits), 81)] + rng.normal(0, 0.1, (81, 16, 16))
        grid = tiles.reshape(9, 9, 16, 16).transpose(0, 2, 1, 3).reshape(144, 144)
        pixels = ((np.clip(grid, -1, 1) + 1) * 127.5).astype(np.uint8)
        Image.fromarray(pixels).save(RunDir(run_dir).samples_dir / "step_000010.png")
        runs[label] = [Run(run_dir, load_config(run_dir), read_metrics(run_dir))]
    figure = plot_samples(runs, "quality/digits_fd", tmp_path / "samples.png", every_seed=False)
    assert figure.stat().st_size < 300_000
    few = plot_samples(dict(list(runs.items())[:PUBLISHED_SAMPLE_PANELS]), "quality/digits_fd", tmp_path / "few.png",
                       every_seed=False)
    with Image.open(figure) as many_image, Image.open(few) as few_image:  # about the pixels of the few panels
        assert many_image.size[0] * many_image.size[1] < 1.3 * few_image.size[0] * few_image.size[1]


def test_the_first_quality_table_puts_precision_and_recall_beside_the_headline_and_states_the_floor(tmp_path):
    # class-mean-like samples against noisy ones: a fair FD hides precision 1 / recall 0, the glance shows it
    values = {"sn": [(400.0, 0.6, 0.3), (420.0, 0.7, 0.2)], "means": [(100.0, 1.0, 0.0), (110.0, 1.0, 0.0)]}
    for label, per_seed in values.items():
        for seed, (fd, precision, recall) in enumerate(per_seed):
            rows = [{"step": step, "quality/digits_fd": fd + 1000.0 * (step == 100), "quality/precision": precision,
                     "quality/recall": recall} for step in (100, 200)]
            write_synthetic_run(tmp_path / "study", label, seed, rows, "sn" if label == "sn" else "stiefel_fixed")
    report = write_comparison(find_run_dirs(tmp_path / "study"), tmp_path / "study").read_text()
    glance = {row["variant"]: row for row in table_after(
        report, "### At a glance: quality/digits_fd, quality/precision, quality/recall (final, mean ± std over seeds)")}
    assert glance["means"]["quality/digits_fd"] == f"105 ± {np.std([100.0, 110.0], ddof=1):.2g}"
    assert glance["means"]["quality/precision"] == "1 ± 0" and glance["means"]["quality/recall"] == "0 ± 0"
    assert glance["sn"]["n"] == "2" and glance["sn"]["quality/recall"].startswith("0.25 ± ")
    # the floor at these runs' settings (data.split=all here: the reference is all 1,797 digits, trained on too)
    floor = sampling_floor(load_run_config(tmp_path / "study" / "sn-s0")).values("quality/digits_fd")
    assert (f"Floor of quality/digits_fd: {np.mean(floor):.3g}, range {min(floor):.3g}-{max(floor):.3g} (all "
            "digits resampled, n = 1000, 5 draws).") in report
