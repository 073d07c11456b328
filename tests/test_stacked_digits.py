"""The stacked digits (three digits as the channels of one image, 1,000 modes) and their mode metrics:
the data is made of training digits only, real stacked images cover nearly every mode, repeated images
cover exactly their own, NaN images are unavailable, a run logs the keys and a bad sample count stops."""

import math

import numpy as np
import pytest
import torch
from helpers import raises_one_line, tiny_run
from scipy.stats import entropy

from stiefel_gan.config.checks import check_config
from stiefel_gan.config.compose import compose_config
from stiefel_gan.data.datasets import build_dataset, data_shape
from stiefel_gan.data.images import STACKED_DIGITS_PER_DIGIT, load_digits, load_stacked_digits
from stiefel_gan.measure.table import BY_KEY, HEADLINE
from stiefel_gan.metrics import DigitsEvaluator, MetricUnavailable
from stiefel_gan.metrics.digits import CONFIDENT_PROBABILITY
from stiefel_gan.metrics.stacked import MIN_MODE_SAMPLES, stacked_mode_metrics
from stiefel_gan.metrics.toy import kl_from_uniform
from stiefel_gan.run.records import read_metrics
from stiefel_gan.run.runner import objective, run

MODE_KEYS = {"quality/modes_covered", "quality/mode_kl", "quality/confident_fraction", "quality/n_modes"}


@pytest.fixture(scope="module")
def evaluator():
    return DigitsEvaluator()


@pytest.fixture(scope="module")
def stacked_train():
    return load_stacked_digits(16, split="train")


def _digit_table(split: str) -> dict[bytes, int]:
    """Each digit of ``split`` at 16 px, by its pixels' bytes, with its label."""
    images, labels = load_digits(16, split=split).tensors
    return {image.numpy().tobytes(): int(label) for image, label in zip(images, labels)}


def test_stacked_digits_are_three_training_digits_and_their_label_is_the_triple(stacked_train):
    images, modes = stacked_train.tensors
    assert images.shape == (STACKED_DIGITS_PER_DIGIT * 1347, 3, 16, 16) == (13470, *data_shape("stacked_digits"))
    assert images.min() >= -1 and images.max() <= 1
    train, held_out = _digit_table("train"), _digit_table("held_out")
    only_held_out = set(held_out) - set(train)
    assert len(only_held_out) > 400  # the check below could fail: nearly every held-out digit is unlike all training ones
    channel_labels = np.empty((len(images), 3), dtype=np.int64)
    for i, image in enumerate(images):
        for c in range(3):
            pixels = image[c : c + 1].numpy().tobytes()
            assert pixels not in only_held_out
            channel_labels[i, c] = train[pixels]  # a KeyError if a channel were no training digit
    np.testing.assert_array_equal(modes.numpy(), channel_labels @ np.array([100, 10, 1]))
    # the channels are drawn independently: every mode occurs, and no channel pair is more alike than chance
    assert len(np.unique(modes.numpy())) == 1000
    assert abs(np.corrcoef(channel_labels[:, 0], channel_labels[:, 1])[0, 1]) < 0.05


def test_the_stacked_set_is_fixed_and_does_not_move_the_global_rng(stacked_train):
    torch.manual_seed(7)
    before = torch.rand(1)
    torch.manual_seed(7)
    again = build_dataset("stacked_digits", split="train")
    assert torch.equal(torch.rand(1), before)
    assert all(torch.equal(a, b) for a, b in zip(again.tensors, stacked_train.tensors))
    every = build_dataset("stacked_digits", split="all", n_samples=100)
    assert len(build_dataset("stacked_digits", split="all")) == 17970 and every.tensors[0].shape == (100, 3, 16, 16)
    raises_one_line(lambda: load_stacked_digits(16, split="held_out"), "split='held_out'", "train or all")
    raises_one_line(lambda: build_dataset("stacked_digits", image_size=4), "image_size=4", "stacked_digits", ">= 8")


