"""Sample quality's protocol choices: the real reference subset and the Geometry Score's gamma per dataset."""

import numpy as np
import pytest
import torch

from stiefel_gan.config.compose import compose_config
from stiefel_gan.data.datasets import build_dataset
from stiefel_gan.gan.builder import build_gan
from stiefel_gan.measure.quality import MIXTURE_GS_GAMMA, SampleQuality, geometry_gamma, real_subset
from stiefel_gan.metrics import relative_living_times
from stiefel_gan.metrics.geometry import GAMMA_PER_5000_POINTS


def test_real_subset_is_a_seeded_draw_without_replacement_not_the_first_samples():
    digits = build_dataset("digits", image_size=16)
    images = digits.tensors[0]
    subset = real_subset(digits, 500)
    assert subset.shape == (500, *images.shape[1:])
    assert torch.equal(subset, real_subset(digits, 500))  # the same reference for every run
    # each drawn image is a distinct dataset image, and they are not the first 500
    index_of = {image.numpy().tobytes(): i for i, image in enumerate(images)}
    drawn = [index_of.get(image.numpy().tobytes()) for image in subset]
    assert None not in drawn and len(set(drawn)) == 500
    assert max(drawn) >= 500 and not torch.equal(subset, images[:500])
    assert not torch.equal(subset, real_subset(digits, 500, seed=1))
    assert len(real_subset(digits, 10 ** 6)) == len(images)


def test_geometry_gamma_is_set_per_dataset_and_a_configured_value_wins():
    assert geometry_gamma("ring8", 400) == geometry_gamma("grid25", 2000) == MIXTURE_GS_GAMMA == 1 / 8
    assert geometry_gamma("cifar10", 5000) == pytest.approx(1 / 128)
    assert geometry_gamma("digits", 1000) == pytest.approx(GAMMA_PER_5000_POINTS * 1000 / 5000)
    assert geometry_gamma("ring8", 400, configured=0.3) == 0.3


def test_mixture_geometry_score_uses_gamma_one_eighth_and_logs_it_next_to_the_score(tmp_path):
    cfg = compose_config(["data=ring8", "model=mlp", "model.z_dim=4", "model.g_width=8", "model.d_width=8",
                          "metrics.n_samples=200", "metrics.gs_n=3", "metrics.gs_landmarks=16"])
    dataset = build_dataset("ring8", n_samples=200, seed=0)
    torch.manual_seed(0)
    gan = build_gan(cfg, (2,))
    quality = SampleQuality(cfg, dataset, torch.device("cpu"), tmp_path)
    scores = quality(gan.generator, final=True).scores
    assert scores["quality/geometry_gamma"] == 1 / 8
    fake = quality.samples(gan.generator, 200).numpy().astype(np.float64)
    real = real_subset(dataset, 200).numpy().astype(np.float64)
    options = {"L_0": 16, "gamma": 1 / 8, "i_max": 100, "n": 3, "seed": 0}
    expected = float(np.sum((relative_living_times(real, **options) - relative_living_times(fake, **options)) ** 2))
    assert scores["quality/geometry_score"] == pytest.approx(expected)
    assert (tmp_path / "geometry_rlt.png").is_file()
