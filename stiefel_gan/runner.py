"""From a composed config to a trained, logged, checkpointed run directory.

Two phases, so that bad input never leaves anything behind:

1. :func:`prepare` checks the config, loads the data, builds the models and optimizers and, for
   ``resume=<run dir>`` or ``resume=auto``, reads and checks the checkpoint. It writes nothing.
2. :func:`execute` claims ``runs/<name>/<run_name>/`` (:mod:`stiefel_gan.rundir` owns its layout and
   the claim), writes the resolved config and trains.

SIGTERM and SIGINT (what Slurm sends before preemption, and Ctrl-C) end the current step, write the
checkpoint and raise :class:`RunInterrupted`; the same command with ``resume=auto`` continues it.
Under submitit, its requeue signal does the same and is then handed to submitit, which requeues the job.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torchvision.utils import save_image

from ._modules import eval_mode
from .config import Config, DiscConfig, disc_label, flatten
from .data import MIXTURES, build_dataset, data_shape, infinite_batches, missing_dataset
from .gan.builder import build_gan
from .gan.losses import LOSS_KINDS
from .diagnostics import DiscriminatorDiagnostics
from .evaluation import SampleQuality
from .gan.train import LR_DECAYS, PRECISIONS, LoopSettings, Periodic, Precision, TrainingState, train
from .manifold import OPTIMIZERS, SECOND_MOMENTS, load_optimizer_state
from .report import scatter_png
from .rundir import RunDir, candidates, claim_owner, claim_run_dir, label, new_owner, run_name_for
from .tracking import METRIC_GOALS, OBJECTIVES, WANDB_MODES, Tracker, check_environment, read_metrics

#: keys that may differ between a checkpoint's config and the config that resumes it
RESUMABLE_KEYS = ("resume", "train.steps", "train.progress", "train.device", "train.threads", "wandb.mode",
                  "wandb.tags")
FIXED_Z_SEED_OFFSET = 1_000_003  # the sample-grid latents get their own stream, apart from training's
DIAGNOSTIC_SEED_OFFSET = 3_000_017  # the real batch the spectral diagnostics see


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
    # disc.kind, disc.spectrum, disc.factorization, ... are Enums: OmegaConf has already refused a bad name
    choices = {"optim.name": (cfg.optim.name, OPTIMIZERS),
               "optim.second_moment": (cfg.optim.second_moment, SECOND_MOMENTS),
               "optim.lr_decay": (cfg.optim.lr_decay, LR_DECAYS),
               "loss.name": (cfg.loss.name, LOSS_KINDS), "wandb.mode": (cfg.wandb.mode, WANDB_MODES),
               "train.precision": (cfg.train.precision, tuple(PRECISIONS))}
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            _fail(f"{key}={value!r} is not allowed: use one of {', '.join(allowed)}")
    if cfg.wandb.mode in WANDB_MODES:
        check_environment(cfg.wandb.mode)
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
        _fail(f"optim.second_moment={cfg.optim.second_moment!r} is not allowed with optim.name={cfg.optim.name}: "
              "only radam has a per-entry variant (use optim.name=radam, or optim.second_moment=matrix)")
    if cfg.train.compile:
        unavailable = compile_unavailable()
        if unavailable:
            _fail(f"train.compile=true is not allowed here: torch.compile is unavailable ({unavailable}); "
                  "use train.compile=false")
    _check_disc(cfg.disc)
    missing = missing_dataset(cfg.data.name, cfg.data.root, cfg.data.download) if require_data else None
    if missing:
        _fail(missing)


def _check_disc(disc: DiscConfig) -> None:
    """The disc keys that contradict each other (Note [one scale per spectrum])."""
    positive = {"disc.clip_value": disc.clip_value, "disc.penalty_weight": disc.penalty_weight,
                "disc.sigma": disc.sigma, "disc.tau": disc.tau}
    for key, value in positive.items():
        if not value > 0:
            _fail(f"{key}={value} is not allowed: use a number > 0")
    if not 0 < disc.eps < 1:
        _fail(f"disc.eps={disc.eps} is not allowed: the smallest/largest singular value ratio must lie in (0, 1)")
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
        if disc.max_value is not None:
            _fail(f"disc.max_value={disc.max_value} is not allowed with disc.normalize=frobenius: the Frobenius "
                  "target sets the scale of lambda (it would win); set disc.max_value=null")
    elif disc.spectrum != "grid" and disc.max_value is not None:
        if disc.spectrum == "curve" and "sigma" in disc.learn:
            _fail(f"disc.max_value={disc.max_value} is not allowed with a learned sigma "
                  f"(disc.learn={list(disc.learn)}): the max_value would pin what sigma learns; set "
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


def default_run_name(cfg: Config) -> str:
    """``run_name``, else ``<variant>-s<seed>`` for a study variant, else ``<disc label>-<optim>-s<seed>``."""
    return run_name_for(cfg.run_name, cfg.variant, cfg.disc, cfg.optim.name, cfg.train.seed)


def run_tags(cfg: Config) -> list[str]:
    """W&B tags: D's kind and label, the optimizer, loss, dataset, the config's own tags; ``baseline``
    for the SN baseline (the variant whose ``disc.kind`` is ``sn``)."""
    tags = {str(cfg.disc.kind), disc_label(cfg.disc), label(cfg.optim.name), label(cfg.loss.name), cfg.data.name, *cfg.wandb.tags}
    return sorted(tags | ({"baseline"} if cfg.disc.kind == "sn" else set()))


def run_base(cfg: Config) -> Path:
    """``<out_dir>/<name>/<run name>``: where a run of this config goes (a suffix when it is taken)."""
    return Path(cfg.out_dir) / cfg.name / default_run_name(cfg)


#: keys that do not make a different variant: the seed, names, bookkeeping
NOT_VARIANT_KEYS = ("train.seed", "name", "run_name", "out_dir", "wandb.group", "wandb.log_checkpoints",
                    *RESUMABLE_KEYS)


def wandb_group(cfg: Config) -> str:
    """``wandb.group``, else ``<experiment>/<variant>``: all seeds of a variant in one W&B group.

    Without a study ``variant`` the label is ``<disc label>-<optim>-<digest>``, where the digest is taken
    over the whole config except :data:`NOT_VARIANT_KEYS`, so that two runs that differ in anything
    but the seed (a swept ``disc.tau``, say) never share a group and never get averaged together.
    """
    if cfg.wandb.group:
        return cfg.wandb.group
    if cfg.variant:
        return f"{cfg.name}/{cfg.variant}"
    flat = {k: v for k, v in flatten(config_dict(cfg)).items() if k not in NOT_VARIANT_KEYS}
    digest = hashlib.sha1(json.dumps(flat, sort_keys=True, default=label).encode()).hexdigest()[:8]
    return f"{cfg.name}/{disc_label(cfg.disc)}-{label(cfg.optim.name)}-{digest}"


def config_dict(cfg: Config) -> dict:
    """The config as plain Python values (choices as their strings: checkpoints, W&B)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True, enum_to_str=True)


