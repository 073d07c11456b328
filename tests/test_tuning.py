"""The tuning protocol (``tuning.*``, stiefel_gan.config.tuning, stiefel_gan.report.tuning): bests chosen on
the selection seeds, an edge optimum refused with the way to extend its grid, verdicts on the confirm seeds
only (checked against a hand computation), the confirm step's command, and the one-line refusals of a bad
protocol, on synthetic run directories with the configs the study's presets compose to."""

import copy
import dataclasses
import itertools
import json

import numpy as np
import pytest
from helpers import assert_one_line, raises_one_line
from omegaconf import OmegaConf

from stiefel_gan.commands.cli import main
from stiefel_gan.config.checks import check_config, check_study
from stiefel_gan.config.compose import UsageError, compose_config
from stiefel_gan.config.paths import CONFIG_FILE, METRICS_FILE
from stiefel_gan.config.schema import config_dict
from stiefel_gan.config.tuning import confirm_seeds_needed
from stiefel_gan.config.seeds import smallest_sign_flip_p_value
from stiefel_gan.report.discovery import find_run_dirs
from stiefel_gan.report.markdown import write_comparison

SN = ["2e-4", "5e-4", "1e-3", "2e-3", "5e-3", "1e-2"]
PRESETS = {**{f"sn@lr_d={v}": f"tune_sn_lr_d{v}" for v in SN},
           **{f"sn_miyato@optim={p}": f"tune_sn_miyato_optim{p}" for p in "ABCDEF"},
           **{f"radam_entry@lr_stiefel={v}": f"tune_radam_entry_lr_stiefel{v}" for v in SN}}
SELECTION, CONFIRM = [0, 1, 2], list(range(10, 18))


@pytest.fixture(scope="module")
def configs():
    """Each preset's config as a run saves it (experiment=tuning: its protocol, confirm seeds 10-17)."""
    return {label: config_dict(compose_config(["experiment=tuning", f"variant={preset}", "wandb.mode=disabled"]))
            for label, preset in PRESETS.items()}


def write_runs(root, configs, areas):
    """A run directory per ``areas[label][seed]``: a digits FD curve ``a + 100, a, a - 100`` at steps 100,
    200, 300, whose area under the curve (the trapezoids over the step range) is exactly ``a``."""
    for label, by_seed in areas.items():
        for seed, area in by_seed.items():
            config = copy.deepcopy(configs[label])
            config["train"]["seed"] = seed
            config["out_dir"] = str(root)
            run_dir = root / "tuning" / f"{label}-s{seed}"
            run_dir.mkdir(parents=True)
            OmegaConf.save(OmegaConf.create(config), run_dir / CONFIG_FILE)
            rows = [{"step": step, "quality/digits_fd": area + shift} for step, shift in ((100, 100), (200, 0), (300, -100))]
            (run_dir / METRICS_FILE).write_text("".join(json.dumps(row) + "\n" for row in rows))
    return root / "tuning"


def selection_areas(best: dict[str, str]):
    """Per setting and selection seed: 800 at each method's ``best`` setting, more the farther a setting is
    from it in the grid, plus the seed (every method's grids have 6 settings)."""
    areas = {}
    for method in ("sn", "sn_miyato", "radam_entry"):
        labels = [label for label in PRESETS if label.startswith(f"{method}@")]
        at = labels.index(best[method])
        for i, label in enumerate(labels):
            areas[label] = {seed: 800.0 + 60.0 * abs(i - at) + 10.0 * seed + (50.0 if method == "sn_miyato" else 0)
                            for seed in SELECTION}
    return areas


def test_an_optimum_at_its_grid_edge_is_refused_with_the_way_to_extend_it(tmp_path, configs, stops_in_one_line):
    areas = selection_areas({"sn": "sn@lr_d=1e-2", "sn_miyato": "sn_miyato@optim=F",
                             "radam_entry": "radam_entry@lr_stiefel=2e-4"})
    study = write_runs(tmp_path, configs, areas)
    report = write_comparison(find_run_dirs(study), study).read_text()
    top = "sn's best lr_d=1e-2 is the top of its grid 2e-4..1e-2: extend it above 1e-2"
    bottom = "radam_entry's best lr_stiefel=2e-4 is the bottom of its grid 2e-4..1e-2: extend it below 2e-4"
    assert f"- {top}\n" in report and f"- {bottom}\n" in report
    assert "sn_miyato's best" not in report  # F is the last preset, but a categorical grid has no edge
    assert "No verdicts: SN's best is unresolved" in report and "### Confirmation" not in report
    stops_in_one_line(["confirm", str(study), "--dry-run"], "the confirm step is not allowed yet", top, "(and 1 more unresolved)")


