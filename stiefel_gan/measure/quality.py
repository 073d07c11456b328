"""Sample quality of a generator, with the metric that suits each dataset.

- digits: in the feature space of the project's 16 px digits classifier, against the held-out digits with
  ``data.split=train`` (else all of them): Frechet distance and KID (torch-fidelity's mathematics),
  precision / recall (torch-fidelity's, k = 3) and density / coverage (k = 5); class coverage (also counting confident
  predictions only), the KL of the predicted-class histogram from uniform and, at the end of a
  ``data.split=train`` run, the memorization ratio (:mod:`stiefel_gan.metrics.digits`);
- stacked_digits: modes covered (of 1,000), the fraction of samples whose three channels the digits
  classifier is confident of, the KL of their mode histogram from uniform, on ``metrics.n_mode_samples``
  (>= 10,000) samples (:mod:`stiefel_gan.metrics.stacked`);
- ring8 / grid25: modes covered, high-quality fraction, KL of the mode histogram
  (:mod:`stiefel_gan.metrics.toy`);
- cifar10 / stl10: IS / FID / KID through torch-fidelity with the configured protocol, the protocol's
  sample counts logged next to the numbers (:mod:`stiefel_gan.metrics.fidelity`);
- any dataset, at the end of a run: the Geometry Score of real vs generated samples
  (:mod:`stiefel_gan.metrics.geometry`), with the mean relative-living-time curves plotted and the
  filtration's ``gamma`` logged next to the score (``quality/geometry_gamma``).

A metric the generated samples make undefined or too costly (NaN images of a diverged generator, the
witness complex of a collapsed one: :class:`~stiefel_gan.metrics.status.MetricUnavailable`) is NaN, with
its reason beside it in :attr:`Evaluation.unavailable`; the other metrics are still computed.

Generated samples come from their own seeded latents, so evaluating never moves the training RNG.
Real reference samples (FID / KID, Geometry Score) are a random subset of the dataset drawn with
the fixed seed :data:`REAL_SUBSET_SEED`: every run of every variant is compared with the same
real images, and they are not the dataset's first images (which may be ordered, e.g. by class).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from .._modules import eval_mode
from ..config.paths import RunDir
from ..config.schema import Config
from ..data.images import UInt8ImageDataset, uint8_to_unit_range
from ..data.mixtures import MIXTURES, mixture_centers, mixture_std
from ..metrics import (
    PROTOCOLS,
    DigitsEvaluator,
    MetricUnavailable,
    compute_fidelity,
    geometry_score,
    mode_metrics,
    plot_rlt,
    relative_living_times,
)
from ..metrics.fidelity import INCEPTION
from ..metrics.digits import reference_for_split
from ..metrics.geometry import GAMMA_PER_5000_POINTS
from ..metrics.stacked import stacked_mode_metrics
from .table import PREFIX, compared_keys

EVAL_SEED_OFFSET = 2_000_029  # latents of the evaluation samples, apart from training's and the grids'

#: Seed of the random subset of real samples every evaluation compares with.
REAL_SUBSET_SEED = 0

#: The Geometry Score's ``gamma`` for 2-D point clouds, the value Khrulkov & Oseledets use on their
#: 2-D examples: the image default (``1/128 * N / 5000``, their MNIST setting) stops the filtration
#: so early that a filled 2-D mode still shows many short-lived holes.
MIXTURE_GS_GAMMA = 1.0 / 8


def geometry_gamma(dataset_name: str, n_points: int, configured: float | None = None) -> float:
    """The Geometry Score's ``gamma``: ``configured`` if given, else per dataset.

    ``1/8`` (:data:`MIXTURE_GS_GAMMA`) for the 2-D mixtures, the reference implementation's default
    ``(1/128) N / 5000`` for images (``N = n_points``).
    """
    if configured is not None:
        return float(configured)
    if dataset_name in MIXTURES:
        return MIXTURE_GS_GAMMA
    return GAMMA_PER_5000_POINTS * n_points / 5000


def real_subset(dataset: Dataset, size: int, seed: int = REAL_SUBSET_SEED) -> torch.Tensor:
    """``min(size, len(dataset))`` samples drawn without replacement with a fixed seed, as one float tensor
    ([-1, 1] images or 2-D points)."""
    stored = dataset.images if isinstance(dataset, UInt8ImageDataset) else dataset.tensors[0]
    chosen = torch.randperm(len(stored), generator=torch.Generator().manual_seed(seed))[:size]
    chosen = chosen.sort().values  # reads a memory-mapped or ordered store front to back
    samples = stored[chosen]
    return uint8_to_unit_range(samples) if isinstance(dataset, UInt8ImageDataset) else samples


@dataclass
class Evaluation:
    """What one evaluation measured: ``scores`` maps ``quality/<metric>`` to its value (NaN where the
    metric was unavailable), ``unavailable`` maps each NaN key to the reason its computation gave."""

    scores: dict[str, float] = field(default_factory=dict)
    unavailable: dict[str, MetricUnavailable] = field(default_factory=dict)

    def add(self, group: str, dataset: str, compute: Callable[[], dict[str, float]]) -> None:
        """The scores ``compute()`` returns (names without the prefix), or NaN for every compared key of
        ``group`` (:func:`~stiefel_gan.measure.table.compared_keys`) when it raises MetricUnavailable."""
        try:
            self.scores.update({PREFIX + name: float(value) for name, value in compute().items()})
        except MetricUnavailable as error:
            for key in compared_keys(group, dataset):
                self.scores[key] = float("nan")
                self.unavailable[key] = error


class SampleQuality:
    """Callable ``(generator, final) -> Evaluation`` for one run's dataset."""

    def __init__(self, cfg: Config, dataset: Dataset, device: torch.device, run_dir: Path | None = None):
        self.cfg, self.dataset, self.device, self.run_dir = cfg, dataset, device, run_dir
        self.name = cfg.data.name
        # metrics.protocol and metrics.inception_weights were checked with the config (stiefel_gan.config.checks)
        # the held-out digits are the reference when the GAN trains without them (data.split=train)
        # (and at the run's image side, so that a copy of a real digit is that digit: DigitsEvaluator)
        self._digits = None
        if self.name == "digits":
            self._digits = DigitsEvaluator(reference=reference_for_split(cfg.data.split),
                                           image_size=cfg.data.image_size)
        elif self.name == "stacked_digits":  # only its classifier is used: each channel's probabilities
            self._digits = DigitsEvaluator()
        self._real_rlt = None

    @torch.no_grad()
    def samples(self, generator, n: int) -> torch.Tensor:
        latents = torch.Generator().manual_seed(self.cfg.train.seed + EVAL_SEED_OFFSET)
        chunks = []
        with eval_mode(generator):
            for start in range(0, n, 500):
                z = generator.sample_z(min(500, n - start), latents, self.device)
                chunks.append(generator(z).cpu())
        return torch.cat(chunks)

    def __call__(self, generator, final: bool = False) -> Evaluation:
        """The evaluation of ``metrics.n_samples`` samples of ``generator`` (at least the protocol's count on
        CIFAR-10 / STL-10): :meth:`evaluate` of :meth:`samples`."""
        m = self.cfg.metrics
        n = m.n_samples
        if self.name in ("cifar10", "stl10"):
            n = max(n, PROTOCOLS[m.protocol].n_generated)
        elif self.name == "stacked_digits":
            n = max(n, m.n_mode_samples)
        return self.evaluate(self.samples(generator, n), final)

    def evaluate(self, fake: torch.Tensor, final: bool = False) -> Evaluation:
        """Every metric of this run's dataset on the samples ``fake`` (and, with ``final``, the end-of-run
        ones): what a run logs for its generator's samples, and what ``stiefel-gan calibrate`` measures
        for samples made without one (:mod:`stiefel_gan.measure.calibration`)."""
        m = self.cfg.metrics
        evaluation = Evaluation()
        if self.name == "stacked_digits":
            evaluation.add("mode_metrics", self.name,
                           lambda: stacked_mode_metrics(fake[: m.n_mode_samples], self._digits))
        elif self._digits is not None:
            evaluation.add("digits_features", self.name, lambda: self._digits.feature_metrics(fake))
            evaluation.add("class_coverage", self.name, lambda: self._digits.class_coverage(fake))
        elif self.name in MIXTURES:
            evaluation.add("mode_metrics", self.name, lambda: mode_metrics(
                fake.numpy(), mixture_centers(self.name).numpy(), mixture_std(self.name)))
        else:
            evaluation.add("fidelity", self.name, lambda: self.fidelity(fake))
        if final and self.name == "digits" and self.cfg.data.split == "train":
            evaluation.add("memorization", self.name,
                           lambda: {"memorization_ratio": self._digits.memorization_ratio(fake[: m.n_samples])})
        if final and m.geometry_score:
            gamma = geometry_gamma(self.name, m.n_samples, m.gs_gamma)
            evaluation.scores[PREFIX + "geometry_gamma"] = gamma
            evaluation.add("geometry", self.name, lambda: {"geometry_score": self.geometry(fake[: m.n_samples], gamma)})
        return evaluation

    def fidelity(self, fake: torch.Tensor) -> dict[str, float]:
        """IS / FID / KID and the protocol's counts (its names and other strings are not logged)."""
        m = self.cfg.metrics
        protocol = PROTOCOLS[m.protocol]
        real = real_subset(self.dataset, protocol.n_real)
        measured = compute_fidelity(fake, real, protocol, weights_path=m.inception_weights,
                                    feature_extractor=m.feature_extractor or INCEPTION, device=self.device)
        return {key: value for key, value in measured.items() if isinstance(value, (int, float))}

    def geometry(self, fake: torch.Tensor, gamma: float) -> float:
        """Geometry Score of real vs generated samples (flattened) at filtration parameter ``gamma``
        (:func:`geometry_gamma`); the RLT curves go to a PNG."""
        m = self.cfg.metrics
        options = {"L_0": m.gs_landmarks, "gamma": gamma, "i_max": m.gs_i_max, "n": m.gs_n,
                   "seed": self.cfg.train.seed, "max_seconds": m.gs_max_seconds}
        if self._real_rlt is None:
            real = real_subset(self.dataset, len(fake))
            self._real_rlt = relative_living_times(real.reshape(len(real), -1).numpy().astype(np.float64), **options)
        fake_rlt = relative_living_times(fake.reshape(len(fake), -1).numpy().astype(np.float64), **options)
        if self.run_dir is not None:
            plot_rlt({"real": self._real_rlt, "generated": fake_rlt}, RunDir(self.run_dir).geometry_plot)
        return geometry_score(self._real_rlt, fake_rlt)
