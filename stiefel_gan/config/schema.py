"""The experiment schema: typed dataclasses that Hydra composes the YAML files of ``configs/`` onto.

Because the root config is structured, Hydra itself refuses a misspelled key, a value of the wrong
type or a value outside a closed choice (every choice is a :class:`Choice`). What types cannot say
(ranges, combinations) :func:`~stiefel_gan.config.checks.check_config` says, before anything is
built or written.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Iterable, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from ..data.datasets import DATASET_NAMES
from ..manifold import OPTIMIZERS, RETRACTIONS, SECOND_MOMENTS
from ..manifold.spectra import CURVE_PARAMETERS
from ..metrics.fidelity import PROTOCOLS
from ..metrics.geometry import MAX_SECONDS


class Choice(str, Enum):
    """A closed choice of the config: OmegaConf refuses any other value when a config is composed or
    loaded, and in code a choice is its string (it compares and hashes as it, ``f"{kind}"`` and
    ``str(kind)`` are ``sn``, not ``DiscKind.sn``), so ``cfg.loss.name == "hinge"`` and a dict keyed
    by the strings work. Every member's name is its value (OmegaConf reads a value by the name).

    :class:`enum.StrEnum` is this from Python 3.11 on; ``pyproject.toml`` allows 3.10.
    """

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @classmethod
    def values(cls) -> tuple[str, ...]:
        """The allowed values, in order."""
        return tuple(member.value for member in cls)


def _choice_of(name: str, values: Iterable[str], doc: str) -> type[Choice]:
    """A :class:`Choice` of names that the layer implementing them defines (an optimizer, a
    retraction, a dataset): the config lists them once, there."""
    choice = Choice(name, [(value, value) for value in values], module=__name__, qualname=name)
    choice.__doc__ = doc
    return choice


class DiscKind(Choice):
    """How D's layers are constrained: one axis per concept (the Stiefel spectrum and factorization
    are their own keys, ``disc.spectrum`` and ``disc.factorization``)."""

    none = "none"  # no constraint
    sn = "sn"  # Miyato's spectral normalization (reshaped-kernel power iteration)
    fair_sn = "fair_sn"  # SN by the convolution operator's norm
    ortho_reg = "ortho_reg"  # Brock's orthonormal regularization (a loss term)
    wc = "wc"  # weight clipping (WGAN)
    wn = "wn"  # weight normalization (Salimans & Kingma)
    gp = "gp"  # gradient penalty (WGAN-GP two-sided, or R1)
    stiefel = "stiefel"  # W = diag(lambda) X, X on a Stiefel manifold


class SpectrumKind(Choice):
    fixed = "fixed"  # a fixed curve
    curve = "curve"  # a learnable curve
    grid = "grid"  # k free values


class Factorization(Choice):
    diag = "diag"  # diag(lambda) X: the singular vectors on one side are the coordinate axes
    svd = "svd"  # U diag(lambda) V^T: both sides free


class GradientPenalty(Choice):
    two_sided = "two_sided"  # WGAN-GP: (||grad D(x_hat)|| - 1)^2 on interpolates of real and fake
    r1 = "r1"  # Mescheder et al.'s R1: ||grad D(x)||^2 / 2 on real samples


class SpectrumNormalization(Choice):
    none = "none"
    frobenius = "frobenius"  # lambda rescaled to ||lambda||_2 = ||W||_F = disc.normalize_target


class OtherLayers(Choice):
    """``disc.layers.others``: what the D layers that ``disc.layers`` leaves out of a Stiefel D become."""

    flat = "flat"  # Stiefel too, with a flat spectrum (every singular value sigma: an orthogonal layer)
    sn = "sn"  # spectral normalization
    none = "none"  # unconstrained


class LossKind(Choice):
    """``loss.name``: the GAN losses (stiefel_gan.gan.losses)."""

    hinge = "hinge"
    vanilla = "vanilla"  # non-saturating


class LrDecay(Choice):
    """``optim.lr_decay``: how every group's learning rate moves over ``train.steps``."""

    constant = "constant"
    linear = "linear"  # falls linearly to 0 at train.steps


class PrecisionKind(Choice):
    """``train.precision``: autocast of G's and D's forward passes."""

    fp32 = "fp32"  # no autocast
    bf16 = "bf16"
    fp16 = "fp16"  # CUDA only (loss scaling)