def test_real_stacked_digits_cover_nearly_all_modes_with_a_kl_near_zero(stacked_train, evaluator):
    # 10,000 real images: with N ~ 7,400 confident ones (0.74 measured: each channel confident ~ 0.9), a
    # uniform histogram leaves 1000 e^(-N/1000) ~ 0.6 modes empty and has KL ~ (M - 1) / (2 N) ~ 0.07 from
    # multinomial noise alone; the classes' unequal confidence adds a little (measured: 996 modes, KL 0.084)
    measured = stacked_mode_metrics(stacked_train.tensors[0][:10000], evaluator)
    assert measured["n_modes"] == 1000
    assert measured["modes_covered"] >= 985
    assert measured["mode_kl"] < 0.15
    assert 0.6 < measured["confident_fraction"] <= 1
    # the same samples' true modes (no classifier): the KL the classifier's histogram is close to
    true_counts = np.bincount(stacked_train.tensors[1][:10000].numpy(), minlength=1000)
    assert abs(measured["mode_kl"] - kl_from_uniform(true_counts)) < 0.1


def test_ten_images_repeated_cover_exactly_ten_modes(stacked_train, evaluator):
    images, modes = stacked_train.tensors
    probabilities = evaluator.probabilities(images[:2000].reshape(6000, 1, 16, 16)).reshape(2000, 3, 10)
    confident = (probabilities.max(dim=2).values >= CONFIDENT_PROBABILITY).all(dim=1)
    chosen, seen = [], set()
    for i in torch.nonzero(confident).flatten().tolist():
        if int(modes[i]) not in seen:
            seen.add(int(modes[i]))
            chosen.append(i)
        if len(chosen) == 10:
            break
    repeated = images[chosen].repeat(1000, 1, 1, 1)  # 10,000 samples, 1,000 of each
    measured = stacked_mode_metrics(repeated, evaluator)
    assert measured["modes_covered"] == 10 and measured["confident_fraction"] == 1.0
    assert measured["mode_kl"] == pytest.approx(math.log(100), abs=1e-9)  # uniform over 10 of 1,000 modes


def test_the_mode_kl_matches_scipy_and_is_nan_without_a_sample():
    counts = np.random.default_rng(0).integers(0, 5, size=1000)
    assert kl_from_uniform(counts) == pytest.approx(entropy(counts, np.ones(1000)), rel=1e-12)
    assert kl_from_uniform([0, 0, 7]) == pytest.approx(math.log(3))
    assert math.isnan(kl_from_uniform(np.zeros(1000)))


def test_nan_images_are_unavailable_and_wrong_shapes_are_refused(stacked_train, evaluator):
    images = stacked_train.tensors[0][:20].clone()
    images[3, 1, 2, 2] = float("nan")
    with pytest.raises(MetricUnavailable) as raised:
        stacked_mode_metrics(images, evaluator)
    assert raised.value.reason == "nonfinite"
    raises_one_line(lambda: stacked_mode_metrics(images[:, :1], evaluator), "(20, 1, 16, 16)", "(N, 3, H, W)")


def test_a_sample_count_below_ten_thousand_stops_in_one_line():
    cfg = compose_config(["experiment=stacked", "metrics.n_mode_samples=5000"])
    raises_one_line(lambda: check_config(cfg), "metrics.n_mode_samples=5000", f">= {MIN_MODE_SAMPLES}")


def test_a_tiny_run_on_stacked_digits_logs_the_mode_metrics(tmp_path):
    cfg = compose_config(tiny_run(2, "data=stacked_digits", "data.split=train", "model.z_dim=16", "model.g_width=8",
                                  "model.d_width=8", f"out_dir={tmp_path / 'runs'}", "name=stacked_tiny"))
    run_dir = run(cfg)
    rows = [row for row in read_metrics(run_dir) if "quality/mode_kl" in row]
    assert len(rows) == 1
    logged = {key for key in rows[0] if key.startswith("quality/")}
    assert MODE_KEYS <= logged and all("stacked_digits" in BY_KEY[key].datasets for key in logged)
    row = rows[0]
    assert row["quality/n_modes"] == 1000 and 0 <= row["quality/modes_covered"] <= 1000
    assert 0 <= row["quality/confident_fraction"] <= 1
    # two steps of an 8-wide G: mostly blobs, so few or no confident samples (then the KL is NaN)
    kl = row["quality/mode_kl"]
    assert (row["quality/modes_covered"] == 0) == (kl != kl)
    assert HEADLINE["stacked_digits"] == "quality/modes_covered"  # defined even when no sample is confident
    assert objective(run_dir, cfg) == row["quality/modes_covered"]
