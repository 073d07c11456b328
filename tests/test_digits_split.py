"""The digits metrics against data no network of the run has seen: the fixed split, the held-out
reference, confident class coverage and the memorization ratio."""

import numpy as np
import pytest
import torch

from stiefel_gan.config.checks import check_config
from stiefel_gan.config.compose import compose_config
from stiefel_gan.data.datasets import build_dataset
from stiefel_gan.data.images import digits_split, load_digits
from stiefel_gan.metrics.digits import DigitsEvaluator, train_digits_classifier
from stiefel_gan.metrics.features import feature_statistics


@pytest.fixture(scope="module")
def held_out_evaluator():
    return DigitsEvaluator(reference="held_out", image_size=16)


def test_the_split_is_disjoint_stratified_and_covers_every_digit():
    train, held_out = digits_split()
    assert (len(train), len(held_out)) == (1347, 450)
    assert not set(train) & set(held_out) and set(train) | set(held_out) == set(range(1797))
    labels = load_digits(8).tensors[1].numpy()
    for part in (train, held_out):  # each class keeps its share (stratified), to within one image
        shares = np.bincount(labels[part], minlength=10) / len(part)
        np.testing.assert_allclose(shares, np.bincount(labels, minlength=10) / 1797, atol=1.5 / len(part))


def test_the_gan_with_data_split_train_never_sees_a_held_out_digit():
    images = load_digits(16).tensors[0]
    train, held_out = digits_split()
    dataset = build_dataset("digits", image_size=16, split="train")
    assert torch.equal(dataset.tensors[0], images[train])
    assert len(dataset) == 1347
    held_out_rows = {row.numpy().tobytes() for row in images[held_out]}
    duplicates_in_train = {row.numpy().tobytes() for row in images[train]} & held_out_rows
    assert len(duplicates_in_train) <= 1  # sklearn's digits repeat at most one image across the split


def test_the_classifier_trains_on_the_training_part_alone(monkeypatch):
    """Poison every held-out image: the trained classifier must come out exactly the same."""
    import stiefel_gan.metrics.digits as digits_module

    real_load = digits_module.load_digits

    def poisoned(image_size, split="all"):
        dataset = real_load(image_size, split)
        if split == "all":
            images, labels = (t.clone() for t in dataset.tensors)
            images[digits_split()[1]] = 1.0  # white squares
            return torch.utils.data.TensorDataset(images, labels)
        return dataset

    clean, _ = train_digits_classifier()
    monkeypatch.setattr(digits_module, "load_digits", poisoned)
    trained_on_poisoned, accuracy = train_digits_classifier()
    for a, b in zip(clean.state_dict().values(), trained_on_poisoned.state_dict().values()):
        assert torch.equal(a, b)
    assert accuracy < 0.2  # ...and it is scored on the (poisoned) held-out part


def test_the_held_out_reference_is_the_statistics_of_the_held_out_digits(held_out_evaluator):
    held_out = load_digits(16, split="held_out").tensors[0]
    mu, cov = feature_statistics(held_out_evaluator.features(held_out))
    np.testing.assert_array_equal(held_out_evaluator.reference_mu, mu)
    np.testing.assert_array_equal(held_out_evaluator.reference_cov, cov)
    # zero up to the round-off of square roots of the covariance's near-zero eigenvalues
    assert abs(held_out_evaluator.frechet_distance(held_out)) <= 1e-6 * np.trace(cov)


def test_confident_coverage_never_exceeds_argmax_coverage(held_out_evaluator):
    held_out = load_digits(16, split="held_out").tensors[0]
    real = held_out_evaluator.class_coverage(held_out)
    assert real["classes_covered"] == real["classes_covered_confident"] == 10
    noise = torch.rand(500, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    blobs = held_out_evaluator.class_coverage(noise)
    assert blobs["classes_covered_confident"] <= blobs["classes_covered"]
    smooth = torch.nn.functional.avg_pool2d(noise, 5, stride=1, padding=2)  # grey blobs, no digit
    blurred = held_out_evaluator.class_coverage(smooth)
    assert blurred["classes_covered_confident"] < blurred["classes_covered"]


def test_the_memorization_ratio_is_0_for_copies_and_1_for_new_real_digits(held_out_evaluator):
    train = load_digits(16, split="train").tensors[0]
    held_out = load_digits(16, split="held_out").tensors[0]
    assert held_out_evaluator.memorization_ratio(train[:500]) == 0
    assert held_out_evaluator.memorization_ratio(held_out) == pytest.approx(1, rel=1e-6)
    noisy = (train[:500] + 0.5 * torch.randn(500, 1, 16, 16, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    assert held_out_evaluator.memorization_ratio(noisy) > 0.5


@pytest.mark.parametrize("data", [[], ["data=ring8", "model=mlp"]])
def test_a_split_that_is_not_train_or_all_is_refused_in_one_line(data):
    with pytest.raises(ValueError, match=r"^data.split='test' is not allowed: use train or all$"):
        check_config(compose_config([*data, "data.split=test"]))
    check_config(compose_config([*data, "data.split=train"]))  # a digits study moved to another dataset


def test_every_digits_study_trains_on_the_training_split():
    for study in ("baselines", "shapes", "shape_gain", "learnable", "optimizers", "tuning", "saturation"):
        assert compose_config([f"experiment={study}"]).data.split == "train"
    assert compose_config([]).data.split == "all"  # a plain run keeps every digit