class WandbMode(Choice):
    """``wandb.mode`` (stiefel_gan.run.tracker resolves ``auto``)."""

    auto = "auto"
    online = "online"
    offline = "offline"
    disabled = "disabled"


class Architecture(Choice):
    """``model.arch``: the architectures of stiefel_gan.gan.models."""

    standard_cnn = "standard_cnn"  # Miyato et al.'s standard CNN
    resnet = "resnet"  # SNGAN's ResNet
    mlp = "mlp"  # for the 2-D mixtures


DatasetName = _choice_of("DatasetName", DATASET_NAMES, "``data.name``: the datasets of stiefel_gan.data.")
OptimizerName = _choice_of("OptimizerName", OPTIMIZERS,
                           "``optim.name``: D's optimizer (stiefel_gan.manifold.make_optimizer).")
SecondMoment = _choice_of("SecondMoment", SECOND_MOMENTS, "``optim.second_moment``: Riemannian Adam's second moment.")
Retraction = _choice_of("Retraction", RETRACTIONS, "``disc.retraction``: how a Stiefel factor returns to the manifold.")
CurveParameter = _choice_of("CurveParameter", CURVE_PARAMETERS, "``disc.learn``: what a learnable curve trains.")
ProtocolName = _choice_of("ProtocolName", PROTOCOLS,
                          "``metrics.protocol``: the torch-fidelity protocol of CIFAR-10 / STL-10.")

LOSS_KINDS = LossKind.values()
PRECISIONS = PrecisionKind.values()
WANDB_MODES = WandbMode.values()
ARCHITECTURES = Architecture.values()
#: the square image sides each convolutional architecture takes
STANDARD_CNN_IMAGE_SIZES = (16, 32, 48)
RESNET_IMAGE_SIZES = (32, 48)
MODEL_IMAGE_SIZES = {"standard_cnn": STANDARD_CNN_IMAGE_SIZES, "resnet": RESNET_IMAGE_SIZES}


def model_input_problem(arch: str, data_shape, arch_key: str = "arch") -> str | None:
    """Why architecture ``arch`` cannot take samples of shape ``data_shape`` (one line), or None.

    The MLPs take vectors ``(dim,)``; the convolutional models square images ``(channels, s, s)``
    with ``s`` in :data:`MODEL_IMAGE_SIZES` (their strided stages halve ``s`` down to 4 or 6).
    ``arch_key`` is the name the message gives ``arch``: ``model.arch`` for a config, ``arch`` for
    :func:`~stiefel_gan.gan.models.build_models`."""
    if arch not in ARCHITECTURES:
        return f"{arch_key}={arch!r} is not allowed: use one of {ARCHITECTURES}"
    if not isinstance(data_shape, (tuple, list)):
        return f"data_shape={data_shape!r} is not allowed: use a tuple such as (3, 32, 32) or (2,)"
    shape = tuple(data_shape)
    if not shape or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape):
        return f"data_shape={shape!r} is not allowed: use positive integers"
    if arch == "mlp":
        if len(shape) != 1:
            return f"data_shape={shape!r} is not allowed for {arch_key}='mlp': use (dim,), e.g. (2,)"
        return None
    sizes = MODEL_IMAGE_SIZES[arch]
    if len(shape) != 3 or shape[1] != shape[2] or shape[1] not in sizes:
        return f"data_shape={shape!r} is not allowed for {arch_key}='{arch}': use (channels, s, s) with s in {sizes}"
    return None


@dataclass
class DataConfig:
    name: DatasetName = DatasetName.digits
    root: str = "data"
    image_size: Optional[int] = 16
    download: bool = False
    n_samples: Optional[int] = None
    # digits: all 1,797 images, or the 1,347 of the training split (the 450 held out are then the digits
    # metrics' reference, seen by no network of the run); the other datasets train on the same data either way
    split: str = "all"


@dataclass
class ModelConfig:
    arch: Architecture = Architecture.standard_cnn
    z_dim: int = 128
    g_width: Optional[int] = None
    d_width: Optional[int] = None
    mlp_depth: int = 3