def test_a_setting_undefined_on_one_selection_seed_scores_worst_and_is_not_missing(tmp_path, configs, capsys):
    # a run with no reading of the key at any evaluation has no statistic: averaged over its other seeds alone
    # this setting (far better there) would be chosen, and counted as missing it would block the confirm step
    areas = selection_areas({"sn": "sn@lr_d=1e-3", "sn_miyato": "sn_miyato@optim=A",
                             "radam_entry": "radam_entry@lr_stiefel=2e-3"})
    areas["radam_entry@lr_stiefel=1e-3"] = {0: float("nan"), 1: 100.0, 2: 100.0}
    study = write_runs(tmp_path, configs, areas)
    assert main(["confirm", str(study), "--dry-run"]) == 0
    assert "tune_radam_entry_lr_stiefel2e-3 " in capsys.readouterr().out
    report = write_comparison(find_run_dirs(study), study).read_text()
    assert "selection runs are missing" not in report
    row = next(line for line in report.splitlines() if line.startswith("| radam_entry | 2e-4..1e-2 |"))
    assert row.startswith("| radam_entry | 2e-4..1e-2 | 2e-3 | 810 |"), row
    # every setting undefined somewhere: no best, in one line that says so, and no confirm step
    for label in [label for label in PRESETS if label.startswith("radam_entry@")]:
        areas[label][0] = float("nan")
    study = write_runs(tmp_path / "undefined", configs, areas)
    report = write_comparison(find_run_dirs(study), study).read_text()
    assert "- radam_entry has no setting whose quality/digits_fd is defined on every selection seed" in report


def test_an_interior_optimum_is_confirmed_on_the_confirm_seeds_only(tmp_path, configs, capsys):
    areas = selection_areas({"sn": "sn@lr_d=1e-3", "sn_miyato": "sn_miyato@optim=A",
                             "radam_entry": "radam_entry@lr_stiefel=2e-3"})
    areas["radam_entry@lr_stiefel=2e-3"] = {seed: 400.0 for seed in SELECTION}  # far better on the seeds that chose it
    study = write_runs(tmp_path, configs, areas)
    assert main(["confirm", str(study), "--dry-run"]) == 0
    command = capsys.readouterr().out.strip()
    assert command == ("stiefel-gan train -m experiment=tuning "
                       "variant=tune_sn_lr_d1e-3,tune_sn_miyato_optimA,tune_radam_entry_lr_stiefel2e-3 "
                       f"train.seed=10,11,12,13,14,15,16,17 out_dir={tmp_path}")
    # every job of that command composes and passes the study check (its grids: the study's own axis)
    overrides = command.split()[3:]
    jobs = [compose_config([o for o in overrides if not o.startswith(("variant=", "train.seed="))]
                           + [f"variant={v}", f"train.seed={s}"])
            for v, s in itertools.product(overrides[1].split("=")[1].split(","), CONFIRM[:1])]
    check_study(jobs, study_presets=list(PRESETS.values()))
    # the confirm runs: on them the Stiefel best is only a little better, and not in every seed
    rng = np.random.default_rng(3)
    sn_confirm = 800.0 + rng.normal(0, 30, len(CONFIRM))
    entry_confirm = sn_confirm - 25.0 + rng.normal(0, 30, len(CONFIRM))
    write_runs(tmp_path / "more", configs, {"sn@lr_d=1e-3": dict(zip(CONFIRM, sn_confirm)),
                                            "radam_entry@lr_stiefel=2e-3": dict(zip(CONFIRM, entry_confirm))})
    report = write_comparison(find_run_dirs(tmp_path), study).read_text()
    # by hand: the exact sign-flip p-value over the 2^8 patterns of the confirm seeds' differences alone
    d = entry_confirm - sn_confirm
    p = sign_flip_p_value(d)
    lines = report.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("### Confirmation: confirm seeds")))
    header, _, row = ([c.strip() for c in line.strip("|").split("|")] for line in lines[start + 2:start + 5])
    cells = dict(zip(header, row))
    assert cells["method"] == "radam_entry" and cells["best"] == "2e-3" and cells["n (confirm seeds)"] == "8"
    assert float(cells["Δ area under the curve (its time average)"]) == pytest.approx(d.mean(), rel=1e-3)
    assert float(cells["p"]) == pytest.approx(p, rel=1e-2) and float(cells["Holm p"]) == pytest.approx(p, rel=1e-2)
    assert "Baseline of the verdicts: **sn@lr_d=1e-3**" in report and "Confirm seeds only" not in report
    assert "Confirm step: 1 best(s) lack confirm seeds (sn_miyato@optim=A" in report  # only two bests ran
    # the other tables show the selection seeds only: the baseline's row has its 3 selection seeds, not 11
    assert "| sn@lr_d=1e-3 | 3 |" in report


