"""Digits classifier, its Fréchet distance and class coverage, on real and degraded digits."""

import math
import os

import pytest
import torch
import torch.nn.functional as F
import torch_fidelity
from torch_fidelity.metric_fid import KEY_METRIC_FID

from stiefel_gan.data.images import load_digits
from helpers import dense_frechet_distance

from stiefel_gan.metrics import (
    DigitsEvaluator,
    load_digits_classifier,
)
from stiefel_gan.metrics.digits import (
    FEATURE_EXTRACTOR,
    DigitsFeatureExtractor,
    digits_classifier_cache_path,
    train_digits_classifier,
)
from stiefel_gan.metrics.fidelity import _UInt8Images


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stiefel_gan_cache")
    previous = os.environ.get("STIEFEL_GAN_CACHE")
    os.environ["STIEFEL_GAN_CACHE"] = str(folder)
    yield folder
    if previous is None:
        del os.environ["STIEFEL_GAN_CACHE"]
    else:
        os.environ["STIEFEL_GAN_CACHE"] = previous


@pytest.fixture(scope="module")
def evaluator(cache_dir):
    return DigitsEvaluator()


@pytest.fixture(scope="module")
def digits():
    return load_digits(8).tensors


@pytest.fixture(scope="module")
def halves(digits):
    images, _ = digits
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    return images[order[: len(images) // 2]], images[order[len(images) // 2 :]]


def test_digits_are_scaled_to_tanh_range(digits):
    images, labels = digits
    assert images.shape == (1797, 1, 8, 8) and images.dtype == torch.float32
    assert images.min() == -1.0 and images.max() == 1.0
    assert torch.equal(torch.bincount(labels) > 170, torch.ones(10, dtype=torch.bool))


def test_classifier_is_accurate_and_cached_atomically(evaluator, cache_dir):
    assert evaluator.held_out_accuracy >= 0.95
    path = digits_classifier_cache_path()
    assert path.parent == cache_dir and path.is_file()
    assert [p.name for p in cache_dir.iterdir()] == [path.name]  # no temporary file left behind
    modified = path.stat().st_mtime_ns
    cached, accuracy = load_digits_classifier()
    assert path.stat().st_mtime_ns == modified and accuracy == evaluator.held_out_accuracy
    for name, tensor in evaluator.classifier.state_dict().items():
        assert torch.equal(tensor, cached.state_dict()[name])


def test_training_is_reproducible(evaluator):
    retrained, accuracy = train_digits_classifier()
    assert accuracy == evaluator.held_out_accuracy
    for name, tensor in evaluator.classifier.state_dict().items():
        assert torch.equal(tensor, retrained.state_dict()[name])


def test_distance_orders_real_blurred_and_shuffled_digits(evaluator, halves):
    first, second = halves
    generator = torch.Generator().manual_seed(1)
    real = evaluator.frechet_distance(first)
    kernel = torch.tensor([1.0, 2.0, 1.0])
    kernel = (kernel[:, None] * kernel[None, :] / 16).view(1, 1, 3, 3)
    blurred = evaluator.frechet_distance(F.conv2d(F.pad(first, (1, 1, 1, 1), mode="replicate"), kernel))
    pixels = first.flatten(1)
    shuffled = torch.stack([row[torch.randperm(64, generator=generator)] for row in pixels]).view_as(first)
    shuffled = evaluator.frechet_distance(shuffled)
    assert real < blurred < shuffled
    assert blurred > 10 * real
    # the two halves against each other are as close as each half to all digits
    between_halves = dense_frechet_distance(evaluator.features(first), evaluator.features(second))
    assert between_halves < blurred / 10


def test_other_sides_are_brought_to_the_classifiers_16_px(evaluator, halves):
    first, _ = halves
    at_16 = F.interpolate(first, size=(16, 16), mode="bilinear", align_corners=False)
    # 8 px digits are upsampled as load_digits(16) does it
    torch.testing.assert_close(evaluator.features(first), evaluator.features(at_16), rtol=0, atol=0)
    # nearest upsampling by 4 then 4x4 block averaging is the identity; grey RGB averages to grey
    enlarged = F.interpolate(at_16, scale_factor=4, mode="nearest").repeat(1, 3, 1, 1)
    torch.testing.assert_close(evaluator.features(enlarged), evaluator.features(at_16))
    assert evaluator.frechet_distance(enlarged) == pytest.approx(evaluator.frechet_distance(at_16), rel=1e-6)


def test_class_coverage_of_real_and_single_class_sets(evaluator, digits):
    images, labels = digits
    balanced = evaluator.class_coverage(images)
    assert balanced["classes_covered"] == 10 and balanced["class_kl"] < 0.01
    for digit in range(10):
        single = evaluator.class_coverage(images[labels == digit])
        assert single["classes_covered"] == 1
        assert single["class_kl"] == pytest.approx(math.log(10), rel=0.05)


def test_bad_images_raise_value_error(evaluator):
    with pytest.raises(ValueError, match="float tensor"):
        evaluator.features(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="C in"):
        evaluator.features(torch.zeros(2, 2, 8, 8))
    with pytest.raises(ValueError, match="square"):
        evaluator.features(torch.zeros(2, 1, 8, 16))
    with pytest.raises(ValueError, match="side >= 8"):
        evaluator.features(torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="min_fraction"):
        evaluator.class_coverage(torch.zeros(2, 1, 8, 8), min_fraction=0.0)


def _as_uint8(images):
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def test_torch_fidelity_fd_with_the_registered_extractor_equals_a_dense_fd(evaluator, halves):
    """torch-fidelity's own pipeline (uint8 in, its extractor call, its statistics and FD) against an
    independent dense FD of the features the same extractor gives the same uint8 images. (Against the
    suite's former hand-written FD: 5e-10 relative; 2e-6 when the extractor returned float32 features.)"""
    first, second = halves
    fake = F.interpolate(first, size=(16, 16), mode="bilinear") + 0.1 * torch.randn(
        len(first), 1, 16, 16, generator=torch.Generator().manual_seed(0))
    real = F.interpolate(second, size=(16, 16), mode="bilinear")
    raw = torch_fidelity.calculate_metrics(
        input1=_UInt8Images(fake), input2=_UInt8Images(real), fid=True, feature_extractor=FEATURE_EXTRACTOR,
        cuda=False, cache=False, save_cpu_ram=True, verbose=False)
    extractor = DigitsFeatureExtractor(FEATURE_EXTRACTOR, ["64"])
    with torch.no_grad():
        (fake_features,), (real_features,) = (extractor(_as_uint8(x).repeat(1, 3, 1, 1)) for x in (fake, real))
    own = dense_frechet_distance(fake_features, real_features)
    assert own > 1.0  # a distance worth comparing
    assert raw[KEY_METRIC_FID] == pytest.approx(own, rel=1e-6)
    # the evaluator's float path (no uint8 round trip) gives the same features up to the uint8 rounding
    assert evaluator.frechet_distance(fake.clamp(-1, 1)) == pytest.approx(
        dense_frechet_distance(evaluator.features(fake.clamp(-1, 1)), evaluator.reference_features), rel=1e-6)


def _checkerboard(amplitude, side=16):
    rows, columns = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    return amplitude * (-1.0) ** (rows + columns).float()


def test_a_2x2_checkerboard_is_visible_at_16_px_and_was_not_at_8(evaluator):
    """The zero-mean checkerboard of transposed-convolution artifacts: a 2x2 average (the old 8 px view)
    removes it exactly; the 16 px classifier sees it."""
    train = load_digits(16, split="train").tensors[0]
    held_out = DigitsEvaluator(reference="held_out")
    clean = held_out.feature_metrics(train[:1000])
    artifacts = held_out.feature_metrics(train[:1000] + _checkerboard(0.3))
    assert F.avg_pool2d(_checkerboard(0.3)[None, None], 2).abs().max() == 0  # invisible at 8 px
    assert artifacts["digits_fd"] > 2 * clean["digits_fd"]  # measured 17.8 vs 7.3 (old 8 px: 2.22 vs 2.22)
    assert artifacts["kid"] > clean["kid"] + 0.01  # measured 0.0153 vs -0.0076 (at the reference's kernel scale)
    assert artifacts["precision"] < clean["precision"] and artifacts["density"] < clean["density"]


def test_feature_metrics_of_real_digits_and_probabilities(evaluator):
    train = load_digits(16, split="train").tensors[0]
    held_out = DigitsEvaluator(reference="held_out")
    real = held_out.feature_metrics(train[:1000])
    # new real digits against the held-out ones: every metric near its ideal
    assert real["precision"] > 0.8 and real["recall"] > 0.8 and real["coverage"] > 0.9
    assert 0.7 < real["density"] < 1.3
    # KID's unbiased estimate about 0 (measured -0.0076; noise of std 0.3 gives 0.018: docs/metrics.md)
    assert abs(real["kid"]) < 0.01
    probabilities = evaluator.probabilities(train[:50])
    assert probabilities.shape == (50, 10)
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(50))
    assert torch.equal(probabilities.argmax(dim=1), evaluator.predict(train[:50]))
