"""The named studies (configs/experiment/<study>.yaml) by real Hydra composition: each sweeps its
variants (SN included) over three seeds, every job of the product composes and passes check_config, the
comparisons it declares name its variants, its W&B twin (configs/sweeps/<study>.yaml) lists the same
grid, presets keep their own learning rates."""

import contextlib
import dataclasses
import itertools

import pytest
import yaml
from helpers import raises_one_line, sweeper_axes
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from stiefel_gan.commands.cli import main
from stiefel_gan.config.checks import check_config, check_study
from stiefel_gan.config.compose import SOURCE_CONFIG_DIR as CONFIG_DIR
from stiefel_gan.config.compose import UsageError, compose_config
from stiefel_gan.config.seeds import fewest_pairs_for_a_verdict
from stiefel_gan.config.naming import default_run_name, run_tags, wandb_group
from stiefel_gan.config.schema import register_configs
from stiefel_gan.measure.table import HEADLINE, METRIC_GOALS

STUDIES = ("baselines", "shapes", "shape_gain", "learnable", "optimizers", "tuning", "saturation", "stacked",
           "mixtures_tuning")
#: the comparisons with SN each study declares for its report (docs/studies.md, "Declared comparisons")
DECLARED = {"baselines": ["fair_sn", "fair_sn_gain8", "fair_sn_gain64"], "shapes": [], "shape_gain": [], "learnable": [], "optimizers": [], "tuning": [],
            "saturation": ["none"], "stacked": [], "mixtures_tuning": []}
#: the contrasts between two of its variants each study declares (the same section of docs/studies.md)
CONTRASTS = {"shape_gain": [["diag_tau0p25", "svd_tau0p25"], ["diag_tau1", "svd_tau1"], ["diag_tau4", "svd_tau4"]]}
#: the variant presets other studies (the 2-D mixtures) rely on
REQUIRED_VARIANTS = ("sn", "none", "diag_tau0p5", "svd_tau0p5", "svd_tau4", "svd_tau0p5_entry", "curve", "grid")
VARIANT_KEYS = {"defaults", "variant", "disc", "optim"}  # a variant never sets the budget, data or seed


@contextlib.contextmanager
def hydra_configs():
    """Hydra's compose API over configs/ (one initialization for many compositions)."""
    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            yield
    finally:
        GlobalHydra.instance().clear()


def study_configs(study: str, extra: tuple[str, ...] = ()) -> list:
    """Every job of the study's product (variant x seed), in order (``extra``: overrides added to each).

    Each variant is composed by Hydra once, with the seeds taking turns (variant i with the i-th seed,
    cyclically, so every value of both axes goes through composition); the other seeds of that variant
    are the same config with ``train.seed`` replaced, which is all a seed override changes.
    """
    axes = sweeper_axes(study)
    assert set(axes) == {"variant", "train.seed"}
    seeds = [int(seed) for seed in axes["train.seed"]]
    configs = []
    with hydra_configs():
        for index, variant in enumerate(axes["variant"]):
            composed_seed = seeds[index % len(seeds)]
            overrides = [f"experiment={study}", f"variant={variant}", f"train.seed={composed_seed}", *extra]
            composed = OmegaConf.to_object(compose("config", overrides=overrides))
            assert composed.train.seed == composed_seed
            configs += [dataclasses.replace(composed, train=dataclasses.replace(composed.train, seed=seed))
                        for seed in seeds]
    return configs


