"""What keeps a shape study about shape: D's logit gain (``disc.gain``) and the norms and slope it scales,
the choice of D's Stiefel layers (``disc.layers``), D at step 0, evaluation steps, the long digits budget."""

import math

import pytest
import torch
from helpers import tiny_run
from omegaconf import OmegaConf
from test_diagnostics import TwoConvs, batches

from stiefel_gan.config.checks import check_config, config_mismatch
from stiefel_gan.config.compose import compose_config
from stiefel_gan.config.naming import wandb_group
from stiefel_gan.config.schema import config_dict
from stiefel_gan.data.datasets import data_shape
from stiefel_gan.gan.builder import LogitGain, build_gan
from stiefel_gan.measure.diagnostics import DiscriminatorDiagnostics
from stiefel_gan.run.records import read_metrics, read_series
from stiefel_gan.effective_weights import weighted_layers
from stiefel_gan.manifold import StiefelLayer
from stiefel_gan.run.runner import prepare, run
from stiefel_gan.spectral import reshape_singular_values

TINY = tiny_run(4, "train.checkpoint_every=2", "metrics.n_samples=64", "model.g_width=8", "model.d_width=8")


@pytest.mark.parametrize("disc", ["sn", "stiefel_curve", "fair_sn", "none"])
def test_the_gain_multiplies_the_logit_exactly(disc):
    shape = data_shape("digits")
    x = torch.randn(5, *shape, generator=torch.Generator().manual_seed(0))
    outputs = {}
    for gain in (1.0, 3.5):
        torch.manual_seed(0)  # the same weights for both
        gan = build_gan(compose_config([f"disc={disc}", f"disc.gain={gain}", "model.d_width=8"]), shape)
        gan.discriminator.eval()  # SN reads its weight without a power iteration
        with torch.no_grad():
            outputs[gain] = gan.discriminator(x)
        state = gan.discriminator.state_dict()
    assert torch.equal(outputs[3.5], outputs[1.0] * 3.5)
    assert all("gain" not in key for key in state)  # a hook: the checkpoint's keys are those of the ungained D


def test_the_gain_scales_both_norm_products_and_the_measured_slope():
    gain = 4.0
    results = {}
    for c in (1.0, gain):
        torch.manual_seed(0)
        model = TwoConvs(stiefel=False)
        if c != 1.0:
            model.register_forward_hook(LogitGain(c))
        diagnose = DiscriminatorDiagnostics(model, (2, 10, 12), "hinge", operator_norm_iters=50, logit_gain=c)
        results[c] = diagnose(*batches((2, 10, 12), 3, 3, 0, torch.float64)).scalars
    for key in ("lipschitz/upper_bound", "lipschitz/reshaped_product", "lipschitz/lower_bound"):
        assert results[gain][key] == pytest.approx(gain * results[1.0][key], rel=1e-10), key
    assert results[gain]["operator_norm/conv1"] == results[1.0]["operator_norm/conv1"]  # layers untouched


@pytest.mark.parametrize("gain", ["0", "-1", "inf", "nan"])
def test_a_gain_that_is_not_a_positive_finite_number_is_refused_in_one_line(gain):
    with pytest.raises(ValueError) as refused:
        check_config(compose_config([f"disc.gain={gain}"]))
    message = str(refused.value)
    assert message.startswith(f"disc.gain={float(gain)} is not allowed") and "finite number > 0" in message
    assert "\n" not in message


def test_d_is_diagnosed_at_step_0_and_a_resume_does_not_diagnose_it_again(tmp_path):
    base = [*TINY, "metrics.diagnostics_every=2", "metrics.every=0", f"out_dir={tmp_path}", "name=zero"]
    run_dir = run(compose_config(base))
    rows = [row for row in read_metrics(run_dir) if "lipschitz/upper_bound" in row]
    assert [row["step"] for row in rows] == [0, 2, 4]
    first = rows[0]
    assert first["lipschitz/lower_bound"] <= first["lipschitz/upper_bound"]
    assert first["lipschitz/reshaped_product"] > 0
    assert [row["step"] for row in read_series(run_dir) if row["key"] == "spectrum/normalized"][:1] == [0]
    assert (run_dir / "spectra" / "step_000000.json").is_file()
    resumed = run(compose_config([*base, "train.steps=6", f"resume={run_dir}"]))
    steps = [row["step"] for row in read_metrics(resumed) if "lipschitz/upper_bound" in row]
    assert steps == [0, 2, 4, 6]


