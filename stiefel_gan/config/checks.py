"""Every check of a job, from its config and the files it names; nothing here builds or writes.

Types refuse what they can when the config is composed (every closed choice is a
:class:`~.schema.Choice`); the rest is here: ranges, the names only this process knows (a registered
feature extractor), combinations of keys (Note [one scale per spectrum]), whether the model
takes the data's shape (facts of the schema, so no model is built), the dataset on disk, the device,
a resume directory's checkpoint, the W&B environment, the launcher's settings. Each failure is a
one-line ``ValueError`` (a :class:`~.compose.UsageError` from :func:`check_job`) that names the bad
value and what is allowed.

:func:`check_job` is what the CLI, the checked sweeper and ``compare`` call for every job before the
first one trains, and :func:`check_study` what they call for a study's jobs together (the variants its
report compares); the run is then built once, in the process that trains it
(:func:`stiefel_gan.run.runner.prepare`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from ..data.datasets import data_shape
from ..data.images import DATA_SPLITS, missing_dataset
from ..metrics.stacked import MIN_MODE_SAMPLES
from .compose import UsageError, compose_config, job_config, one_line
from .naming import RESUMABLE_KEYS, disc_label
from .paths import RunDir
from .tuning import tuning_problem, tuning_seeds_problem
from .schema import (
    REPORT_STATISTICS,
    Config,
    DiscConfig,
    ReportConfig,
    comparisons_problem,
    config_dict,
    contrast_pairs_problem,
    contrasts_problem,
    flatten,
    model_input_problem,
    regress_on_problem,
)


def _fail(message: str) -> None:
    raise ValueError(message)


def check_config(cfg: Config, require_data: bool = True) -> None:
    """Checks that types cannot express; each failure is a one-line ValueError naming the fix.

    ``require_data=False`` skips the check that the dataset is on disk, for callers that only need the
    data's shape (the benchmarks time random batches of it)."""
    positive = {"train.steps": cfg.train.steps, "train.batch_size": cfg.train.batch_size,
                "optim.n_dis": cfg.optim.n_dis, "train.log_every": cfg.train.log_every,
                "train.sample_every": cfg.train.sample_every, "train.checkpoint_every": cfg.train.checkpoint_every,
                "train.n_grid_samples": cfg.train.n_grid_samples, "metrics.n_samples": cfg.metrics.n_samples}
    for key, value in positive.items():
        if value < 1:
            _fail(f"{key}={value} is not allowed: use an integer >= 1")
    check_wandb_environment(cfg.wandb.mode)
    if not cfg.metrics.gs_max_seconds > 0:
        _fail(f"metrics.gs_max_seconds={cfg.metrics.gs_max_seconds} is not allowed: use a number of seconds > 0")
    if cfg.train.threads is not None and cfg.train.threads < 1:
        _fail(f"train.threads={cfg.train.threads} is not allowed: use an integer >= 1, or null for torch's default")
    for key, every in (("metrics.every", cfg.metrics.every), ("metrics.diagnostics_every", cfg.metrics.diagnostics_every)):
        if every < 0:
            _fail(f"{key}={every} is not allowed: use an interval >= 1, or 0 (metrics: only at the end; "
                  "diagnostics: never)")
    for key, lr in (("optim.lr_g", cfg.optim.lr_g), ("optim.lr_d", cfg.optim.lr_d)):
        if not lr > 0:
            _fail(f"{key}={lr} is not allowed: use a learning rate > 0")
    if cfg.disc.kind == "stiefel" and cfg.optim.name == "adam":
        _fail(f"optim=adam is not allowed with disc.kind={cfg.disc.kind}: Adam leaves the Stiefel manifold; "
              "use optim=radam (Adam off-manifold) or optim=rsgd")
    if cfg.optim.second_moment != "matrix" and cfg.optim.name != "radam":
        _fail(f"optim.second_moment='{cfg.optim.second_moment}' is not allowed with optim.name={cfg.optim.name}: "
              "only radam has a per-entry variant (use optim.name=radam, or optim.second_moment=matrix)")
    if cfg.train.compile:
        unavailable = compile_unavailable()
        if unavailable:
            _fail(f"train.compile=true is not allowed here: torch.compile is unavailable ({unavailable}); "
                  "use train.compile=false")
    _check_disc(cfg.disc)
    if cfg.data.split not in DATA_SPLITS:
        _fail(f"data.split={cfg.data.split!r} is not allowed: use {' or '.join(DATA_SPLITS)}")
    _check_model(cfg)
    _check_metrics(cfg)
    check_report(cfg.report)
    tuning = tuning_seeds_problem(cfg.tuning)
    if tuning is not None:
        _fail(tuning)
    missing = missing_dataset(cfg.data.name, cfg.data.root, cfg.data.download) if require_data else None
    if missing:
        _fail(missing)