@pytest.mark.parametrize("study", STUDIES)
def test_every_job_of_a_study_composes_and_passes_the_checks(study):
    axes = sweeper_axes(study)
    assert axes["train.seed"] == ["0", "1", "2"]
    configs = study_configs(study)
    assert [cfg.train.seed for cfg in configs[:3]] == [0, 1, 2]
    for cfg in configs:
        check_config(cfg)
        assert cfg.name == study and cfg.variant
        assert (cfg.data.name, cfg.train.steps, cfg.train.batch_size) == (configs[0].data.name, configs[0].train.steps,
                                                                          configs[0].train.batch_size)
    check_study(configs)  # the declared comparisons name variants the study runs
    assert all(cfg.report.comparisons == DECLARED[study] for cfg in configs)
    assert all(cfg.report.contrasts == CONTRASTS.get(study, []) for cfg in configs)
    variants = axes["variant"]
    assert len(configs) == 3 * len(variants)
    assert len({default_run_name(cfg) for cfg in configs}) == len(configs)  # seeds and variants never collide
    labels = {cfg.variant for cfg in configs}
    assert {wandb_group(cfg) for cfg in configs} == {f"{study}/{label}" for label in labels}
    baselines = [cfg for cfg in configs if cfg.disc.kind == "sn"]
    assert baselines, "every study holds the SN baseline"
    assert all("baseline" in run_tags(cfg) for cfg in baselines)
    assert not any("baseline" in run_tags(cfg) for cfg in configs if cfg.disc.kind != "sn")
    if study == "tuning":  # <method>@<setting>: the method part groups the settings of a grid
        assert all("@" in label for label in labels)
        methods = {label.split("@")[0] for label in labels}
        assert methods == {"sn", "sn_miyato", "fair_sn", "radam_matrix", "radam_entry", "rsgd"}
        assert all(sum(label.startswith(f"{method}@") for label in labels) == 6 for method in methods)
        assert {cfg.optim.preset for cfg in configs if cfg.variant.startswith("sn_miyato@")} == set("ABCDEF")
        assert all(cfg.tuning.confirm_seeds == list(range(10, 18)) for cfg in configs)
    elif study == "mixtures_tuning":  # SN and the shaped and the flat Stiefel D, 5 settings each, on the mixtures
        assert {cfg.data.name for cfg in configs} == {"ring8"}
        methods = {label.split("@")[0] for label in labels}
        assert methods == {"sn", "svd_tau0p5_flat_input", "all_flat"}
        assert all(sum(label.startswith(f"{method}@") for label in labels) == 5 for method in methods)
        # the two Stiefel methods differ in the spectrum only, on the same grid of lr_stiefel
        for rate in (0.01, 0.03, 0.1, 0.3, 1.0):
            shaped, flat = ([cfg for cfg in configs if cfg.variant == f"{method}@lr_stiefel={rate:g}"][0]
                            for method in ("svd_tau0p5_flat_input", "all_flat"))
            assert shaped.optim == flat.optim and shaped.optim.lr_stiefel == rate
            assert (shaped.disc.kind, shaped.disc.spectrum) == (flat.disc.kind, flat.disc.spectrum)
            assert (shaped.disc.tau, shaped.disc.layers.others, flat.disc.eps) == (0.5, "flat", 1.0)
        assert all(cfg.tuning.confirm_seeds == list(range(10, 17)) for cfg in configs)
    elif study == "optimizers":  # each optimizer over its learning-rate grid, next to the SN baseline
        assert {label.split("@")[0] for label in labels} == {"sn", "radam_matrix", "rsgd", "radam_entry"}
        assert all(len([label for label in labels if label.startswith(f"{method}@")]) >= 3
                   for method in ("radam_matrix", "rsgd", "radam_entry"))
    else:
        assert labels == set(variants)


def test_shape_gain_contrasts_are_checked_against_the_whole_study_when_a_sweep_runs_part_of_it():
    twins = [cfg for cfg in study_configs("shape_gain") if cfg.variant in ("sn", "diag_tau1", "svd_tau1")]
    # more seeds of the sigma-1 twins only: the other contrasts name variants of the study's own axis
    check_study(twins, study_presets=sweeper_axes("shape_gain")["variant"])
    raises_one_line(lambda: check_study(twins), "report.contrasts=", "'diag_tau0p25' is not a variant of the study",
                    "(diag_tau1, svd_tau1)", error=UsageError)
    renamed = [dataclasses.replace(cfg, report=dataclasses.replace(cfg.report, contrasts=[["diag_tau1", "svd_tau9"]]))
               for cfg in twins]
    raises_one_line(lambda: check_study(renamed, study_presets=sweeper_axes("shape_gain")["variant"]),
                    "'svd_tau9' is not a variant of the study", "svd_tau4", error=UsageError)


@pytest.mark.parametrize("study", STUDIES)
def test_the_wandb_sweep_lists_the_same_grid(study):
    sweep = yaml.safe_load((CONFIG_DIR / "sweeps" / f"{study}.yaml").read_text())
    assert sweep["method"] == "grid"
    headline = HEADLINE[compose_config([f"experiment={study}"]).data.name]  # digits_fd; stacked: modes_covered
    assert sweep["metric"] == {"name": headline, "goal": METRIC_GOALS[headline]}
    assert sweep["command"] == ["stiefel-gan", "train", f"experiment={study}", "${args_no_hyphens}"]
    hydra_axes = {key: [yaml.safe_load(v) for v in values] for key, values in sweeper_axes(study).items()}
    assert {key: entry["values"] for key, entry in sweep["parameters"].items()} == hydra_axes


def test_variant_presets_set_the_variant_and_no_budget():
    presets = sorted((CONFIG_DIR / "variant").glob("*.yaml"))
    assert set(REQUIRED_VARIANTS) <= {path.stem for path in presets}
    # so each one is composed and checked: above for the digits studies, in tests/test_mixtures.py for the mixtures
    in_studies = {v for study in (*STUDIES, "smoke", "mixtures") for v in sweeper_axes(study)["variant"]}
    assert {path.stem for path in presets} <= in_studies
    for path in presets:
        text = path.read_text()
        assert text.startswith("# @package _global_"), path.name
        content = yaml.safe_load(text)
        assert set(content) <= VARIANT_KEYS, path.name
        assert content["variant"] == path.stem or "@" in content["variant"], path.name


def test_the_diag_and_svd_shapes_differ_only_in_the_factorization():
    diag, svd = (compose_config(["experiment=shapes", f"variant={f}_tau0p5"]) for f in ("diag", "svd"))
    assert (diag.disc.factorization, svd.disc.factorization) == ("diag", "svd")
    diag.disc.factorization = svd.disc.factorization
    assert diag.disc == svd.disc and diag.disc.tau == 0.5 and diag.disc.max_value == 1.0