def test_quality_is_measured_at_the_listed_steps_and_at_the_end(tmp_path):
    run_dir = run(compose_config([*TINY, "train.steps=5", "metrics.every=0", "metrics.at_steps=[1,3]",
                                  "metrics.diagnostics_every=0", f"out_dir={tmp_path}"]))
    assert [row["step"] for row in read_metrics(run_dir) if "quality/digits_fd" in row] == [1, 3, 5]


def test_listed_evaluation_steps_beyond_the_run_are_refused_in_one_line():
    with pytest.raises(ValueError, match=r"^metrics.at_steps has 900, which is not allowed: use generator steps "
                                         r"in \[1, train.steps=500\]$"):
        check_config(compose_config(["train.steps=500", "metrics.at_steps=[100,900]"]))


@pytest.mark.parametrize("study", ["baselines", "shapes", "shape_gain", "learnable", "optimizers", "tuning",
                                   "saturation"])
def test_the_long_budget_composes_with_every_digits_study(study):
    short = compose_config([f"experiment={study}"])
    long = compose_config([f"experiment={study}", "budget=digits_long"])
    check_config(long)
    assert (long.train.steps, long.metrics.every, long.metrics.diagnostics_every) == (5000, 250, 1000)
    # everything else of the study is as at its own budget
    assert _changed_keys(short, long) == SCHEDULE_KEYS


def test_the_long_stacked_budget_changes_only_the_schedule():
    short = compose_config(["experiment=stacked"])
    long = compose_config(["experiment=stacked", "budget=stacked_digits_long"])
    check_config(long)
    assert (short.train.steps, long.train.steps, long.metrics.every) == (2000, 15000, 1000)
    assert long.data.name == "stacked_digits" and long.metrics.n_mode_samples == short.metrics.n_mode_samples
    assert _changed_keys(short, long) == SCHEDULE_KEYS


#: what a long budget may change of a study: its schedule, nothing of what the runs train or measure
SCHEDULE_KEYS = {"train.steps", "train.sample_every", "train.checkpoint_every", "metrics.every",
                 "metrics.diagnostics_every"}


def _changed_keys(short, long) -> set[str]:
    return {k for k, v in _flat(long).items() if _flat(short).get(k) != v}


def _flat(cfg) -> dict:
    from stiefel_gan.config.schema import flatten

    return flatten(config_dict(cfg))


def test_a_checkpoint_written_before_a_key_existed_still_resumes_and_keeps_its_group():
    """A key added to the schema (disc.gain, metrics.at_steps) at its default changes neither what a
    checkpoint resumes with nor the W&B group of a run outside a study."""
    cfg = compose_config(["disc=stiefel_curve", "disc.tau=0.5"])
    saved = config_dict(cfg)
    del saved["disc"]["gain"], saved["metrics"]["at_steps"]
    assert config_mismatch({"config": saved}, cfg) is None
    assert config_mismatch({"config": saved}, compose_config(["disc=stiefel_curve", "disc.tau=0.5",
                                                              "disc.gain=2"])) == "disc.gain=1.0, not 2.0"
    assert wandb_group(cfg) != wandb_group(compose_config(["disc=stiefel_curve", "disc.tau=0.5", "disc.gain=2"]))
    # the digest is over the keys that differ from the defaults: dropping a default key changes nothing
    rebuilt = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(type(cfg)), OmegaConf.create(saved)))
    assert wandb_group(rebuilt) == wandb_group(cfg)
    assert math.isfinite(rebuilt.disc.gain)


