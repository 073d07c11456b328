"""One disc axis per concept: typed choices that OmegaConf itself checks (every closed choice of the
schema), the old disc names as presets, every Stiefel key honoured by the builder, run names and tags,
and the bad combinations refused with one line before anything is written."""

import typing
from enum import Enum

import pytest
import torch
from helpers import TINY_MODELS

from stiefel_gan.config.checks import check_config
from stiefel_gan.config.compose import UsageError, compose_config
from stiefel_gan.config.naming import default_run_name, disc_label, run_tags, wandb_group
from stiefel_gan.config.schema import Choice, Config, DiscKind, config_dict, flatten
from stiefel_gan.data.datasets import data_shape
from stiefel_gan.gan.builder import build_gan
from stiefel_gan.manifold import FixedCurve, FrobeniusNormalized, LearnableCurve, LearnableGrid, stiefel_layers

PRESETS = {  # preset -> (kind, spectrum, factorization, max_value)
    "stiefel_fixed": ("stiefel", "fixed", "diag", 1.0),
    "stiefel_curve": ("stiefel", "curve", "diag", 1.0),
    "stiefel_grid": ("stiefel", "grid", "diag", 1.0),
    "stiefel_svd": ("stiefel", "fixed", "svd", 1.0),
}


@pytest.mark.parametrize("preset", PRESETS)
def test_old_disc_names_are_presets_of_one_stiefel_kind(preset):
    disc = compose_config([f"disc={preset}"]).disc
    assert (disc.kind, disc.spectrum, disc.factorization, disc.max_value) == PRESETS[preset]
    assert disc.kind == "stiefel" and f"{disc.kind}" == "stiefel"  # a choice is its string


def choice_fields(node=Config, prefix=""):
    """``(key, choice, is_list)`` for every field of the schema typed by a :class:`Choice` or a list of one."""
    for name, hint in typing.get_type_hints(node).items():
        element = typing.get_args(hint)[0] if typing.get_origin(hint) is list else None
        if isinstance(hint, type) and issubclass(hint, Choice):
            yield f"{prefix}{name}", hint, False
        elif isinstance(element, type) and issubclass(element, Choice):
            yield f"{prefix}{name}", element, True
        elif hasattr(hint, "__dataclass_fields__"):
            yield from choice_fields(hint, f"{prefix}{name}.")


CHOICE_FIELDS = list(choice_fields())


def test_every_closed_choice_of_the_schema_is_typed():
    keys = {key for key, _, _ in CHOICE_FIELDS}
    assert {"data.name", "model.arch", "disc.kind", "disc.spectrum", "disc.factorization", "disc.penalty",
            "disc.normalize", "disc.retraction", "disc.learn", "optim.name", "optim.second_moment", "optim.lr_decay",
            "loss.name", "train.precision", "metrics.protocol", "wandb.mode"} <= keys
    for _, choice, _ in CHOICE_FIELDS:  # OmegaConf reads a value by its member's name
        assert all(member.name == member.value for member in choice), choice


@pytest.mark.parametrize("key,choice,is_list", CHOICE_FIELDS, ids=[key for key, _, _ in CHOICE_FIELDS])
def test_a_value_outside_a_choice_is_refused_in_one_line_naming_it_and_the_allowed_ones(key, choice, is_list):
    with pytest.raises(UsageError) as refused:
        compose_config([f"{key}=[bogus]" if is_list else f"{key}=bogus"])
    bad = f"{key}[0]='bogus'" if is_list else f"{key}='bogus'"
    assert str(refused.value) == f"{bad} is not allowed: use one of {', '.join(choice.values())}"


def test_choices_are_plain_strings_in_records_names_and_wandb():
    cfg = compose_config(["disc=stiefel_curve", "optim=rsgd", "loss=vanilla", "train.precision=bf16", "data=ring8",
                          "model=mlp"])
    assert cfg.loss.name == "vanilla" and {"vanilla": 1}[cfg.loss.name] == 1 and f"{cfg.train.precision}" == "bf16"
    flat = flatten(config_dict(cfg))  # what the checkpoint and the W&B config hold
    leaked = {key: value for key, value in flat.items()
              if isinstance(value, Enum) or isinstance(value, list) and any(isinstance(v, Enum) for v in value)}
    assert not leaked and flat["disc.learn"] == ["tau", "eps"] and flat["optim.name"] == "rsgd"
    assert all(type(tag) is str for tag in run_tags(cfg)) and default_run_name(cfg) == "stiefel_curve-rsgd-s0"


