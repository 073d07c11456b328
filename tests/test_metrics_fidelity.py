"""IS / FID / KID through torch-fidelity's own code path, with a tiny registered feature extractor."""

import dataclasses
import logging
import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torch_fidelity
from torch import nn
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from stiefel_gan.data.images import load_digits
from stiefel_gan.metrics import (
    FidelityProtocol,
    compute_fidelity,
    fidelity,
)
from stiefel_gan.metrics.fidelity import PROTOCOLS
from helpers import dense_frechet_distance

TINY = "stiefel-gan-test-tiny"
PROTOCOL = FidelityProtocol("test", n_fake=200, n_real=200, is_splits=4, kid_subsets=10, kid_subset_size=100,
                            real_split="train")


class TinyExtractor(torch_fidelity.FeatureExtractorBase):
    """A fixed random conv net: uint8 RGB -> 64-d features ("64") and 10 logits ("logits")."""

    def __init__(self, name, features_list, **kwargs):
        super().__init__(name, features_list)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.body = nn.Sequential(
                nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(16, 64, 3, stride=2, padding=1), nn.Tanh(),
                nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            )
            self.head = nn.Linear(64, 10)
        self.requires_grad_(False)

    @staticmethod
    def get_provided_features_list():
        return "64", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits", "fid": "64", "kid": "64", "prc": "64"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 16, 16, dtype=torch.uint8)

    def forward(self, x):
        assert x.dtype == torch.uint8 and x.shape[1] == 3
        # the scales give features of unit-order spread and confident logits, as in Inception
        features = 8 * self.body(F.interpolate(x.float() / 127.5 - 1, size=(16, 16), mode="bilinear"))
        available = {"64": features, "logits": 60 * self.head(features)}
        return tuple(available[name] for name in self.features_list)


if TINY not in FEATURE_EXTRACTORS_REGISTRY:
    torch_fidelity.register_feature_extractor(TINY, TinyExtractor)


@pytest.fixture(scope="module")
def images():
    # 1-channel 16x16 digits in [-1, 1]: exercises grey -> RGB and float -> uint8
    digits, _ = load_digits(8).tensors
    return F.interpolate(digits[:200], size=(16, 16), mode="bilinear").clamp(-1, 1)


def _noisy(images, std, seed=0):
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    return (images + std * noise).clamp(-1, 1)


def _as_uint8_rgb(images):
    return ((images + 1) * 127.5).round().to(torch.uint8).repeat(1, 3, 1, 1)


def test_self_distance_is_zero_and_protocol_is_recorded(images):
    metrics = compute_fidelity(images, images, PROTOCOL, feature_extractor=TINY)
    assert abs(metrics["fid"]) < 1e-6
    assert metrics["isc_mean"] > 1.0 and metrics["isc_std"] >= 0.0
    assert {k: metrics[k] for k in ("protocol", "n_fake", "n_real", "is_splits", "kid_subsets", "kid_subset_size",
                                     "real_split", "n_is", "feature_extractor")} == {
        "protocol": "test", "n_fake": 200, "n_real": 200, "is_splits": 4, "kid_subsets": 10,
        "kid_subset_size": 100, "real_split": "train", "n_is": 200, "feature_extractor": TINY}


def test_fid_and_kid_grow_with_noise(images):
    results = [compute_fidelity(_noisy(images, std), images, PROTOCOL, feature_extractor=TINY)
               for std in (0.0, 0.1, 0.3, 0.6)]
    fids = [r["fid"] for r in results]
    kids = [r["kid_mean"] for r in results]
    assert abs(fids[0]) < 1e-6
    assert 1e-3 < fids[1] < fids[2] < fids[3]
    assert kids[1] < kids[2] < kids[3]
    # KID of a set against itself is 0 up to the spread of its subset estimates
    assert abs(kids[0]) < 3 * results[0]["kid_std"] + 1e-6 and abs(kids[0]) < kids[3] / 20