# ------------------------------------------------------------------------------ D's Stiefel layers

MIXTURE_D = ["data=ring8", "model=mlp", "disc=stiefel_fixed", "disc.tau=0.5", "disc.eps=0.1"]


def _discriminator(*overrides):
    cfg = compose_config([*MIXTURE_D, *overrides])
    torch.manual_seed(0)
    gan = build_gan(cfg, data_shape(cfg.data.name))
    gan.eval()
    return {name: layer for name, layer in weighted_layers(gan.discriminator).items()}


def _values(layer):
    with torch.no_grad():
        return reshape_singular_values(layer.weight)


def test_excluded_layers_are_flat_by_default_and_the_others_take_the_curve():
    layers = _discriminator("disc.layers.exclude=[layers.0]")
    assert all(isinstance(layer, StiefelLayer) for layer in layers.values())
    assert torch.allclose(_values(layers["layers.0"]), torch.ones(2), atol=1e-6)  # k = 2, both at sigma
    curve = _values(layers["layers.2"])
    assert curve[0] == pytest.approx(1, abs=1e-6) and curve[-1] == pytest.approx(0.1, abs=1e-6)


@pytest.mark.parametrize("others", ["sn", "none"])
def test_the_layers_left_out_get_the_stated_treatment(others):
    layers = _discriminator("disc.layers.include=[layers.2,layers.4]", f"disc.layers.others={others}")
    assert {name for name, layer in layers.items() if isinstance(layer, StiefelLayer)} == {"layers.2", "layers.4"}
    plain = _discriminator("disc=none")  # the same initialization, unconstrained
    for name in ("layers.0", "layers.6"):
        if others == "sn":
            assert _values(layers[name])[0] == pytest.approx(1, rel=0.1)  # one power iteration from a random u
            assert torch.nn.utils.parametrize.is_parametrized(layers[name])
        else:
            assert torch.equal(layers[name].weight, plain[name].weight)


def test_a_layer_pattern_that_matches_no_layer_is_one_line_before_anything_is_written(tmp_path):
    cfg = compose_config([*MIXTURE_D, "disc.layers.exclude=[net.0]", f"out_dir={tmp_path}"])
    with pytest.raises(ValueError) as refused:
        prepare(cfg)
    assert str(refused.value).startswith("disc.layers.exclude pattern 'net.0' is not allowed: it matches no D layer")
    assert "'layers.0'" in str(refused.value) and "\n" not in str(refused.value)
    assert not any(tmp_path.iterdir())


def test_layers_whose_spectrum_has_no_shape_are_named_in_one_line(tmp_path, capsys):
    prepare(compose_config([*MIXTURE_D, f"out_dir={tmp_path}"]))
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "k <= 2" in line]
    assert ": layers.0 (k=2), layers.6 (k=1);" in line
    prepare(compose_config([*MIXTURE_D, "disc.layers.exclude=[layers.0]", f"out_dir={tmp_path}"]))
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "k <= 2" in line]
    assert ": layers.6 (k=1);" in line
    prepare(compose_config([*MIXTURE_D, "disc=sn", f"out_dir={tmp_path}"]))
    assert "k <= 2" not in capsys.readouterr().err


def test_a_flat_fixed_spectrum_is_allowed_and_a_flat_learned_curve_is_not():
    check_config(compose_config(["disc=stiefel_fixed", "disc.eps=1"]))
    with pytest.raises(ValueError, match=r"^disc.eps=1.0 is not allowed: .* lie in \(0, 1\) for disc.spectrum=curve$"):
        check_config(compose_config(["disc=stiefel_curve", "disc.eps=1"]))


def test_a_flat_fixed_curve_gives_every_value_sigma():
    from stiefel_gan.manifold import FixedCurve

    values = FixedCurve(tau=3.0, eps=1.0, sigma=2.5).build(6)()
    assert torch.equal(values, torch.full((6,), 2.5))