def sign_flip_p_value(d):
    """The exact two-sided sign-flip p-value of the paired differences ``d``, over all 2^n sign patterns."""
    return np.mean([abs(np.mean(np.array(signs) * d)) >= abs(d.mean()) - 1e-9
                    for signs in itertools.product((-1, 1), repeat=len(d))])


def test_confirm_runs_of_bests_chosen_at_another_budget_get_the_declared_comparisons(tmp_path, configs):
    # the long budget's runs: the 500-step bests on the confirm seeds only, no selection seed among them
    rng = np.random.default_rng(5)
    sn_confirm = 900.0 + rng.normal(0, 30, len(CONFIRM))
    entry_confirm = sn_confirm - 60.0 + rng.normal(0, 20, len(CONFIRM))
    study = write_runs(tmp_path, configs, {"sn_miyato@optim=A": dict(zip(CONFIRM, sn_confirm)),
                                           "radam_entry@lr_stiefel=2e-3": dict(zip(CONFIRM, entry_confirm))})
    declared = {"comparisons": ["radam_entry@lr_stiefel=2e-3"], "statistic": "final"}
    report = write_comparison(find_run_dirs(study), study, overrides=declared).read_text()
    assert "**Confirm seeds only**" in report and "### Confirmation" not in report
    assert "Baseline: **sn_miyato@optim=A** (the variant with disc.kind=sn)" in report
    lines = report.splitlines()
    start = lines.index("| variant | minus | n | Δ mean | p | Holm p | Δ in SDs of minus | verdict |")
    cells = [c.strip() for c in lines[start + 2].strip("|").split("|")]
    # the final value of each curve a + 100, a, a - 100 is a - 100: the difference of the a's
    d = entry_confirm - sn_confirm
    assert cells[:3] == ["radam_entry@lr_stiefel=2e-3", "sn_miyato@optim=A", "8"]
    assert float(cells[3]) == pytest.approx(d.mean(), rel=1e-3)
    assert float(cells[4]) == pytest.approx(sign_flip_p_value(d), rel=1e-2)
    assert cells[7].startswith("**better**")  # lower FD in every seed: p = 2 / 2^8 < 0.05


def test_two_variants_within_the_calibration_floor_get_no_verdict(tmp_path, configs):
    from stiefel_gan.config.compose import load_run_config
    from stiefel_gan.measure.calibration import sampling_floor

    # final FDs of about 4 and 5, one lower in every seed: a paired test would call it, the floor does not
    rng = np.random.default_rng(7)
    sn_final = 5.0 + rng.uniform(0, 0.5, len(CONFIRM))
    entry_final = sn_final - 1.0
    study = write_runs(tmp_path, configs, {"sn_miyato@optim=A": dict(zip(CONFIRM, sn_final + 100)),
                                           "radam_entry@lr_stiefel=2e-3": dict(zip(CONFIRM, entry_final + 100))})
    declared = {"comparisons": ["radam_entry@lr_stiefel=2e-3"], "statistic": "final"}
    report = write_comparison(find_run_dirs(study), study, overrides=declared).read_text()
    # the floor stated is the calibration's first row at the runs' settings (what stiefel-gan calibrate publishes)
    floor = sampling_floor(load_run_config(next(study.iterdir())))
    values = floor.values("quality/digits_fd")
    assert floor.row.name == "held-out digits" and len(values) == 5 and max(values) > 5.5
    assert f"range {min(values):.3g}-{max(values):.3g} (held-out digits resampled, n = 1000, 5 draws)" in report
    row = next(line for line in report.splitlines() if line.startswith("| radam_entry@lr_stiefel=2e-3 | sn_miyato"))
    assert "within the floor: not called (Holm p 0.00781)" in row and "**better**" not in row
    # the same difference well above the floor is called
    far = write_runs(tmp_path / "far", configs, {"sn_miyato@optim=A": dict(zip(CONFIRM, sn_final + 200)),
                                                 "radam_entry@lr_stiefel=2e-3": dict(zip(CONFIRM, entry_final + 200))})
    report = write_comparison(find_run_dirs(far), far, overrides=declared).read_text()
    row = next(line for line in report.splitlines() if line.startswith("| radam_entry@lr_stiefel=2e-3 | sn_miyato"))
    assert "**better** (Holm p 0.00781)" in row