def _check_model(cfg: Config) -> None:
    """The data's shape (from the dataset's name and size alone) and whether ``model.arch`` takes it."""
    shape = data_shape(cfg.data.name, cfg.data.image_size)  # a one-line ValueError for a bad name or size
    problem = model_input_problem(cfg.model.arch, shape, arch_key="model.arch")
    if problem is not None:
        _fail(problem)
    for key, width in (("model.g_width", cfg.model.g_width), ("model.d_width", cfg.model.d_width)):
        if width is not None and width < 1:
            _fail(f"{key}={width} is not allowed: use a positive integer, or null for the model's default")
    if cfg.data.n_samples is not None and cfg.data.n_samples < 1:
        _fail(f"data.n_samples={cfg.data.n_samples} is not allowed: use an integer > 0, or null for all samples")


def _check_metrics(cfg: Config) -> None:
    m = cfg.metrics
    if m.n_mode_samples < MIN_MODE_SAMPLES:
        _fail(f"metrics.n_mode_samples={m.n_mode_samples} is not allowed: use an integer >= {MIN_MODE_SAMPLES} "
              "(10 samples per mode of the stacked digits' 1,000)")
    outside = [step for step in m.at_steps if not 1 <= step <= cfg.train.steps]
    if outside:
        _fail(f"metrics.at_steps has {outside[0]}, which is not allowed: use generator steps in "
              f"[1, train.steps={cfg.train.steps}]")
    if m.inception_weights is not None and not Path(m.inception_weights).is_file():
        _fail(f"metrics.inception_weights={m.inception_weights} is not allowed: no such file")
    if m.feature_extractor is not None and m.feature_extractor not in FEATURE_EXTRACTORS_REGISTRY:
        _fail(f"metrics.feature_extractor={m.feature_extractor!r} is not allowed: use a torch-fidelity feature "
              f"extractor registered in this process ({', '.join(sorted(FEATURE_EXTRACTORS_REGISTRY))}), or null")
    if m.operator_norm_iters < 1:
        _fail(f"metrics.operator_norm_iters={m.operator_norm_iters} is not allowed: use an integer >= 1")


#: ``disc.max_value``'s default: the grid's top value (SN's bound), a key no curve reads.
GRID_MAX_VALUE_DEFAULT = DiscConfig.max_value
def check_report(report: ReportConfig) -> None:
    """``report.alpha``, ``report.statistic``, ``report.regress_on`` (its form and its config keys:
    :func:`~.schema.regress_on_problem`; its logged keys only the report can check) and the form of
    ``report.contrasts`` (:func:`~.schema.contrast_pairs_problem`); whether ``report.comparisons`` and
    ``report.contrasts`` name the study's variants needs the study's jobs (:func:`check_study`)."""
    if not 0 < report.alpha < 1:
        _fail(f"report.alpha={report.alpha} is not allowed: use a family-wise level in (0, 1), e.g. 0.05")
    if report.statistic not in REPORT_STATISTICS:
        _fail(f"report.statistic={report.statistic!r} is not allowed: use one of {', '.join(REPORT_STATISTICS)}")
    problem = regress_on_problem(report.regress_on) or contrast_pairs_problem(report.contrasts)
    if problem is not None:
        _fail(problem)