@pytest.mark.parametrize("spectrum,expected",
                         [("fixed", FixedCurve), ("curve", LearnableCurve), ("grid", LearnableGrid)])
@pytest.mark.parametrize("factorization", ["diag", "svd"])
def test_every_stiefel_key_is_honoured_whatever_the_preset(spectrum, expected, factorization):
    cfg = compose_config(["disc=stiefel_svd", f"disc.spectrum={spectrum}", f"disc.factorization={factorization}",
                          *TINY_MODELS["standard_cnn"]])
    layers = list(stiefel_layers(build_gan(cfg, data_shape("digits", 16)).discriminator))
    assert len(layers) == 8
    for _, layer in layers:
        assert isinstance(layer.spectrum, expected) and layer.parametrization.factorization == factorization
        top = torch.linalg.svdvals(layer.weight.detach().flatten(1))[0].item()
        assert top == pytest.approx(1.0, abs=1e-5)  # sigma_max = 1 by default, the grid included (max_value=1)


def test_frobenius_normalize_wraps_the_chosen_spectrum():
    cfg = compose_config(["disc=stiefel_grid", "disc.max_value=null", "disc.normalize=frobenius",
                          "disc.normalize_target=2.0", *TINY_MODELS["standard_cnn"]])
    for _, layer in stiefel_layers(build_gan(cfg, data_shape("digits", 16)).discriminator):
        assert isinstance(layer.spectrum, FrobeniusNormalized) and isinstance(layer.spectrum.inner, LearnableGrid)
        assert layer.singular_values().norm().item() == pytest.approx(2.0, rel=1e-5)


def test_run_names_tags_and_groups():
    svd = compose_config(["disc=stiefel_svd", "optim=rsgd", "train.seed=2"])
    assert disc_label(svd.disc) == "stiefel_fixed_svd" and default_run_name(svd) == "stiefel_fixed_svd-rsgd-s2"
    assert {"stiefel", "stiefel_fixed_svd", "rsgd"} <= set(run_tags(svd)) and "baseline" not in run_tags(svd)
    assert wandb_group(svd).startswith("default/stiefel_fixed_svd-rsgd-")  # plus a digest of the non-seed config
    sn = compose_config(["experiment=baselines", "variant=sn", "train.seed=1"])
    assert default_run_name(sn) == "sn-s1" and wandb_group(sn) == "baselines/sn" and "baseline" in run_tags(sn)
    tuned = compose_config(["experiment=tuning", "variant=tune_sn_lr_d1e-3", "wandb.group=mine"])
    assert default_run_name(tuned) == "sn@lr_d=1e-3-s0" and wandb_group(tuned) == "mine"


BAD_COMMANDS = [  # (overrides, what the one line must name)
    (["disc.kind=stiefl"], "disc.kind='stiefl' is not allowed"),
    (["disc.kind=stiefl"], "use one of none, sn, fair_sn, ortho_reg, wc, wn, gp, stiefel"),  # and what is allowed
    (["disc=stiefel_fixed", "disc.spectrum=grids"], "disc.spectrum"),
    (["disc=stiefel_fixed", "disc.factorization=qr"], "disc.factorization"),
    (["disc=gp", "disc.penalty=one_sided"], "r1"),
    (["disc=stiefel_fixed", "disc.normalize=frobenius", "disc.max_value=null"], "disc.normalize_target=None"),
    (["disc=stiefel_fixed", "disc.normalize=frobenius", "disc.normalize_target=-1", "disc.max_value=null"],
     "disc.normalize_target=-1.0"),
    (["disc=stiefel_fixed", "disc.normalize=frobenius", "disc.normalize_target=0", "disc.max_value=null"],
     "disc.normalize_target=0.0"),
    (["disc=stiefel_grid", "disc.normalize=frobenius", "disc.normalize_target=3"], "it would win"),
    (["disc=sn", "disc.normalize=frobenius", "disc.normalize_target=3"], "disc.kind=sn"),
    (["disc=stiefel_fixed", "disc.max_value=2"], "sigma wins"),
    (["disc=stiefel_curve", "disc.sigma=2", "disc.max_value=3"], "disc.max_value=3.0"),
    (["disc=stiefel_curve", "disc.learn=[tau,eps,sigma]", "disc.max_value=2"], "disc.max_value=null to learn"),
    (["disc=stiefel_grid", "disc.max_value=0"], "disc.max_value=0.0"),
    (["disc=wc", "disc.clip_value=0"], "disc.clip_value=0.0"),
    (["disc=gp", "disc.penalty_weight=-10"], "disc.penalty_weight=-10.0"),
    (["disc=stiefel_fixed", "disc.eps=1.5"], "disc.eps=1.5"),
    (["disc=stiefel_curve", "disc.eps=1"], "disc.eps=1.0"),  # flat: for a fixed curve only
    (["optim.second_moment=diagonal"], "optim.second_moment='diagonal'"),
    (["optim.lr_decay=cosine"], "optim.lr_decay='cosine' is not allowed: use one of constant, linear"),
    (["disc=stiefel_fixed", "optim=rsgd", "optim.second_moment=entry"], "optim.name=rsgd"),
]


