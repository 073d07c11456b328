"""What the metrics give samples of known quality: the calibration behind ``stiefel-gan calibrate``.

A run's numbers (``quality/digits_fd`` 158 vs 571) mean something only next to what real data, real
data a little degraded, and a generator that learned nothing get at the same sample count. Each
calibration *row* makes ``metrics.n_samples`` samples of one known kind (real held-out digits, real
training digits plus Gaussian noise, an untrained G, ...) for each of the seeds
:data:`CALIBRATION_SEEDS`, and evaluates them with :meth:`~stiefel_gan.measure.quality.SampleQuality.evaluate`,
the very evaluation a run gives its generator's samples at its end (``final=True``); the untrained G
goes through :class:`~stiefel_gan.measure.quality.SampleQuality` itself, latents and all. The columns
are the dataset's compared keys of the one metric table (:mod:`stiefel_gan.measure.table`) that the
evaluation gave, so a metric added to the evaluation and the table is calibrated without a change here.

Every row's samples are drawn from its own generator seeded with the calibration seed, so a row's
numbers do not depend on which rows come before it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config.schema import Config
from ..data.datasets import data_shape
from ..data.images import load_digits
from ..data.mixtures import mixture_centers, mixture_std
from ..metrics.digits import reference_for_split
from ..gan.builder import initial_gan, run_dataset
from .quality import SampleQuality
from .table import METRICS, MIXTURE_DATASETS

#: The datasets a calibration can run on: those whose metrics need nothing outside the package
#: (CIFAR-10 / STL-10 need Inception weights and the data on disk).
CALIBRATED_DATASETS = ("digits", *MIXTURE_DATASETS)
#: One calibration value is the spread of a row over these seeds.
CALIBRATION_SEEDS = (0, 1, 2, 3, 4)
#: Standard deviations of the Gaussian noise added to real digits (pixels in [-1, 1]).
DIGITS_NOISE_STDS = (0.1, 0.3)
#: Standard deviations, in units of the mixture's mode std, of the Gaussian noise added to real points.
MIXTURE_NOISE_STDS = (1.0, 2.0)


@dataclass(frozen=True)
class CalibrationData:
    """What the rows draw from: the run's training data (``train``, ``labels``: images or 2-D points and
    their class or mode), the digits the metric compares with (``reference``: the 450 held-out digits at
    ``data.split=train``, all 1,797 at ``all``; None for a mixture), the mixture's centres and std."""

    train: Tensor
    labels: Tensor
    reference: Tensor | None = None
    centers: Tensor | None = None
    std: float | None = None


#: ``draw(data, n, seed)`` -> ``n`` samples as a float tensor, drawn from a generator seeded with ``seed``
Draw = Callable[[CalibrationData, int, int], Tensor]


@dataclass(frozen=True)
class Row:
    """One kind of samples: ``name``, what it is in one phrase (``meaning``), how to draw them; a row
    without ``draw`` is the untrained generator of the run's config, sampled as a run samples it."""

    name: str
    meaning: str
    draw: Draw | None = None


@dataclass
class RowResult:
    """A row's scores, one dict of ``quality/*`` keys per seed (in the calibration's seed order)."""

    row: Row
    scores: list[dict[str, float]] = field(default_factory=list)

    def values(self, key: str) -> list[float]:
        return [seed_scores.get(key, math.nan) for seed_scores in self.scores]


@dataclass
class Calibration:
    """A dataset's calibration: the config it ran under, the seeds, the rows' results and the columns
    (the dataset's compared ``quality/*`` keys that the evaluation gave, in the metric table's order)."""

    cfg: Config
    seeds: tuple[int, ...]
    results: list[RowResult]
    columns: tuple[str, ...]

    def result(self, name: str) -> RowResult:
        return next(result for result in self.results if result.row.name == name)