@dataclass
class DiscLayersConfig:
    """``disc.kind=stiefel``: which of D's layers take the spectrum, as glob patterns over their names
    (``net.0``, ``fc``, ``blocks.*.conv1``: stiefelize's patterns), and what the others become. A layer
    with k <= 2 singular values gets ratios, not a shape, from any spectrum: excluding it keeps a shape
    study about the layers where a shape exists."""

    include: List[str] = field(default_factory=list)  # empty: every Linear / Conv2d of D
    exclude: List[str] = field(default_factory=list)
    others: OtherLayers = OtherLayers.flat


@dataclass
class DiscConfig:
    """How D's layers are parameterized (every Linear / Conv2d of D, the final dense layer included)."""

    kind: DiscKind = DiscKind.sn
    n_power_iterations: int = 1  # sn, fair_sn
    ortho_beta: float = 1e-4  # ortho_reg: beta * ||G - I||_F^2
    clip_value: float = 0.01  # wc: every D parameter clipped to [-c, c] after each D step (WGAN's c)
    penalty: GradientPenalty = GradientPenalty.two_sided  # gp: which gradient penalty
    penalty_weight: float = 10.0  # gp: its weight (WGAN-GP's lambda = 10; R1's gamma)
    # kind=stiefel: the spectrum (each key always honoured) and how it is trained
    spectrum: SpectrumKind = SpectrumKind.fixed
    tau: float = 1.0
    eps: float = 0.1
    sigma: float = 1.0  # the largest singular value of a curve (1: SN's per-layer Lipschitz bound)
    # curve: which ones are trained
    learn: List[CurveParameter] = field(default_factory=lambda: [CurveParameter.tau, CurveParameter.eps])
    sort: bool = False  # grid: sort descending in the forward pass
    # grid: rescale so that the largest value is exactly this (1: Lipschitz-matched with SN); null
    # learns the top value. A curve's largest value is sigma: max_value must be null or equal to it.
    max_value: Optional[float] = 1.0
    normalize: SpectrumNormalization = SpectrumNormalization.none  # frobenius: equal energy across shapes
    normalize_target: Optional[float] = None  # frobenius: every layer's ||W||_F (needs max_value=null)
    retraction: Retraction = Retraction.qr
    factorization: Factorization = Factorization.diag
    # every kind: a fixed factor on D's logit, the same as a hinge margin of 1 / gain. It scales D's
    # slope without touching its layers, so variants can be compared at a matched slope
    gain: float = 1.0
    layers: DiscLayersConfig = field(default_factory=DiscLayersConfig)


#: the numeric ``disc`` keys only ``disc.kind=stiefel`` reads (its spectrum's): in another kind's config they
#: hold defaults that describe nothing (an SN run has no tau)
STIEFEL_ONLY_KEYS = ("disc.tau", "disc.eps", "disc.sigma", "disc.max_value", "disc.normalize_target")


@dataclass
class OptimConfig:
    """Optimizers of G and D. ``radam`` is :class:`~stiefel_gan.manifold.StiefelAdam` (geoopt's
    RiemannianAdam iterates, fused; ``geoopt_radam`` is geoopt's own class): Adam on Euclidean
    parameters, so the SN baselines and Miyato's presets A-F run exactly Adam with it."""

    name: OptimizerName = OptimizerName.radam  # D's; G always uses Adam, with the same betas
    preset: Optional[str] = None
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    momentum: float = 0.0  # rsgd
    # radam: matrix (geoopt's, one per Stiefel matrix) | entry (projected Adam)
    second_moment: SecondMoment = SecondMoment.matrix
    lr_stiefel: Optional[float] = None  # D's Stiefel factors (default lr_d)
    lr_spectrum: Optional[float] = None  # D's spectrum parameters (default lr_d)
    n_dis: int = 1
    lr_decay: LrDecay = LrDecay.constant


@dataclass
class LossConfig:
    name: LossKind = LossKind.hinge


@dataclass
class TrainConfig:
    steps: int = 1000  # generator updates
    batch_size: int = 64
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: Optional[int] = None  # torch CPU threads (default: torch's own)
    log_every: int = 25
    sample_every: int = 250
    checkpoint_every: int = 250
    n_grid_samples: int = 64
    progress: bool = True
    precision: PrecisionKind = PrecisionKind.fp32
    compile: bool = False  # torch.compile G and D