def test_numbers_match_direct_computation_on_the_same_uint8_images(images):
    # one IS split removes torch-fidelity's shuffle from the IS: exp(E_x KL(p(y|x) || p(y)))
    one_split = FidelityProtocol("one-split", n_fake=200, n_real=200, is_splits=1, kid_subsets=2,
                                 kid_subset_size=100, real_split="test")
    fake, real = _noisy(images, 0.2), images
    metrics = compute_fidelity(fake, real, one_split, feature_extractor=TINY)
    extractor = TinyExtractor(TINY, ["64", "logits"])
    with torch.no_grad():
        fake_features, fake_logits = extractor(_as_uint8_rgb(fake))
        real_features, _ = extractor(_as_uint8_rgb(real))
    log_p = fake_logits.double().log_softmax(dim=1)
    log_marginal = log_p.exp().mean(dim=0).log()
    expected_is = math.exp(float((log_p.exp() * (log_p - log_marginal)).sum(dim=1).mean()))
    assert metrics["isc_mean"] == pytest.approx(expected_is, rel=1e-6)
    assert metrics["isc_std"] == 0.0
    expected_fid = dense_frechet_distance(fake_features, real_features)
    assert metrics["fid"] == pytest.approx(expected_fid, rel=1e-4, abs=1e-6)
    # uint8 input is used as is
    assert compute_fidelity(_as_uint8_rgb(fake), _as_uint8_rgb(real), one_split, feature_extractor=TINY) == metrics


def test_extra_images_are_subsampled_with_a_fixed_seed(images):
    doubled = torch.cat([images, _noisy(images, 0.5)])
    first = compute_fidelity(doubled, images, PROTOCOL, feature_extractor=TINY)
    assert compute_fidelity(doubled, images, PROTOCOL, feature_extractor=TINY) == first
    # a mix of clean and noisy images: between the clean set and the fully noisy one
    clean = compute_fidelity(images, images, PROTOCOL, feature_extractor=TINY)["fid"]
    noisy = compute_fidelity(_noisy(images, 0.5), images, PROTOCOL, feature_extractor=TINY)["fid"]
    assert clean < first["fid"] < noisy