def _resample(data: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """``n`` rows of ``data`` drawn uniformly with replacement."""
    return data[torch.randint(len(data), (n,), generator=generator)]


def _resampled(part: Callable[[CalibrationData, int], Tensor]) -> Draw:
    """``n`` samples of ``part(data, seed)`` (the training data, one class of it, ...) drawn with replacement."""
    def draw(data: CalibrationData, n: int, seed: int) -> Tensor:
        return _resample(part(data, seed), n, torch.Generator().manual_seed(seed))
    return draw


def _with_noise(std: Callable[[CalibrationData], float], clamp: bool) -> Draw:
    """Resampled training data plus ``N(0, std(data)^2)`` per coordinate (clamped to the pixel range [-1, 1])."""
    def draw(data: CalibrationData, n: int, seed: int) -> Tensor:
        generator = torch.Generator().manual_seed(seed)
        real = _resample(data.train, n, generator)
        noisy = real + std(data) * torch.randn(real.shape, generator=generator)
        return noisy.clamp(-1.0, 1.0) if clamp else noisy
    return draw


def blur_2x(images: Tensor) -> Tensor:
    """Images ``(N, C, H, W)`` at half their resolution and back: 2x2 area averages, upsampled bilinearly
    (``align_corners=False``, as the digits are upscaled) to ``H x W`` again."""
    half = F.avg_pool2d(images, 2)
    return F.interpolate(half, size=images.shape[-2:], mode="bilinear", align_corners=False)


UNTRAINED_G = Row("untrained G", "the config's generator at initialization (train.seed = seed), sampled as a run samples it")


def reference_row(split: str) -> Row:
    """The digits' floor: the metric's own reference resampled. At ``data.split=train`` that is the 450
    held-out digits; at ``all`` it is all 1,797, which the GAN also trains on, so there the floor is also
    what a G that copies its training data gets (resampling the held-out 450 instead would add the gap
    between a quarter of the digits and all of them, and overstate the floor)."""
    name, meaning = (("held-out digits", "the 450 held-out digits (the reference)") if split == "train" else
                     ("all digits", "all 1,797 digits (the reference, trained on too at data.split=all)"))
    return Row(name, f"{meaning} resampled with replacement: the sampling floor",
               _resampled(lambda data, seed: data.reference))


def digits_rows(image_size: int, split: str) -> tuple[Row, ...]:
    """The digits' rows, at image side ``image_size``, the floor at the runs' ``split``
    (:func:`reference_row`)."""
    training = _resampled(lambda data, seed: data.train)

    def blurred(data: CalibrationData, n: int, seed: int) -> Tensor:
        return blur_2x(training(data, n, seed))

    def class_means(data: CalibrationData, n: int, seed: int) -> Tensor:
        means = torch.stack([data.train[data.labels == digit].mean(dim=0) for digit in range(10)])
        return means[_resample(data.labels, n, torch.Generator().manual_seed(seed))]

    noise = tuple(Row(f"noise {std:g}", f"training digits + Gaussian noise of std {std:g} per pixel (pixels in "
                      "[-1, 1]), clamped to [-1, 1]", _with_noise(lambda data, std=std: std, clamp=True))
                  for std in DIGITS_NOISE_STDS)
    return (
        reference_row(split),
        Row("training digits", "the 1,347 training digits resampled: what a G that copies its training data gets",
            training),
        *noise,
        Row("blur 2x", f"training digits at half resolution and back ({image_size // 2} px area averages, "
            "upsampled bilinearly)", blurred),
        Row("class means", "each sample the mean training image of its class, classes in their shares", class_means),
        Row("one class", "training digits of one class only (digit = seed)",
            _resampled(lambda data, seed: data.train[data.labels == seed % 10])),
        UNTRAINED_G,
    )


def mixture_rows() -> tuple[Row, ...]:
    """The 2-D mixtures' rows."""
    def one_mode(data: CalibrationData, n: int, seed: int) -> Tensor:
        center = data.centers[seed % len(data.centers)]
        return center + data.std * torch.randn(n, center.shape[0], generator=torch.Generator().manual_seed(seed))

    def at_centers(data: CalibrationData, n: int, seed: int) -> Tensor:
        return data.centers[_resample(data.labels, n, torch.Generator().manual_seed(seed))]

    noise = tuple(Row(f"noise {scale:g} std", f"real points + Gaussian noise of {scale:g} mode std per coordinate",
                      _with_noise(lambda data, scale=scale: scale * data.std, clamp=False))
                  for scale in MIXTURE_NOISE_STDS)
    return (
        Row("real points", "the run's training points resampled with replacement: the sampling floor",
            _resampled(lambda data, seed: data.train)),
        *noise,
        Row("one mode", "points drawn from one mode only (mode = seed)", one_mode),
        Row("mode centres", "every sample exactly at its mode's centre (no spread), modes in their shares", at_centers),
        UNTRAINED_G,
    )


def _data(cfg: Config, dataset) -> CalibrationData:
    train, labels = dataset.tensors
    if cfg.data.name == "digits":
        # the evaluator's reference (stiefel_gan.measure.quality.SampleQuality)
        reference = load_digits(cfg.data.image_size, split=reference_for_split(cfg.data.split))
        return CalibrationData(train, labels, reference=reference.tensors[0])
    return CalibrationData(train, labels, centers=mixture_centers(cfg.data.name), std=mixture_std(cfg.data.name))


def compared_columns(dataset: str, scores: list[dict[str, float]]) -> tuple[str, ...]:
    """The compared keys of ``dataset`` in the metric table (a goal, the dataset among its datasets), in
    the table's order, that appear in any of ``scores``."""
    given = set().union(*scores) if scores else set()
    return tuple(m.key for m in METRICS if m.goal is not None and dataset in m.datasets and m.key in given)


def dataset_rows(cfg: Config) -> tuple[Row, ...]:
    """The calibration rows of ``cfg.data.name`` (one of :data:`CALIBRATED_DATASETS`), the floor first."""
    name = cfg.data.name
    if name not in CALIBRATED_DATASETS:
        raise ValueError(f"data={name} is not allowed for a calibration: use one of {', '.join(CALIBRATED_DATASETS)}")
    return digits_rows(cfg.data.image_size, cfg.data.split) if name == "digits" else mixture_rows()


def sampling_floor(cfg: Config, seeds: tuple[int, ...] = CALIBRATION_SEEDS) -> RowResult:
    """The first row alone (real reference data resampled: the floor of every metric at this sample
    count), one draw per seed, each evaluated as :func:`calibrate` evaluates it, but with the run's data
    and evaluator built once (the row draws real data only, so no seed changes them) and the Geometry
    Score off (tens of seconds an evaluation, and no run's headline)."""
    cfg = dataclasses.replace(cfg, metrics=dataclasses.replace(cfg.metrics, geometry_score=False))
    result = RowResult(dataset_rows(cfg)[0])
    dataset = run_dataset(cfg)
    data, quality = _data(cfg, dataset), SampleQuality(cfg, dataset, torch.device("cpu"))
    for seed in seeds:
        result.scores.append(quality.evaluate(result.row.draw(data, cfg.metrics.n_samples, seed), final=True).scores)
    return result


def calibrate(cfg: Config, seeds: tuple[int, ...] = CALIBRATION_SEEDS) -> Calibration:
    """Every row of ``cfg.data.name`` (one of :data:`CALIBRATED_DATASETS`), ``cfg.metrics.n_samples``
    samples a row and seed, each evaluated as a run's final evaluation is; the config is the run's
    (its image side, split, model), with ``train.seed`` set to each seed in turn. Torch's global RNG
    is left as it was."""
    name = cfg.data.name
    results = [RowResult(row) for row in dataset_rows(cfg)]
    with torch.random.fork_rng(devices=[]):  # initial_gan seeds the global RNG
        for seed in seeds:
            seeded = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed))
            dataset = run_dataset(seeded)
            data = _data(seeded, dataset)
            quality = SampleQuality(seeded, dataset, torch.device("cpu"))
            for result in results:
                if result.row.draw is None:
                    generator = initial_gan(seeded, data_shape(name, cfg.data.image_size)).generator
                    evaluation = quality(generator, final=True)
                else:
                    evaluation = quality.evaluate(result.row.draw(data, cfg.metrics.n_samples, seed), final=True)
                result.scores.append(evaluation.scores)
    columns = compared_columns(name, [scores for result in results for scores in result.scores])
    return Calibration(cfg, tuple(seeds), results, columns)