@dataclass
class MetricsConfig:
    """What each run measures besides its losses (stiefel_gan.measure.quality, stiefel_gan.measure.diagnostics)."""

    every: int = 250  # sample-quality metrics every N generator steps and at the end (0: only at the end)
    n_samples: int = 1000  # generated samples per evaluation (digits, mixtures, geometry score)
    # stacked digits: generated samples of the modes covered and the mode KL (>= 10,000: 10 per mode; the
    # stacked-MNIST papers use 25,600-26,000)
    n_mode_samples: int = 10000
    protocol: ProtocolName = ProtocolName.quick  # CIFAR-10 / STL-10 only
    inception_weights: Optional[str] = None  # a local Inception file, for machines without network
    # CIFAR-10 / STL-10: the torch-fidelity feature extractor by its registered name (null: its Inception v3)
    feature_extractor: Optional[str] = None
    geometry_score: bool = True  # Geometry Score at the end of the run (Khrulkov & Oseledets 2018)
    gs_landmarks: int = 64  # L_0
    gs_gamma: Optional[float] = None  # default per dataset: 1/8 on the 2-D mixtures, 1/128 * N / 5000 on images
    gs_i_max: int = 100
    gs_n: int = 1000  # landmark draws
    # bound on the estimated seconds of one cloud's witness complexes (2-core machine): over it the score is NaN
    # with reason complex_too_large
    gs_max_seconds: float = MAX_SECONDS
    # sample quality also at these generator steps (with `every`, and at the end): a long run can be
    # evaluated densely early and sparsely late
    at_steps: List[int] = field(default_factory=list)
    diagnostics_every: int = 100  # D's spectral and gradient diagnostics (0: never), and at step 0
    operator_norm_iters: int = 30  # power iterations per conv operator norm


@dataclass
class WandbConfig:
    project: str = "stiefel_gan"
    entity: Optional[str] = None
    group: Optional[str] = None  # default: <experiment name>/<variant> (seeds of a variant share it)
    tags: List[str] = field(default_factory=list)
    mode: WandbMode = WandbMode.auto
    log_checkpoints: bool = False  # each checkpoint also as a W&B artifact (type "checkpoint")


@dataclass
class CompareConfig:
    """What ``stiefel-gan compare`` trains: each ``disc`` option in ``variants`` for each seed."""

    variants: List[str] = field(default_factory=lambda: ["sn", "stiefel_fixed", "stiefel_curve", "stiefel_grid"])
    seeds: List[int] = field(default_factory=lambda: [0])
    # runs trained at once, each in its own process (default: one per CPU core, at most one per run);
    # each then gets cores // jobs torch threads unless train.threads is set
    jobs: Optional[int] = None


#: ``report.statistic``: which per-run statistic of the headline curve a declared comparison tests, as the
#: report's columns name them: ``final`` (the last evaluation), ``last`` (the mean of the last 3), ``area``
#: (the area under the curve over its step range)
REPORT_STATISTICS = ("final", "last", "area")


@dataclass
class ReportConfig:
    """What a study's report tests, declared with the study before its runs (docs/report.md, "Declared
    comparisons"): each label in ``comparisons`` is a variant the study runs, compared with the SN baseline
    on the dataset's headline metric (``stiefel_gan.measure.table.HEADLINE``) and ``statistic``, paired by
    seed; each pair ``[A, B]`` in ``contrasts`` is ``A - B`` on the same, paired by the seeds both ran. The
    comparisons and contrasts are one family: Holm's correction at ``alpha`` runs over them together. Only
    these get a verdict in a report."""

    comparisons: List[str] = field(default_factory=list)  # variant labels (the report's rows), not preset names
    # pairs [A, B] of variant labels, neither SN's, tested as A - B ([[diag_tau1, svd_tau1]]); entries typed Any
    # so that a malformed one (a bare label, three labels) reaches contrasts_problem and its one-line message
    contrasts: List[Any] = field(default_factory=list)
    statistic: str = "final"  # final | last | area (REPORT_STATISTICS)
    alpha: float = 0.05  # family-wise error rate of the declared comparisons and contrasts together
    # the headline's statistic per run fitted on these, with an intercept (docs/report.md, "Regression"):
    # config keys (disc.tau) or logged keys (lipschitz/lower_bound, its final value; @0: at step 0), each
    # optionally log(...)
    regress_on: List[str] = field(default_factory=list)