def load_run_config(run_dir: Path) -> Config:
    """The typed config saved in a run directory."""
    path = RunDir(run_dir).config
    if not path.is_file():
        _fail(f"resume={run_dir} is not allowed: {path} does not exist (resume takes a run directory)")
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(path)))


def _read_checkpoint(path: Path) -> dict:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises several types for a damaged zip / pickle
        _fail(f"checkpoint {path} is corrupt or unreadable ({type(error).__name__}): delete the run directory "
              "or start a new run without resume=")
    if not isinstance(checkpoint, dict) or "config" not in checkpoint or "step" not in checkpoint:
        _fail(f"checkpoint {path} is not a stiefel_gan checkpoint: start a new run without resume=")
    return checkpoint


def _config_mismatch(checkpoint: dict, cfg: Config) -> str | None:
    """The first key, other than :data:`RESUMABLE_KEYS`, where the checkpoint's config differs."""
    saved, wanted = flatten(checkpoint["config"]), flatten(config_dict(cfg))
    for key in sorted(set(saved) | set(wanted)):
        if key not in RESUMABLE_KEYS and saved.get(key) != wanted.get(key):
            return f"{key}={saved.get(key)!r}, not {wanted.get(key)!r}"
    return None


def _load_checkpoint(run_dir: Path, cfg: Config) -> dict:
    path = RunDir(run_dir).checkpoint
    if not path.is_file():
        _fail(f"resume={run_dir} is not allowed: it holds no checkpoint ({path} is missing)")
    checkpoint = _read_checkpoint(path)
    mismatch = _config_mismatch(checkpoint, cfg)
    if mismatch is not None:
        _fail(f"checkpoint {path} was written with {mismatch}: "
              f"resume with the run's own config (only {', '.join(RESUMABLE_KEYS[1:])} may change)")
    if checkpoint["step"] >= cfg.train.steps:
        _fail(f"resume={run_dir}: the run already did {checkpoint['step']} of train.steps={cfg.train.steps}; "
              "pass a larger train.steps to continue it")
    return checkpoint


