"""train.precision (autocast) and train.compile: the training loop's own D and G steps on CPU, and the
one-line errors for the options a machine cannot run."""

import pytest
import torch
from helpers import TINY_MODELS, tiny_run

from stiefel_gan.config.compose import compose_config
from stiefel_gan.data.datasets import data_shape
from stiefel_gan.gan.builder import build_gan
from stiefel_gan.gan.train import Precision, discriminator_step, generator_step, sample_fake
from stiefel_gan.manifold import stiefel_layers
from stiefel_gan.run.records import read_metrics
from stiefel_gan.run.runner import run

#: five steps of the smallest standard CNN on the digits
TINY_CNN_RUN = tiny_run(5, *TINY_MODELS["standard_cnn"])


@pytest.mark.parametrize("disc", ["stiefel_curve", "stiefel_svd"])
def test_bf16_autocast_steps_stay_on_the_manifold_with_the_exact_spectrum(disc):
    cfg = compose_config([*TINY_MODELS["standard_cnn"], f"disc={disc}", "optim.lr_stiefel=0.05"])
    torch.manual_seed(0)
    gan = build_gan(cfg, data_shape("digits", 16))
    opt_g, opt_d = gan.optimizers(cfg.optim)
    precision = Precision.build("bf16", torch.device("cpu"))
    conv_dtypes = []
    first_conv = next(layer for _, layer in stiefel_layers(gan.discriminator))
    first_conv.register_forward_hook(lambda module, inputs, output: conv_dtypes.append(output.dtype))
    z_generator = torch.Generator().manual_seed(0)
    real = torch.rand(8, 1, 16, 16) * 2 - 1
    # the last factor (svd: V; the fc layer's U is 1 x 1 and cannot move)
    before = {name: layer.parametrization.stiefel_factors()[-1].detach().clone()
              for name, layer in stiefel_layers(gan.discriminator)}
    for _ in range(5):
        fake = sample_fake(gan, 8, z_generator, torch.device("cpu"), precision)
        loss_d, _, _ = discriminator_step(gan, opt_d, real, fake, "hinge", precision, torch.Generator().manual_seed(0))
        loss_g = generator_step(gan, opt_g, gan.generator.sample_z(8, z_generator, "cpu"), "hinge", precision)
        assert loss_d.dtype == loss_g.dtype == torch.float32 and torch.isfinite(loss_d) and torch.isfinite(loss_g)
    assert set(conv_dtypes) == {torch.bfloat16}  # the convolutions ran in bf16
    for name, layer in stiefel_layers(gan.discriminator):
        factors = layer.parametrization.stiefel_factors()
        assert all(f.dtype == torch.float32 for f in factors)
        moved = (factors[-1].detach() - before[name]).abs().max()
        assert moved > 1e-4, f"{name} did not train"
        assert layer.parametrization.drift() < 1e-5
        # the reshaped weight's singular values (float64 SVD of the float32 weight) are lambda
        weight = layer.weight.detach().double().reshape(layer.weight.shape[0], -1)
        expected = torch.sort(layer.singular_values().detach().double().abs(), descending=True).values
        torch.testing.assert_close(torch.linalg.svdvals(weight), expected, rtol=0, atol=1e-5)


def test_compiled_training_gives_the_eager_losses(tmp_path):
    common = tiny_run(5, *TINY_MODELS["mlp"], "disc=stiefel_curve", f"out_dir={tmp_path}")
    eager = run(compose_config([*common, "run_name=eager"]))
    compiled = run(compose_config([*common, "run_name=compiled", "train.compile=true"]))
    rows = {name: [r for r in read_metrics(d) if "loss/d" in r] for name, d in (("eager", eager), ("compiled", compiled))}
    assert [r["step"] for r in rows["compiled"]] == [1, 2, 3, 4, 5]
    # Note [compiled vs eager]: inductor fuses G's forward and backward into other kernels (another
    # float32 summation order), so the losses agree to float32 rounding carried through five updates of
    # a 2-D GAN, not bit for bit: measured up to 3.3e-4 absolute (2.3e-3 relative) on G's loss of
    # about 0.14, 2.4e-7 on D's.
    for a, b in zip(rows["eager"], rows["compiled"]):
        assert a["loss/d"] == pytest.approx(b["loss/d"], abs=1e-4)
        assert a["loss/g"] == pytest.approx(b["loss/g"], rel=5e-3)


BAD = [
    (["optim.second_moment=diagonal"], "optim.second_moment='diagonal'"),
    (["optim=rsgd", "optim.second_moment=entry"], "optim.second_moment='entry'"),
    (["train.precision=fp8"], "train.precision='fp8'"),
    (["train.precision=fp16", "train.device=cpu"], "train.precision=fp16"),
]


@pytest.mark.parametrize("overrides,named", BAD, ids=[b[1] for b in BAD])
def test_bad_precision_and_optimizer_options_stop_with_one_line(tmp_path, stops_in_one_line, overrides, named):
    stops_in_one_line(["train", *TINY_CNN_RUN, f"out_dir={tmp_path / 'runs'}", *overrides], named)
    assert not (tmp_path / "runs").exists()


def test_compile_without_a_compiler_stops_with_one_line(tmp_path, stops_in_one_line, monkeypatch):
    empty = tmp_path / "empty_path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no g++ / c++ / clang++ for inductor
    monkeypatch.delenv("CXX", raising=False)
    stops_in_one_line(["train", *TINY_CNN_RUN, f"out_dir={tmp_path / 'runs'}", "train.compile=true"],
                      "train.compile=true", "C++ compiler")
    assert not (tmp_path / "runs").exists()