@dataclass
class TuningConfig:
    """A tuning study's protocol, declared with the study before its runs (docs/studies.md, "Tuning
    protocol"; stiefel_gan.config.tuning checks it, stiefel_gan.report.tuning applies it). The variants are
    labelled ``<method>@<key>=<value>``, every method over the same number of settings. Each method's best
    setting is the one with the best mean of ``statistic`` (of the headline metric) over
    ``selection_seeds``; the bests of every method then run on ``confirm_seeds``, and only those seeds
    enter the verdicts (each method's best vs SN's best, Holm over them at ``report.alpha``). No
    ``confirm_seeds`` (the default): the study declares no tuning protocol."""

    statistic: str = "area"  # final | last | area (REPORT_STATISTICS)
    selection_seeds: List[int] = field(default_factory=lambda: [0, 1, 2])
    confirm_seeds: List[int] = field(default_factory=list)


def comparisons_problem(comparisons: List[str], variants, sn_variants) -> str | None:
    """Why ``report.comparisons`` cannot be tested among a study's ``variants`` (labels), of which
    ``sn_variants`` are SN's (one line), or None. Each declared label must be a variant the study runs,
    once, and not SN's: those are the baseline it is compared with."""
    if not comparisons:
        return None
    allowed = ", ".join(sorted(set(variants) - set(sn_variants))) or "none: the study runs no other variant"
    unknown = [label for label in comparisons if label not in variants]
    if unknown:
        return (f"report.comparisons={list(comparisons)} is not allowed: {unknown[0]!r} is not a variant of the study; "
                f"use labels of its variants compared with the SN baseline ({allowed})")
    if not sn_variants:
        return (f"report.comparisons={list(comparisons)} is not allowed: the study has no SN variant (disc.kind=sn) "
                "to compare with; add the baseline, or declare no comparisons")
    baselines = [label for label in comparisons if label in sn_variants]
    if baselines:
        return (f"report.comparisons={list(comparisons)} is not allowed: {baselines[0]!r} is an SN variant, the "
                f"baseline itself; use labels of the variants compared with it ({allowed})")
    repeated = sorted({label for label in comparisons if list(comparisons).count(label) > 1})
    if repeated:
        return (f"report.comparisons={list(comparisons)} is not allowed: {repeated[0]!r} is listed twice; "
                "declare each comparison once")
    return None


def contrast_pairs_problem(contrasts: List[Any]) -> str | None:
    """Why ``report.contrasts`` is not a list of distinct pairs of distinct labels (one line), or None: what
    can be said without the study's variants (:func:`contrasts_problem` checks those too)."""
    written = [list(pair) if isinstance(pair, (list, tuple)) else pair for pair in contrasts]
    for pair in written:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(label, str) for label in pair)
                and pair[0] != pair[1]):
            return (f"report.contrasts={written} is not allowed: {pair!r} is not a pair of two distinct variant "
                    "labels; write each contrast A - B as [A, B], e.g. [[diag_tau1, svd_tau1]]")
    seen = set()
    for pair in written:
        if frozenset(pair) in seen:
            return (f"report.contrasts={written} is not allowed: {pair!r} is declared twice (in either order "
                    "it is one test); declare each contrast once")
        seen.add(frozenset(pair))
    return None


def contrasts_problem(contrasts: List[Any], variants, sn_variants) -> str | None:
    """Why ``report.contrasts`` cannot be tested among a study's ``variants`` (labels), of which
    ``sn_variants`` are SN's (one line), or None: its form (:func:`contrast_pairs_problem`), then each label
    a variant the study runs and not SN's (a variant against SN is a ``report.comparisons`` entry)."""
    problem = contrast_pairs_problem(contrasts)
    if problem is not None or not contrasts:
        return problem
    written = [list(pair) for pair in contrasts]
    allowed = ", ".join(sorted(set(variants) - set(sn_variants))) or "none: the study runs no other variant"
    for pair in written:
        for label in pair:
            if label not in variants:
                return (f"report.contrasts={written} is not allowed: {label!r} is not a variant of the study; use "
                        f"labels of its variants other than SN's ({allowed})")
            if label in sn_variants:
                return (f"report.contrasts={written} is not allowed: {label!r} is an SN variant; declare a "
                        f"variant against SN in report.comparisons, and contrast the others ({allowed})")
    return None