def check_study(configs: Sequence[Config], study_presets: Sequence[str] = ()) -> None:
    """The checks of a study's jobs together: they declare one ``report`` section, and its
    ``report.comparisons`` and ``report.contrasts`` name variants the study runs
    (:func:`~.schema.comparisons_problem`, :func:`~.schema.contrasts_problem`), before the first job trains.

    A job's variant is its ``variant`` label; a job without one goes by its D's label
    (:func:`~.naming.disc_label`), as the report labels runs that differ only in D (``compare``'s). A sweep
    may run part of a study (``experiment=baselines variant=fair_sn train.seed=3,4,5``): the variants of the
    study's own axis, ``study_presets`` (``configs/variant`` names), count too; they are composed only when
    the jobs lack a declared comparison or the SN baseline.
    """
    sections = {json.dumps(asdict(cfg.report), sort_keys=True) for cfg in configs}
    if len(sections) > 1:
        raise UsageError(f"report sections {'; '.join(sorted(sections))} are not allowed in one study: its jobs "
                         "declare one report section (set report.* for the whole study, not per job)")
    _check_study_tuning(configs, study_presets)
    if not configs or not (configs[0].report.comparisons or configs[0].report.contrasts):
        return
    comparisons, contrasts = configs[0].report.comparisons, configs[0].report.contrasts
    problem = contrast_pairs_problem(contrasts)
    if problem is not None:
        raise UsageError(problem)
    named = set(comparisons).union(*map(set, contrasts))
    is_sn = {cfg.variant or disc_label(cfg.disc): cfg.disc.kind == "sn" for cfg in configs}
    if named - set(is_sn) or (comparisons and not any(is_sn.values())):
        for preset in (compose_config([f"variant={name}"]) for name in study_presets):
            is_sn.setdefault(preset.variant, preset.disc.kind == "sn")
    sn_labels = {label for label in is_sn if is_sn[label]}
    problem = (comparisons_problem(comparisons, set(is_sn), sn_labels)
               or contrasts_problem(contrasts, set(is_sn), sn_labels))
    if problem is not None:
        raise UsageError(problem)


def _check_study_tuning(configs: Sequence[Config], study_presets: Sequence[str]) -> None:
    """A tuning protocol (``tuning.confirm_seeds`` set) declared once for the study, its grids equal and
    log-spaced and its seeds apart (:func:`~.tuning.tuning_problem`). The grids are the study's own variant
    axis (``study_presets``) where the jobs run part of it: the confirm step runs one setting per method."""
    sections = {json.dumps(asdict(cfg.tuning), sort_keys=True) for cfg in configs}
    if len(sections) > 1:
        raise UsageError(f"tuning sections {'; '.join(sorted(sections))} are not allowed in one study: its jobs "
                         "declare one tuning protocol (set tuning.* for the whole study, not per job)")
    if not configs or not configs[0].tuning.confirm_seeds:
        return
    is_sn = {cfg.variant or disc_label(cfg.disc): cfg.disc.kind == "sn" for cfg in configs}
    if len(is_sn) < len(study_presets):
        for preset in (compose_config([f"variant={name}"]) for name in study_presets):
            is_sn.setdefault(preset.variant, preset.disc.kind == "sn")
    problem = tuning_problem(configs[0].tuning, is_sn, {cfg.train.seed for cfg in configs}, configs[0].report.alpha)
    if problem is not None:
        raise UsageError(problem)