@pytest.mark.parametrize("overrides,named", BAD_COMMANDS, ids=[b[1] for b in BAD_COMMANDS])
def test_bad_disc_input_stops_before_training_with_one_line(tmp_path, stops_in_one_line, overrides, named):
    stops_in_one_line(["train", f"out_dir={tmp_path / 'runs'}", *TINY_MODELS["standard_cnn"], *overrides], named)
    assert not (tmp_path / "runs").exists(), "nothing is written for a bad config"


def test_a_consistent_max_value_on_a_curve_is_accepted():
    """max_value equal to the curve's sigma says the same thing twice: no conflict."""
    from stiefel_gan.config.checks import check_config

    check_config(compose_config(["disc=stiefel_fixed", "disc.sigma=2", "disc.max_value=2"]))
    check_config(compose_config(["disc=stiefel_curve", "disc.learn=[tau,eps,sigma]", "disc.max_value=null"]))


def test_the_grid_only_max_value_default_never_blocks_a_curve():
    """max_value is a grid's key; at its default it blocks neither a curve's sigma nor a learned sigma."""
    from stiefel_gan.config.checks import check_config

    check_config(compose_config(["disc=stiefel_curve", "disc.sigma=2"]))
    check_config(compose_config(["disc=stiefel_fixed", "disc.sigma=0.9"]))
    check_config(compose_config(["disc=stiefel_curve", "disc.learn=[tau,eps,sigma]"]))


def test_the_optimizers_study_entry_variant_builds_the_per_entry_riemannian_adam():
    from stiefel_gan.manifold import StiefelAdam

    cfg = compose_config(["experiment=optimizers", "variant=entry", *TINY_MODELS["standard_cnn"]])
    _, opt_d = build_gan(cfg, data_shape("digits", 16)).optimizers(cfg.optim)
    assert isinstance(opt_d, StiefelAdam)
    assert {g["name"]: g["second_moment"] for g in opt_d.param_groups}["stiefel"] == "entry"


def test_an_empty_wandb_mode_environment_stops_before_training_with_one_line(tmp_path, stops_in_one_line,
                                                                              monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "")  # wandb itself would stop inside wandb.init with a pydantic traceback
    stops_in_one_line(["train", f"out_dir={tmp_path / 'runs'}", *TINY_MODELS["standard_cnn"], "wandb.mode=auto"],
                      "WANDB_MODE=''")
    assert not (tmp_path / "runs").exists()


def test_a_curve_takes_a_frobenius_target_without_unsetting_the_grid_only_max_value():
    cfg = compose_config(["disc=stiefel_fixed", "disc.normalize=frobenius", "disc.normalize_target=3.5"])
    check_config(cfg)  # the grid-only max_value default (1) does not block it
    assert cfg.disc.max_value == 1.0 and cfg.disc.normalize_target == 3.5


@pytest.mark.parametrize("kind", [k.value for k in DiscKind])
def test_every_disc_kind_is_also_a_disc_preset(kind):
    cfg = compose_config([f"disc={kind}"])
    assert cfg.disc.kind == kind
    check_config(cfg)