def optim_preset(name: str) -> dict:
    return yaml.safe_load((CONFIG_DIR / "optim" / f"{name}.yaml").read_text())


def test_an_experiment_keeps_the_learning_rates_of_the_optim_preset_it_is_given():
    """``experiment=X optim=P`` runs P's learning rates, betas and n_dis, not X's (no experiment overwrites
    them), for Miyato's preset D and for rsgd, whose values differ from every experiment's own."""
    experiments = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
    with hydra_configs():
        for experiment, preset in itertools.product(experiments, ("D", "rsgd")):
            cfg = compose("config", overrides=[f"experiment={experiment}", f"optim={preset}"])
            for key, value in optim_preset(preset).items():
                assert cfg.optim[key] == value, (experiment, preset, key)


def test_a_variant_wins_over_the_budget_and_the_command_line_over_both():
    cfg = compose_config(["experiment=tuning", "variant=tune_sn_lr_d1e-3"])
    assert cfg.optim.lr_d == 1e-3 and cfg.optim.lr_g == optim_preset("digits")["lr_g"]
    cfg = compose_config(["experiment=tuning", "variant=tune_sn_lr_d1e-3", "optim.lr_d=3e-4"])
    assert cfg.optim.lr_d == 3e-4


@pytest.mark.parametrize("moved", [["data=cifar10"], ["budget=cifar10"]])
def test_a_study_on_a_dataset_that_is_not_on_disk_stops_before_training(tmp_path, stops_in_one_line, moved):
    root = tmp_path / "nowhere"
    stops_in_one_line(["train", "-m", "experiment=baselines", "variant=sn,wc", *moved, f"data.root={root}",
                       f"out_dir={tmp_path / 'runs'}"], "CIFAR-10 (data=cifar10) is not on disk", str(root))
    assert not (tmp_path / "runs").exists() and not root.exists()


@pytest.mark.parametrize("study", STUDIES)
def test_budget_cifar10_moves_a_digits_study_to_cifar10_and_keeps_its_variants(study):
    digits, cifar = study_configs(study), study_configs(study, ["budget=cifar10"])
    assert [cfg.variant for cfg in cifar] == [cfg.variant for cfg in digits]
    for on_digits, on_cifar in zip(digits, cifar):
        assert (on_cifar.data.name, on_cifar.data.image_size, on_cifar.model.d_width) == ("cifar10", 32, 64)
        assert on_cifar.metrics.protocol == "miyato" and on_cifar.train.steps == 50000
        assert on_cifar.disc == on_digits.disc and on_cifar.loss == on_digits.loss  # the study's own axes stay


def test_a_sweep_over_part_of_a_study_is_checked_against_the_whole_study(tmp_path, capsys):
    # more seeds of the declared variants alone: the study's own variant axis holds the baseline they are compared with
    configs = [compose_config(["experiment=baselines", f"variant={variant}", f"train.seed={seed}"])
               for variant in ("fair_sn", "fair_sn_gain8", "fair_sn_gain64") for seed in (3, 4)]
    with pytest.raises(UsageError, match="the study has no SN variant"):
        check_study(configs)
    check_study(configs, study_presets=sweeper_axes("baselines")["variant"])
    # the checked sweeper passes that axis: a misspelled declaration lists every variant of the study
    assert main(["train", "-m", "experiment=baselines", "variant=wc", "report.comparisons=[fair_snn]",
                 f"out_dir={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'fair_snn' is not a variant of the study" in err
    assert "(fair_sn, fair_sn_gain32, fair_sn_gain64, fair_sn_gain8, gp, none, ortho_reg, wc, wn)" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("study", [study for study, declared in DECLARED.items() if declared])
def test_a_study_header_runs_its_declared_variants_on_enough_seeds_for_a_verdict(study):
    """The header's commands (``#   stiefel-gan train -m experiment=<study> ...``) together run every variant of
    the study on at least its 3 seeds, and the declared ones and SN on enough for Holm's first step."""
    header = (CONFIG_DIR / "experiment" / f"{study}.yaml").read_text()
    commands = [line.split("stiefel-gan train -m ", 1)[1].split() for line in header.splitlines()
                if line.startswith("#   stiefel-gan train -m experiment=")]
    assert commands, f"{study}'s header gives no run commands"
    axes = sweeper_axes(study)
    seeds = {variant: set() for variant in axes["variant"]}
    for overrides in commands:
        given = dict(override.split("=", 1) for override in overrides)
        for variant in given.get("variant", ",".join(axes["variant"])).split(","):
            seeds[variant] |= set(given.get("train.seed", ",".join(axes["train.seed"])).split(","))
    configs = study_configs(study)
    alpha = configs[0].report.alpha
    needed = fewest_pairs_for_a_verdict(alpha, len(DECLARED[study]))
    sn = {cfg.variant for cfg in configs if cfg.disc.kind == "sn"}
    for variant, ran in seeds.items():
        floor = needed if variant in {*DECLARED[study], *sn} else len(axes["train.seed"])
        assert len(ran) >= floor, (variant, sorted(ran))