def _check_disc(disc: DiscConfig) -> None:
    """The disc keys that contradict each other (Note [one scale per spectrum])."""
    positive = {"disc.clip_value": disc.clip_value, "disc.penalty_weight": disc.penalty_weight,
                "disc.sigma": disc.sigma, "disc.tau": disc.tau, "disc.gain": disc.gain}
    for key, value in positive.items():
        if not (value > 0 and math.isfinite(value)):
            _fail(f"{key}={value} is not allowed: use a finite number > 0")
    flat_allowed = disc.spectrum == "fixed"  # eps = 1: every value sigma; a learned curve needs eps < 1
    if not (0 < disc.eps < 1 or flat_allowed and disc.eps == 1):
        interval = "(0, 1] for disc.spectrum=fixed" if flat_allowed else f"(0, 1) for disc.spectrum={disc.spectrum}"
        _fail(f"disc.eps={disc.eps} is not allowed: the smallest/largest singular value ratio must lie in {interval}")
    if disc.max_value is not None and not disc.max_value > 0:
        _fail(f"disc.max_value={disc.max_value} is not allowed: use a number > 0, or null to learn the top value")
    if disc.normalize != "none" and disc.kind != "stiefel":
        _fail(f"disc.normalize={disc.normalize} is not allowed with disc.kind={disc.kind}: it rescales a "
              "Stiefel spectrum; use disc.kind=stiefel or disc.normalize=none")
    if disc.kind != "stiefel":
        return
    # Note [one scale per spectrum]
    # ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    # The overall scale of lambda is set by exactly one key: a curve's sigma (fixed or learned), a grid's
    # max_value (or, with max_value=null, the grid's own top value, learned), or the Frobenius target.
    # Two keys that both claim it would leave one silently ignored, so the combination is refused.
    if disc.normalize == "frobenius":
        if disc.normalize_target is None or not disc.normalize_target > 0:
            _fail(f"disc.normalize_target={disc.normalize_target} is not allowed with disc.normalize=frobenius: "
                  "use the Frobenius norm ||W||_F every layer gets, a number > 0")
        # a curve's max_value is the grid-only key's default, unused by a curve: only a grid's would clash
        if disc.spectrum == "grid" and disc.max_value is not None:
            _fail(f"disc.max_value={disc.max_value} is not allowed with disc.normalize=frobenius: the Frobenius "
                  "target sets the scale of lambda (it would win); set disc.max_value=null")
    elif disc.spectrum != "grid" and disc.max_value not in (None, GRID_MAX_VALUE_DEFAULT):
        # a curve ignores max_value; only one set away from the grid-only key's default says something
        # that contradicts the curve's sigma (the default itself never blocks a sigma or a learned sigma)
        if disc.spectrum == "curve" and "sigma" in disc.learn:
            _fail(f"disc.max_value={disc.max_value} is not allowed with a learned sigma "
                  f"(disc.learn={[str(name) for name in disc.learn]}): the max_value would pin what sigma learns; set "
                  "disc.max_value=null to learn the top value")
        if disc.max_value != disc.sigma:
            _fail(f"disc.max_value={disc.max_value} is not allowed with disc.spectrum={disc.spectrum} and "
                  f"disc.sigma={disc.sigma}: a curve's largest value is sigma (sigma wins, max_value rescales "
                  f"a grid only); set disc.sigma={disc.max_value}, or disc.max_value=null")


def compile_unavailable() -> str | None:
    """Why ``torch.compile`` cannot run in this process (None when it can)."""
    from torch._dynamo import is_dynamo_supported

    try:
        supported = is_dynamo_supported()
    except RuntimeError as error:  # e.g. a Python version this torch's dynamo does not support
        return str(error).splitlines()[0]
    if not supported:
        return f"torch {torch.__version__} has no dynamo on this platform"
    # inductor, torch.compile's default backend, builds C++ kernels for CPU code
    if not any(shutil.which(name) for name in (os.environ.get("CXX", "g++"), "g++", "c++", "clang++")):
        return "no C++ compiler on PATH for inductor's CPU kernels"
    return None


