"""Runs that fail well: a collapsed or diverged generator's final evaluation is bounded in time and says
why a metric is missing."""

import math
import time

import pytest
import torch
from test_architecture import TINY_RUN, _cifar_overrides
from torch import nn
from wandb_records import read_offline_run

from stiefel_gan.config.compose import compose_config
from stiefel_gan.data.datasets import build_dataset, data_shape
from stiefel_gan.measure.quality import SampleQuality, real_subset
from stiefel_gan.measure.table import BY_KEY, compared_keys
from stiefel_gan.run.records import read_metric_status, read_metrics
from stiefel_gan.run.runner import run

#: Wall-clock bound on one final evaluation of a collapsed generator on a 2-core machine (the real
#: samples' Geometry Score, which does not depend on the generator, is most of it).
COLLAPSED_EVALUATION_SECONDS = 60

DATASET_OVERRIDES = {"digits": ["experiment=compare"], "ring8": ["data=ring8", "model=mlp", "data.n_samples=512"],
                     "grid25": ["data=grid25", "model=mlp", "data.n_samples=512"]}
#: The final evaluation at its default sample count and landmarks, with fewer landmark draws: the cost a
#: collapsed generator could blow up is per draw (the witness complex's size), not the number of draws.
EVALUATION = ["metrics.geometry_score=true", "metrics.gs_n=20"]


class CollapsedGenerator(nn.Module):
    """Every sample is ``sample``: a generator that has collapsed to one output (or to NaN)."""

    def __init__(self, sample: torch.Tensor):
        super().__init__()
        self.register_buffer("sample", sample)

    def sample_z(self, n, generator, device):
        return torch.randn(n, 4, generator=generator).to(device)

    def forward(self, z):
        return self.sample.expand(len(z), *self.sample.shape).clone()


def _config_and_dataset(dataset, tmp_path, monkeypatch):
    if dataset == "cifar10":
        overrides = [*_cifar_overrides(tmp_path, monkeypatch), "metrics.n_samples=1000"]
    else:
        overrides = DATASET_OVERRIDES[dataset]
    cfg = compose_config([*overrides, *EVALUATION])
    data = build_dataset(cfg.data.name, root=cfg.data.root, image_size=cfg.data.image_size, seed=0,
                         n_samples=cfg.data.n_samples)
    return cfg, data


@pytest.mark.parametrize("dataset", ["digits", "ring8", "grid25", "cifar10"])
@pytest.mark.parametrize("collapse", ["identical", "nan"])
def test_final_evaluation_of_a_collapsed_generator_is_bounded_and_says_what_is_missing(dataset, collapse, tmp_path,
                                                                                      monkeypatch):
    cfg, data = _config_and_dataset(dataset, tmp_path, monkeypatch)
    one_real = real_subset(data, 1)[0]
    sample = one_real if collapse == "identical" else torch.full(data_shape(cfg.data.name, cfg.data.image_size),
                                                                 math.nan)
    quality = SampleQuality(cfg, data, torch.device("cpu"), tmp_path)
    started = time.perf_counter()
    evaluation = quality(CollapsedGenerator(sample), final=True)
    elapsed = time.perf_counter() - started
    assert elapsed < COLLAPSED_EVALUATION_SECONDS, f"{elapsed:.0f} s"

    scores = evaluation.scores
    assert set(scores) <= set(BY_KEY) and "quality/geometry_score" in scores
    assert scores["quality/geometry_gamma"] > 0  # a setting: known whatever the samples are
    groups = {"digits": ("digits_fd", "class_coverage"), "ring8": ("mode_metrics",),
              "grid25": ("mode_metrics",), "cifar10": ("fidelity",)}[dataset] + ("geometry",)
    compared = [key for group in groups for key in compared_keys(group, dataset)]
    if collapse == "nan":
        assert all(math.isnan(scores[key]) for key in compared)
        assert {key: error.reason for key, error in evaluation.unavailable.items()} == \
            dict.fromkeys(compared, "nonfinite")
        return
    assert evaluation.unavailable == {}
    # one real sample repeated: a point mass. Its RLT curve is (1, 0, ...) (no hole ever), so the score is
    # that of the real cloud's curve against it; every other metric is a number or a documented NaN
    assert math.isfinite(scores["quality/geometry_score"])
    if dataset == "digits":
        assert scores["quality/classes_covered"] == 1
        assert scores["quality/class_kl"] == pytest.approx(math.log(10))
        assert math.isfinite(scores["quality/digits_fd"])
    elif dataset == "cifar10":
        assert all(math.isfinite(scores[key]) for key in compared)
    else:  # a real point lies within 3 std of its mode: one mode, all high quality
        assert scores["quality/modes_covered"] == 1 and scores["quality/high_quality_fraction"] == 1
        assert scores["quality/mode_kl"] == pytest.approx(math.log(8 if dataset == "ring8" else 25))


def test_a_run_whose_final_samples_are_nan_logs_nan_with_its_reason_and_finishes(tmp_path, monkeypatch, capsys):
    """The runner's side: NaN in metrics.jsonl, the reason in metric_status.jsonl and the W&B summary,
    one line per computation on stderr; the run still ends normally (its checkpoint and report stand)."""
    real_samples = SampleQuality.samples

    def nan_at_the_end(self, generator, n):
        samples = real_samples(self, generator, n)
        return torch.full_like(samples, math.nan)

    monkeypatch.setattr(SampleQuality, "samples", nan_at_the_end)
    cfg = compose_config(["experiment=compare", *TINY_RUN, "metrics.n_samples=64", "wandb.mode=offline",
                          f"out_dir={tmp_path / 'runs'}", "name=nan", "disc=sn"])
    run_dir = run(cfg)
    (final,) = [row for row in read_metrics(run_dir) if "quality/digits_fd" in row]
    assert final["step"] == 2 and math.isnan(final["quality/digits_fd"]) and math.isnan(final["quality/geometry_score"])
    expected = {f"{key}_status": "nonfinite" for key in
                (*compared_keys("digits_fd", "digits"), *compared_keys("class_coverage", "digits"),
                 *compared_keys("geometry", "digits"))}
    assert read_metric_status(run_dir) == [{"step": 2, **expected}]
    summary = read_offline_run(run_dir / "wandb").summary
    assert {key: summary[key] for key in expected} == expected
    lines = [line for line in capsys.readouterr().err.splitlines() if "unavailable, logged as NaN" in line]
    assert len(lines) == 3 and all(line.startswith("stiefel-gan: step 2: quality/") for line in lines)