def test_offline_inception_returns_empty_with_one_warning(images, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached Inception weights
    if fidelity._why_inception_weights_unavailable() is None:
        pytest.skip("the Inception weights' host is reachable: the offline path cannot be exercised")
    caplog.set_level(logging.WARNING, logger="stiefel_gan.metrics.fidelity")
    start = time.monotonic()
    assert compute_fidelity(images, images, PROTOCOL) == {}
    assert time.monotonic() - start < fidelity.CONNECT_TIMEOUT_S + 2
    records = [r for r in caplog.records if r.name == "stiefel_gan.metrics.fidelity"]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    message = records[0].getMessage()
    assert "metrics.inception_weights=<path>" in message and "\n" not in message


def _inception_score(logits, splits, seed=2020):
    """IS as the mean over ``splits`` equal splits of exp(E_x KL(p(y|x) || p(y))), p(y) per split, after
    torch-fidelity's documented shuffle (numpy RandomState(rng_seed=2020).permutation)."""
    log_p = logits.double().log_softmax(dim=1)[np.random.RandomState(seed).permutation(len(logits))]
    scores = []
    for chunk in log_p.chunk(splits):
        log_marginal = chunk.exp().mean(dim=0).log()
        scores.append(math.exp(float((chunk.exp() * (chunk - log_marginal)).sum(dim=1).mean())))
    return float(np.mean(scores))


class LinearExtractor(TinyExtractor):
    """A fixed random linear map of 3 x 4 x 4 uint8 images to 16 features and 10 logits: cheap enough for
    the 50,000 images of the ``miyato`` IS."""

    def __init__(self, name, features_list, **kwargs):
        torch_fidelity.FeatureExtractorBase.__init__(self, name, features_list)
        generator = torch.Generator().manual_seed(0)
        self.register_buffer("to_features", torch.randn(48, 16, generator=generator) / 48 ** 0.5)
        self.register_buffer("to_logits", torch.randn(16, 10, generator=generator))

    @staticmethod
    def get_provided_features_list():
        return "16", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits", "fid": "16", "kid": "16", "prc": "16"}[metric]

    def forward(self, x):
        features = (x.float().flatten(1) / 127.5 - 1) @ self.to_features
        available = {"16": features, "logits": 3 * features @ self.to_logits}
        return tuple(available[name] for name in self.features_list)


LINEAR = "stiefel-gan-test-linear"
if LINEAR not in FEATURE_EXTRACTORS_REGISTRY:
    torch_fidelity.register_feature_extractor(LINEAR, LinearExtractor)


def test_miyato_is_uses_50000_images_in_splits_of_5000_and_fid_5000_of_them():
    miyato = PROTOCOLS["miyato"]
    assert (miyato.n_is, miyato.is_splits, miyato.n_fake, miyato.n_real) == (50000, 10, 5000, 10000)
    generator = torch.Generator().manual_seed(0)
    fake = torch.randint(0, 256, (50000, 3, 4, 4), dtype=torch.uint8, generator=generator)
    real = torch.randint(64, 192, (10000, 3, 4, 4), dtype=torch.uint8, generator=generator)
    # KID's 100 subsets of 1000 cost seconds and are not what is tested: 2 subsets
    protocol = dataclasses.replace(miyato, kid_subsets=2)
    metrics = compute_fidelity(fake, real, protocol, feature_extractor=LINEAR, batch_size=5000)
    extractor = LinearExtractor(LINEAR, ["16", "logits"])
    _, logits = extractor(fake)
    fid_features, _ = extractor(fidelity._random_subset(fake, 5000))
    real_features, _ = extractor(real)
    expected = _inception_score(logits, splits=10)
    assert metrics["isc_mean"] == pytest.approx(expected, rel=1e-6)
    # the split size matters here: 10 splits of 500 (the old protocol) give a different number
    assert abs(_inception_score(logits[:5000], splits=10) - expected) > 5e-3 * expected
    expected_fid = dense_frechet_distance(fid_features, real_features)
    assert metrics["fid"] == pytest.approx(expected_fid, rel=1e-4)
    assert (metrics["n_is"], metrics["n_fake"], metrics["n_real"]) == (50000, 5000, 10000)
    with pytest.raises(ValueError, match="at least 50000"):
        compute_fidelity(fake[:49999], real, protocol, feature_extractor=LINEAR)


def test_protocols_follow_their_papers():
    miyato = PROTOCOLS["miyato"]
    assert (miyato.n_fake, miyato.n_real, miyato.is_splits, miyato.real_split) == (5000, 10000, 10, "train")
    assert miyato.n_is // miyato.is_splits == 5000
    for protocol in PROTOCOLS.values():
        assert protocol.kid_subset_size <= min(protocol.n_fake, protocol.n_real)


def test_bad_inputs_raise_value_error(images, tmp_path):
    with pytest.raises(ValueError, match="protocol"):
        compute_fidelity(images, images, "cifar-paper", feature_extractor=TINY)
    with pytest.raises(ValueError, match="not registered"):
        compute_fidelity(images, images, PROTOCOL, feature_extractor="no-such-net")
    with pytest.raises(ValueError, match="weights_path"):
        compute_fidelity(images, images, PROTOCOL, weights_path=tmp_path / "missing.pth")
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        compute_fidelity(images * 2, images, PROTOCOL, feature_extractor=TINY)
    with pytest.raises(ValueError, match="at least 200"):
        compute_fidelity(images[:100], images, PROTOCOL, feature_extractor=TINY)
    with pytest.raises(ValueError, match="C in"):
        compute_fidelity(images.repeat(1, 2, 1, 1), images, PROTOCOL, feature_extractor=TINY)
    with pytest.raises(ValueError, match="device"):
        compute_fidelity(images, images, PROTOCOL, feature_extractor=TINY, device="mps")
    with pytest.raises(ValueError, match="kid_subset_size"):
        FidelityProtocol("bad", n_fake=50, n_real=500, is_splits=5, kid_subsets=5, kid_subset_size=100,
                         real_split="train")
    with pytest.raises(ValueError, match="n_fake"):
        FidelityProtocol("bad", n_fake=0, n_real=500, is_splits=5, kid_subsets=5, kid_subset_size=100,
                         real_split="train")