@dataclass(frozen=True)
class Regressor:
    """One entry of ``report.regress_on``: ``key`` a config key (dotted, ``disc.tau``) or a logged key
    (with a ``/``, ``lipschitz/lower_bound``); ``step`` the step whose logged value is used (None: the
    run's last value of the key); ``log``: the natural log of the value."""

    key: str
    step: Optional[int] = None
    log: bool = False

    @property
    def logged(self) -> bool:
        return "/" in self.key

    def __str__(self) -> str:
        term = self.key + ("" if self.step is None else f"@{self.step}")
        return f"log({term})" if self.log else term


#: one ``report.regress_on`` entry: ``key``, ``key@step`` or either inside ``log(...)``
_REGRESSOR = re.compile(r"^(?:log\((?P<inner>[^()]*)\)|(?P<plain>[^()]*))$")
_TERM = re.compile(r"^(?P<key>[A-Za-z_][\w.]*(?:/[\w./]+)?)(?:@(?P<step>\d+))?$")
REGRESSOR_FORMS = "KEY, KEY@STEP or log(KEY), log(KEY@STEP), e.g. log(disc.tau) or log(lipschitz/lower_bound@0)"


def parse_regressor(entry: str) -> Regressor:
    """A ``report.regress_on`` entry as a :class:`Regressor`; a one-line ValueError for a malformed one.
    ``@STEP`` belongs to logged keys only: a config key has one value per run."""
    match = _REGRESSOR.match(str(entry).strip())
    term = None if match is None else _TERM.match((match["inner"] if match["inner"] is not None
                                                   else match["plain"]).strip())
    if term is None:
        raise ValueError(f"report.regress_on entry {entry!r} is not allowed: use {REGRESSOR_FORMS}")
    regressor = Regressor(term["key"], None if term["step"] is None else int(term["step"]), match["inner"] is not None)
    if regressor.step is not None and not regressor.logged:
        raise ValueError(f"report.regress_on entry {entry!r} is not allowed: @STEP picks a logged key's value at a "
                         f"step, and {regressor.key} is a config key (one value per run); use {regressor.key}")
    return regressor


def regress_on_problem(entries: List[str]) -> str | None:
    """Why ``report.regress_on`` cannot be fitted, from the config alone (one line), or None: each entry
    well formed (:func:`parse_regressor`), listed once, and each config key a numeric key of the schema.
    Whether a logged key was logged can only be known from the runs (the report checks it)."""
    numeric = {key for key, value in flatten(config_dict(Config())).items()
               if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))}
    seen = set()
    for entry in entries:
        try:
            regressor = parse_regressor(entry)
        except ValueError as error:
            return str(error)
        if str(regressor) in seen:
            return f"report.regress_on={list(entries)} is not allowed: {entry!r} is listed twice; name each regressor once"
        seen.add(str(regressor))
        if not regressor.logged and regressor.key not in numeric:
            close = difflib.get_close_matches(regressor.key, sorted(numeric), n=3) or ["disc.tau", "disc.sigma",
                                                                                         "disc.gain"]
            return (f"report.regress_on entry {entry!r} is not allowed: {regressor.key} is not a numeric key of the "
                    f"config; use one such as {', '.join(close)}, or a logged key such as lipschitz/lower_bound")
    return None


@dataclass
class Config:
    name: str = "default"  # experiment name: runs/<name>/<run_name>, default W&B group
    run_name: Optional[str] = None  # default: <variant>-s<seed>, else <disc>-<optim>-s<seed>
    variant: Optional[str] = None  # the study variant this run belongs to (set by configs/variant/*; W&B group)
    out_dir: str = "runs"
    resume: Optional[str] = None  # a run directory, or auto: continue this command's own unfinished run
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    disc: DiscConfig = field(default_factory=DiscConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    tuning: TuningConfig = field(default_factory=TuningConfig)


def flatten(tree: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``: a nested config as dotted keys."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def register_configs() -> None:
    """Register the schema so that ``configs/config.yaml`` can build on it (``- schema`` in its defaults)."""
    store = ConfigStore.instance()
    store.store(name="schema", node=Config)


def config_dict(cfg: Config) -> dict:
    """The config as plain Python values (choices as their strings: checkpoints, W&B)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True, enum_to_str=True)