def _own_run(cfg: Config, base: Path, owner: str) -> tuple[Path | None, dict | None]:
    """The run directory this command continues, with its checkpoint, or ``(None, None)`` for a new run.

    A directory continues when ``owner`` claimed it (a requeued Slurm job: the same job id), or, with
    ``resume=auto``, when it holds a checkpoint of this very config (the same command run again).
    """
    for candidate in candidates(base):
        if not candidate.is_dir():
            return None, None
        mine = claim_owner(candidate) == owner
        path = RunDir(candidate).checkpoint
        if (mine or cfg.resume == "auto") and path.is_file():
            checkpoint = _read_checkpoint(path)
            mismatch = _config_mismatch(checkpoint, cfg)
            if mismatch is None:
                return candidate, checkpoint
            if mine:
                _fail(f"{candidate} was claimed by this job with another config ({mismatch}): "
                      "start a new run without resume=")
        elif mine:  # claimed, killed before its first checkpoint: start it over in place
            return candidate, None
    raise AssertionError("unreachable: candidates() never ends")


@dataclass
class PreparedRun:
    cfg: Config
    base: Path  # where the run goes; a -2, -3... suffix when another run holds it
    run_dir: Path | None  # the run this one continues, None for a new run
    owner: str  # who claims the run directory (rundir.claim_run_dir)
    device: torch.device
    state: TrainingState
    batches: object
    checkpoint: dict | None
    quality: SampleQuality
    diagnostics: DiscriminatorDiagnostics
    diagnostic_batch: torch.Tensor  # a fixed real batch and fixed latents, the same at every diagnostics step
    diagnostic_z: torch.Tensor

    @property
    def finished(self) -> bool:
        """A ``resume=auto`` or requeued run whose checkpoint already reached ``train.steps``."""
        return self.checkpoint is not None and self.checkpoint["step"] >= self.cfg.train.steps


def prepare(cfg: Config, base: Path | None = None, owner: str | None = None) -> PreparedRun:
    """Check and build everything; write nothing (see the module docstring).

    ``base`` is the run directory's name (default :func:`run_base`; the Hydra app passes its own
    output directory), ``owner`` who claims it (default: a one-off token; the Hydra app passes the
    submitit job id, which survives a requeue).
    """
    check_config(cfg)
    device = resolve_device(cfg.train.device)
    check_device_options(cfg, device)
    if cfg.train.threads is not None:
        torch.set_num_threads(cfg.train.threads)
    base = Path(base) if base is not None else run_base(cfg)
    owner = owner or new_owner()
    if cfg.resume is not None and cfg.resume != "auto":
        run_dir = Path(cfg.resume)
        if not run_dir.is_dir():
            _fail(f"resume={cfg.resume} is not allowed: no such run directory (use a run directory or auto)")
        checkpoint = _load_checkpoint(run_dir, cfg)
    else:
        run_dir, checkpoint = _own_run(cfg, base, owner)
    shape = data_shape(cfg.data.name, cfg.data.image_size)
    dataset = build_dataset(cfg.data.name, root=cfg.data.root, image_size=cfg.data.image_size,
                            download=cfg.data.download, seed=cfg.train.seed, n_samples=cfg.data.n_samples)
    torch.manual_seed(cfg.train.seed)  # model initialization (and SN's initial u) follow the seed
    gan = build_gan(cfg, shape).to(device)
    opt_g, opt_d = gan.optimizers(cfg.optim)
    if cfg.train.compile:  # in place: the state dict keys stay those of the eager modules
        gan.generator.compile()
        gan.discriminator.compile()
    z_generator = torch.Generator().manual_seed(cfg.train.seed)
    fixed_z = gan.generator.sample_z(cfg.train.n_grid_samples,
                                     torch.Generator().manual_seed(cfg.train.seed + FIXED_Z_SEED_OFFSET), "cpu")
    state = TrainingState(gan, opt_g, opt_d, z_generator, fixed_z, precision=Precision.build(cfg.train.precision, device))
    if checkpoint is not None:
        try:
            gan.generator.load_state_dict(checkpoint["generator"])
            gan.discriminator.load_state_dict(checkpoint["discriminator"])
            opt_g.load_state_dict(checkpoint["opt_g"])
            load_optimizer_state(opt_d, checkpoint["opt_d"])
            for name, scaler in state.precision.scalers.items():
                scaler.load_state_dict(checkpoint["grad_scalers"][name])
        except (KeyError, RuntimeError, ValueError) as error:
            _fail(f"checkpoint in {run_dir} does not fit this config ({type(error).__name__}): start a new run")
        z_generator.set_state(checkpoint["z_generator"])
        state.fixed_z, state.step = checkpoint["fixed_z"], checkpoint["step"]
    # each generator update consumes n_dis real batches: a resumed stream skips what was used
    batches = infinite_batches(dataset, cfg.train.batch_size, seed=cfg.train.seed, device=device,
                               start=state.step * cfg.optim.n_dis)
    quality = SampleQuality(cfg, dataset, device, run_dir)  # run_dir is set when it is claimed
    diagnostics = DiscriminatorDiagnostics(gan.discriminator, shape, cfg.loss.name, cfg.metrics.operator_norm_iters)
    diagnostic_seed = cfg.train.seed + DIAGNOSTIC_SEED_OFFSET
    diagnostic_batch = next(infinite_batches(dataset, cfg.train.batch_size, seed=diagnostic_seed, device=device))
    diagnostic_z = gan.generator.sample_z(cfg.train.batch_size, torch.Generator().manual_seed(diagnostic_seed), device)
    return PreparedRun(cfg, base, run_dir, owner, device, state, batches, checkpoint, quality, diagnostics,
                       diagnostic_batch, diagnostic_z)