@pytest.mark.parametrize("seeds, named", [
    ("[2,10,11,12,13,14,15,16]", "seed(s) [2] are also selection seeds"),
    ("[10,11,12,13,14]", "below 6 no two-sided sign-flip test reaches p < 0.05"),
    ("[10,10,11,12,13,14,15,16]", "use distinct seeds"),
])
def test_a_bad_protocol_stops_the_study_in_one_line_before_any_job(tmp_path, stops_in_one_line, seeds, named):
    stops_in_one_line(["train", "-m", "experiment=tuning", "variant=tune_sn_lr_d2e-4", f"tuning.confirm_seeds={seeds}",
                       f"out_dir={tmp_path / 'runs'}"], f"tuning.confirm_seeds={seeds.replace(',', ', ')}", named)
    assert not (tmp_path / "runs").exists()


def relabelled(cfg, labels, seed=0):
    return [dataclasses.replace(cfg, variant=label, train=dataclasses.replace(cfg.train, seed=seed)) for label in labels]


def test_unequal_or_linear_grids_too_few_seeds_for_holm_and_stray_seeds_are_refused():
    sn = compose_config(["experiment=tuning", "variant=tune_sn_lr_d2e-4"])
    entry = compose_config(["experiment=tuning", "variant=tune_radam_entry_lr_stiefel2e-4"])
    grid = relabelled(sn, [f"sn@lr_d={v}" for v in SN[:3]]) + relabelled(entry, [f"radam_entry@lr_stiefel={v}" for v in SN])
    raises_one_line(lambda: check_study(grid), "unequal tuning grids are not allowed: sn 3, radam_entry 6 settings",
                    error=UsageError)
    linear = relabelled(sn, [f"sn@lr_d={v}" for v in (1e-3, 2e-3, 3e-3, 4e-3)])
    raises_one_line(lambda: check_study(linear), "sn's grid lr_d = 0.001, 0.002, 0.003, 0.004 is not allowed: it is "
                    "not log-spaced", error=UsageError)
    check_study(relabelled(sn, [f"sn@lr_d={v}" for v in SN]) + relabelled(entry, [f"radam_entry@lr_stiefel={v}" for v in SN]))
    # five methods compared with SN need 8 confirm seeds at 0.05 (Holm's first step: 0.05 / 5 = 0.01)
    five = relabelled(sn, ["sn@lr_d=1e-3"]) + relabelled(entry, [f"m{i}@lr_stiefel=1e-3" for i in range(5)])
    for cfg in five:
        cfg.tuning.confirm_seeds = list(range(10, 17))
    raises_one_line(lambda: check_study(five), "with 5 methods compared with SN", "use at least 8 seeds", error=UsageError)
    stray = relabelled(sn, ["sn@lr_d=1e-3"], seed=3)
    raises_one_line(lambda: check_study(stray), "train.seed=3 is not allowed in this tuning study", error=UsageError)
    check_config(sn)


@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.1])
def test_the_confirm_seed_floor_is_the_fewest_pairs_for_a_holm_verdict(alpha):
    for comparisons in range(1, 9):
        n = confirm_seeds_needed(alpha, comparisons)
        assert smallest_sign_flip_p_value(n) <= alpha / comparisons  # Holm's first step can pass with n seeds
        assert n == 6 or smallest_sign_flip_p_value(n - 1) > alpha / comparisons  # and not with one fewer
        assert n >= 6


def test_runs_that_declare_no_protocol_have_no_confirm_step(tmp_path, configs, stops_in_one_line):
    plain = {label: {**config, "tuning": {**config["tuning"], "confirm_seeds": []}} for label, config in configs.items()}
    study = write_runs(tmp_path, plain, {"sn@lr_d=1e-3": {0: 800.0}})
    line = stops_in_one_line(["confirm", str(study)], "its runs declare no tuning protocol")
    assert_one_line(line, str(study))