def check_device_options(cfg: Config, device: torch.device) -> None:
    """Checks of ``train.*`` that depend on the device; one-line ValueErrors like :func:`check_config`."""
    if cfg.train.precision == "fp16" and device.type != "cuda":
        _fail(f"train.precision=fp16 is not allowed on {device.type}: fp16 needs a CUDA device (loss scaling); "
              "use train.precision=bf16 or fp32")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        _fail(f"train.device={name!r} is not allowed: use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        _fail(f"train.device={name!r} is not allowed here: no CUDA device is available (use auto or cpu)")
    return device


def _load_checkpoint(path: Path) -> tuple[dict | None, str | None]:
    """``(checkpoint, None)``, or ``(None, why it cannot be used)`` for a missing, damaged or foreign file."""
    if not path.is_file():
        return None, "missing"
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises several types for a damaged zip / pickle
        return None, f"unreadable: {type(error).__name__}"
    if not isinstance(checkpoint, dict) or "config" not in checkpoint or "step" not in checkpoint:
        return None, "not a stiefel_gan checkpoint"
    return checkpoint, None


@dataclass(frozen=True)
class ResumePoint:
    """The newest usable checkpoint of a run directory: ``path`` and what it holds; ``skipped`` is the
    newer ``last.pt`` that could not be used, with why (``None`` when ``last.pt`` itself is used)."""

    path: Path
    checkpoint: dict
    skipped: tuple[Path, str] | None = None

    @property
    def fallback_note(self) -> str | None:
        """The one line a run prints when it falls back to the previous checkpoint."""
        if self.skipped is None:
            return None
        path, why = self.skipped
        return f"{path} is {why}; resuming from {self.path} (step {self.checkpoint['step']})"


def resume_point(run_dir: Path) -> ResumePoint | None:
    """``last.pt``, or ``previous.pt`` when ``last.pt`` is missing, unreadable or not a checkpoint
    (a write cut short, a damaged disk); ``None`` when the run directory holds neither file.

    Raises :class:`UsageError` when checkpoint files exist and none can be used; the message names each
    file and never suggests deleting one.
    """
    paths = RunDir(run_dir)
    if not paths.has_checkpoint():
        return None
    checkpoint, why_not_last = _load_checkpoint(paths.checkpoint)
    if checkpoint is not None:
        return ResumePoint(paths.checkpoint, checkpoint)
    previous, why_not_previous = _load_checkpoint(paths.previous_checkpoint)
    if previous is not None:
        return ResumePoint(paths.previous_checkpoint, previous, skipped=(paths.checkpoint, why_not_last))
    _fail(f"no usable checkpoint in {run_dir}: {paths.checkpoint} is {why_not_last}, {paths.previous_checkpoint} is "
          f"{why_not_previous}; start a fresh run beside it without resume= (it gets a directory of its own)")


def config_mismatch(checkpoint: dict, cfg: Config) -> str | None:
    """The first key, other than :data:`RESUMABLE_KEYS`, where the checkpoint's config differs.

    A key the saved config lacks was added to the schema after the checkpoint was written; the run was
    trained as that key's default, so it continues with the default."""
    saved, wanted = flatten(checkpoint["config"]), flatten(config_dict(cfg))
    defaults = flatten(config_dict(Config()))
    for key in sorted(set(saved) | set(wanted)):
        was = saved.get(key, defaults.get(key))
        if key not in RESUMABLE_KEYS and was != wanted.get(key):
            return f"{key}={was!r}, not {wanted.get(key)!r}"
    return None


def checkpoint_to_resume(run_dir: Path, cfg: Config) -> ResumePoint:
    """The checkpoint ``resume=<run_dir>`` continues (:func:`resume_point`): of this very config, with
    steps left."""
    point = resume_point(run_dir)
    if point is None:
        _fail(f"resume={run_dir} is not allowed: it holds no checkpoint ({RunDir(run_dir).checkpoint} is missing)")
    mismatch = config_mismatch(point.checkpoint, cfg)
    if mismatch is not None:
        _fail(f"checkpoint {point.path} was written with {mismatch}: "
              f"resume with the run's own config (only {', '.join(RESUMABLE_KEYS[1:])} may change)")
    if point.checkpoint["step"] >= cfg.train.steps:
        _fail(f"resume={run_dir}: the run already did {point.checkpoint['step']} of train.steps={cfg.train.steps}; "
              "pass a larger train.steps to continue it")
    return point


def check_wandb_environment(mode: str) -> None:
    """A one-line ValueError for a ``WANDB_MODE`` that wandb would refuse deep inside ``wandb.init``
    (an empty value fails its settings validation with a pydantic traceback); checked with the config,
    before a run directory is claimed."""
    if mode != "disabled" and "WANDB_MODE" in os.environ and not os.environ["WANDB_MODE"].strip():
        raise ValueError(f"WANDB_MODE='' is not allowed: unset it (unset WANDB_MODE) or use one of "
                         f"{', '.join(WANDB_ENV_MODES)}")


def check_resume(cfg: Config) -> None:
    """``resume=<run dir>``: the directory exists and holds a readable checkpoint of this very config
    that has steps left (``resume=auto`` looks for its run when it starts: stiefel_gan.run.runner)."""
    if cfg.resume is None or cfg.resume == "auto":
        return
    run_dir = Path(cfg.resume)
    if not run_dir.is_dir():
        _fail(f"resume={cfg.resume} is not allowed: no such run directory (use a run directory or auto)")
    checkpoint_to_resume(run_dir, cfg)


def check_job(cfg: Config, here: bool = True) -> None:
    """Every check of one job, from its config and the files it names; a failure is a :class:`UsageError`.

    Nothing is built (no dataset, model, optimizer or feature extractor) and nothing is written: the
    run is built once, by the process that trains it (stiefel_gan.run.runner.prepare).
    ``here=False`` for a job that runs on another machine (a Slurm node): only the config is checked,
    since the data, the device and the run directories are the node's, not this machine's.
    """
    try:
        check_config(cfg, require_data=here)
        if here:
            check_device_options(cfg, resolve_device(cfg.train.device))
            check_resume(cfg)
    except UsageError:
        raise
    except ValueError as error:
        raise UsageError(one_line(error)) from None


def preflight(overrides: Sequence[str]) -> None:
    """Check a single run's command line before Hydra creates its output directory."""
    try:
        OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as error:
        raise UsageError(one_line(error)) from None
    check_job(job_config(overrides))


#: launcher keys that must be positive when set, with what they mean
POSITIVE_LAUNCHER_KEYS = {"timeout_min": "minutes per job", "cpus_per_task": "CPUs per task",
                          "mem_gb": "GB of memory", "nodes": "nodes", "tasks_per_node": "tasks per node",
                          "array_parallelism": "jobs running at once"}


def check_launcher(launcher: DictConfig) -> None:
    """The hydra-submitit-launcher settings a scheduler would reject late (or worse, accept)."""
    target = str(launcher.get("_target_", ""))
    if "submitit_launcher" not in target:
        return
    gpus = launcher.get("gpus_per_node")
    if gpus is not None and gpus < 0:
        raise UsageError(f"hydra.launcher.gpus_per_node={gpus} is not allowed: use an integer >= 0")
    for key, meaning in POSITIVE_LAUNCHER_KEYS.items():
        value = launcher.get(key)
        if value is not None and value < 1:
            raise UsageError(f"hydra.launcher.{key}={value} is not allowed: use an integer >= 1 ({meaning})")
    if target.endswith("SlurmLauncher") and shutil.which("sbatch") is None:
        raise UsageError("hydra/launcher=submitit_slurm is not allowed here: Slurm's sbatch is not on PATH "
                         "(use hydra/launcher=submitit_local or basic on a machine without Slurm)")


#: wandb's own spellings of the resolved modes that ``WANDB_MODE`` may hold.
WANDB_ENV_MODES = {"online": "online", "run": "online", "offline": "offline", "dryrun": "offline",
                    "disabled": "disabled"}