class RunInterrupted(RuntimeError):
    """A signal stopped a run after writing its checkpoint; ``exit_status`` is 128 + signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_status = 128 + signum

    def __reduce__(self):  # it crosses process boundaries (compare's workers): keep both arguments
        return type(self), (self.args[0], self.exit_status - 128)


class _StopRequest:
    """Turns SIGTERM / SIGINT (and SIGUSR1 / SIGUSR2 where a scheduler such as submitit handles them)
    into a flag the training loop polls after each step.

    Note [Stopping between steps]: a signal arriving mid-step must not leave half-updated optimizer
    state in a checkpoint, and Python runs a handler between bytecodes, so the handler only records
    the signal; the loop finishes its step, writes the checkpoint and returns. A second signal while
    the first is pending goes to the previous handler at once, so a second Ctrl-C still stops a hung
    run. Handlers can only be installed from the main thread; elsewhere nothing is installed.

    Note [Chaining to submitit]: under submitit, Slurm's warning signal before a timeout or a
    preemption (SIGUSR2 by default) belongs to submitit, whose handler requeues the job and exits.
    Taken over here, it first lets the run checkpoint its current step; :meth:`forward` then hands
    the signal to submitit's handler, so the requeued job continues from that very step.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)
    SCHEDULER_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)  # taken only where a Python handler owns them

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # a second signal: the previous handler takes it now
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            signal.raise_signal(signum)
            return
        self.signum = signum

    def requested(self) -> bool:
        return self.signum is not None

    def forward(self) -> None:
        """Call the previous Python handler of the signal that stopped the run (submitit's requeue)."""
        handler = self._previous.get(self.signum)
        if callable(handler):
            handler(self.signum, None)

    def __enter__(self) -> "_StopRequest":
        owned = [s for s in self.SCHEDULER_SIGNALS if callable(signal.getsignal(s))]
        try:
            self._previous = {s: signal.signal(s, self._handle) for s in (*self.SIGNALS, *owned)}
        except ValueError:  # not the main thread
            self._previous = {}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _save_samples(path: Path, samples: torch.Tensor, data_name: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if samples.ndim == 4:
        save_image(samples, path, nrow=int(round(samples.shape[0] ** 0.5)), normalize=True, value_range=(-1, 1))
        return
    scatter_png(samples.numpy(), path, mixture=data_name if data_name in MIXTURES else None)


def _claim(prepared: PreparedRun) -> Path:
    """The run directory, claimed for ``prepared.owner`` (Note [Claiming a run directory])."""
    if prepared.run_dir is not None:  # continued: the claim passes to this process
        prepared.run_dir.mkdir(parents=True, exist_ok=True)
        RunDir(prepared.run_dir).claim.write_text(prepared.owner)
        return prepared.run_dir
    run_dir, _ = claim_run_dir(prepared.base, prepared.owner)
    hydra_records = RunDir(prepared.base).hydra
    if run_dir != prepared.base and hydra_records.is_dir():
        # Hydra wrote this job's .hydra/ into the name another run holds: the records go with the run
        shutil.copytree(hydra_records, RunDir(run_dir).hydra, dirs_exist_ok=True)
    return run_dir


def execute(prepared: PreparedRun) -> Path:
    """Claim the run directory and train; returns the run directory.

    A run continued by ``resume=auto`` (or a requeued job) that had already finished is returned as
    it is. Raises :class:`RunInterrupted` when SIGTERM / SIGINT stopped it (checkpoint written).
    """
    cfg, state = prepared.cfg, prepared.state
    if prepared.finished:
        print(f"stiefel-gan: {prepared.run_dir} already finished its train.steps={cfg.train.steps}; "
              "nothing to do", file=sys.stderr)
        return prepared.run_dir
    run_dir = _claim(prepared)
    paths = RunDir(run_dir)
    prepared.quality.run_dir = run_dir
    OmegaConf.save(OmegaConf.structured(cfg), paths.config)
    checkpoint = prepared.checkpoint or {}
    tracker = Tracker(run_dir, config_dict(cfg), project=cfg.wandb.project, entity=cfg.wandb.entity,
                      group=wandb_group(cfg), job_type=cfg.name, tags=run_tags(cfg), name=run_dir.name,
                      mode=cfg.wandb.mode, run_id=checkpoint.get("wandb_run_id"),
                      resume_step=checkpoint.get("step"), metric_goals=METRIC_GOALS)
    saved_config = config_dict(cfg)

    def payload(current: TrainingState) -> dict:
        return {**current.state_dict(), "config": saved_config, "wandb_run_id": tracker.run_id}

    generator = state.gan.generator

    def save_samples(step: int, finished: bool) -> None:
        with eval_mode(generator), torch.no_grad():
            samples = generator(state.fixed_z.to(prepared.device)).cpu()
        path = paths.samples(step)
        _save_samples(path, samples, cfg.data.name)
        tracker.log_images(step, {"samples": path})

    def evaluate(step: int, finished: bool) -> None:
        tracker.log(step, prepared.quality(generator, final=finished))
        if finished and paths.geometry_plot.is_file():
            tracker.log_images(step, {"geometry_rlt": paths.geometry_plot})

    def diagnose(step: int, finished: bool) -> None:
        with eval_mode(generator), torch.no_grad():
            fake = generator(prepared.diagnostic_z)
        measured = prepared.diagnostics(prepared.diagnostic_batch, fake)
        tracker.log(step, measured.scalars)
        for key, (xs, series) in measured.series.items():
            tracker.log_series(step, key, xs, series, title=key)
        paths.spectra_dir.mkdir(exist_ok=True)
        paths.spectra(step).write_text(json.dumps({"step": step, **measured.spectra}))

    settings = LoopSettings(steps=cfg.train.steps, batch_size=cfg.train.batch_size, n_dis=cfg.optim.n_dis,
                            loss=cfg.loss.name, log_every=cfg.train.log_every,
                            checkpoint_every=cfg.train.checkpoint_every, lr_decay=cfg.optim.lr_decay)
    periodic = [Periodic(cfg.train.sample_every, save_samples), Periodic(cfg.metrics.every or cfg.train.steps, evaluate),
                Periodic(cfg.metrics.diagnostics_every, diagnose)]
    stop = _StopRequest()
    with stop, tracker:
        train(state, prepared.batches, settings, prepared.device, paths.checkpoint,
              payload, tracker.log, periodic, progress=cfg.train.progress,
              last_good=checkpoint.get("step"), should_stop=stop.requested)
        if cfg.wandb.log_checkpoints:
            # the loop wrote the checkpoint of its last step, finished or stopped
            tracker.log_checkpoint(state.step, paths.checkpoint)
    if stop.signum is not None:
        stop.forward()  # submitit: requeue this job (it exits); otherwise nothing
        raise RunInterrupted(f"{signal.Signals(stop.signum).name} stopped the run at step {state.step} of "
                             f"{cfg.train.steps}; checkpoint in {paths.checkpoint}; continue it with the same "
                             f"command and resume=auto, or resume={run_dir}", stop.signum)
    return run_dir


def objective(run_dir: Path, cfg: Config) -> float | None:
    """The run's final value of its dataset's headline quality metric (:data:`OBJECTIVES`), the
    number a Hydra sweeper such as Optuna optimizes; ``None`` when the run never measured it."""
    key, _ = OBJECTIVES[cfg.data.name]
    values = [row[key] for row in read_metrics(run_dir) if key in row]
    return values[-1] if values else None


def run(cfg: Config, base: Path | None = None, owner: str | None = None) -> Path:
    """Prepare (no writes), then train. Returns the run directory."""
    return execute(prepare(cfg, base, owner))
