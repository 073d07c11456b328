"""From a composed config to a trained, logged, checkpointed run directory.

Two phases, so that bad input never leaves anything behind:

1. :func:`prepare` checks the config, loads the data, builds the models and optimizers and, for
   ``resume=<run dir>`` or ``resume=auto``, reads and checks the checkpoint. It writes nothing.
2. :func:`execute` claims ``runs/<name>/<run_name>/`` (:mod:`stiefel_gan.config.paths` owns its layout and
   the claim), writes the resolved config and trains.

SIGTERM and SIGINT (what Slurm sends before preemption, and Ctrl-C) end the current step, write the
checkpoint and raise :class:`RunInterrupted`; the same command with ``resume=auto`` continues it.
During an evaluation, the diagnostics or a sample grid they stop the run at once and nothing new is
saved: the last checkpoint stands and the resumed run redoes what came after it (Note [Stopping an
evaluation] in :mod:`stiefel_gan.run.signals`). Under submitit, its requeue signal does the same and is
then handed to submitit, which requeues the job.

Each checkpoint write keeps the one before (``checkpoints/previous.pt``); a resume whose ``last.pt`` is
unreadable falls back to it, says so in one line, and sets the unreadable file aside.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from omegaconf import OmegaConf
from torchvision.utils import save_image

from .._modules import eval_mode
from ..config.checks import (
    ResumePoint,
    _fail,
    check_config,
    check_device_options,
    checkpoint_to_resume,
    config_mismatch,
    resolve_device,
    resume_point,
)
from ..config.compose import one_line
from ..config.naming import run_tags, wandb_group
from ..config.paths import RunDir, run_base
from ..config.schema import Config, config_dict
from ..data.batches import infinite_batches
from ..data.datasets import data_shape
from ..data.mixtures import MIXTURES
from ..gan.builder import initial_gan, run_dataset, shapeless_layers
from ..gan.train import LoopSettings, Periodic, Precision, TrainingDiverged, TrainingState, train
from ..manifold import load_optimizer_state
from ..measure.diagnostics import DiscriminatorDiagnostics
from ..measure.plots import scatter_png
from ..measure.quality import SampleQuality
from ..measure.table import METRIC_GOALS, OBJECTIVES
from .records import read_metrics
from .rundir import candidates, claim_owner, claim_run_dir, new_owner
from .signals import RunInterrupted, StopNow, StopRequest
from .tracker import Tracker

FIXED_Z_SEED_OFFSET = 1_000_003  # the sample-grid latents get their own stream, apart from training's
DIAGNOSTIC_SEED_OFFSET = 3_000_017  # the real batch the spectral diagnostics see


def _own_run(cfg: Config, base: Path, owner: str) -> tuple[Path | None, ResumePoint | None]:
    """The run directory this command continues, with its checkpoint, or ``(None, None)`` for a new run.

    A directory continues when ``owner`` claimed it (a requeued Slurm job: the same job id), or, with
    ``resume=auto``, when it holds a checkpoint of this very config (the same command run again).
    """
    for candidate in candidates(base):
        if not candidate.is_dir():
            return None, None
        mine = claim_owner(candidate) == owner
        if (mine or cfg.resume == "auto") and RunDir(candidate).has_checkpoint():
            point = resume_point(candidate)
            mismatch = config_mismatch(point.checkpoint, cfg)
            if mismatch is None:
                return candidate, point
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
    run_dir: Path | None  # the run this one continues (None for a new run, until execute claims its directory)
    owner: str  # who claims the run directory (rundir.claim_run_dir)
    device: torch.device
    state: TrainingState
    batches: object
    resumed: ResumePoint | None  # the checkpoint this run continues from
    quality: SampleQuality
    diagnostics: DiscriminatorDiagnostics
    diagnostic_batch: torch.Tensor  # a fixed real batch and fixed latents, the same at every diagnostics step
    diagnostic_z: torch.Tensor

    @property
    def checkpoint(self) -> dict | None:
        return self.resumed.checkpoint if self.resumed is not None else None

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
        resumed = checkpoint_to_resume(run_dir, cfg)
    else:
        run_dir, resumed = _own_run(cfg, base, owner)
    checkpoint = resumed.checkpoint if resumed is not None else None
    shape = data_shape(cfg.data.name, cfg.data.image_size)
    dataset = run_dataset(cfg)
    gan = initial_gan(cfg, shape).to(device)
    shapeless = shapeless_layers(gan.discriminator, cfg.disc)
    if shapeless:
        print(f"stiefel-gan: a spectrum gives no shape to D layers with k <= 2 singular values (only sigma, or "
              f"sigma and eps): {', '.join(f'{name} (k={k})' for name, k in shapeless.items())}; "
              "choose D's Stiefel layers with disc.layers.include / disc.layers.exclude", file=sys.stderr)
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
    diagnostics = DiscriminatorDiagnostics(gan.discriminator, shape, cfg.loss.name, cfg.metrics.operator_norm_iters,
                                           logit_gain=cfg.disc.gain)
    diagnostic_seed = cfg.train.seed + DIAGNOSTIC_SEED_OFFSET
    diagnostic_batch = next(infinite_batches(dataset, cfg.train.batch_size, seed=diagnostic_seed, device=device))
    diagnostic_z = gan.generator.sample_z(cfg.train.batch_size, torch.Generator().manual_seed(diagnostic_seed), device)
    if resumed is not None and resumed.fallback_note is not None:
        print(f"stiefel-gan: {resumed.fallback_note}", file=sys.stderr)
    return PreparedRun(cfg, base, run_dir, owner, device, state, batches, resumed, quality, diagnostics,
                       diagnostic_batch, diagnostic_z)


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


def execute(prepared: PreparedRun, study: Path | None = None) -> Path:
    """Claim the run directory and train; returns the run directory.

    A run continued by ``resume=auto`` (or a requeued job) that had already finished is returned as
    it is. Raises :class:`RunInterrupted` when SIGTERM / SIGINT stopped it: between steps after writing
    the step's checkpoint, during an evaluation at once with the last checkpoint as it was; or, for a
    job of a study (``study``: its sweep directory), when the study was stopped (Note [Stopping a study]
    in :mod:`stiefel_gan.config.paths`). ``status.json`` and the W&B summary say how the run stands:
    running, then finished, diverged, failed or interrupted (:func:`ended_by`).
    """
    cfg, state = prepared.cfg, prepared.state
    if prepared.finished:
        print(f"stiefel-gan: {prepared.run_dir} already finished its train.steps={cfg.train.steps}; "
              "nothing to do", file=sys.stderr)
        return prepared.run_dir
    run_dir = prepared.run_dir = _claim(prepared)
    paths = RunDir(run_dir)
    skipped = prepared.resumed.skipped if prepared.resumed is not None else None
    if skipped is not None and skipped[0].is_file():
        # set aside, not deleted: the next write would otherwise rotate it into previous.pt
        os.replace(skipped[0], paths.unreadable_checkpoint)
    prepared.quality.run_dir = run_dir
    OmegaConf.save(OmegaConf.structured(cfg), paths.config)
    checkpoint = prepared.checkpoint or {}
    tracker = Tracker(run_dir, config_dict(cfg), project=cfg.wandb.project, entity=cfg.wandb.entity,
                      group=wandb_group(cfg), job_type=cfg.name, tags=run_tags(cfg), name=run_dir.name,
                      mode=str(cfg.wandb.mode), run_id=checkpoint.get("wandb_run_id"),
                      resume_step=checkpoint.get("step"), metric_goals=METRIC_GOALS)
    saved_config = config_dict(cfg)

    last_checkpoint = {"step": checkpoint.get("step")}  # the step of the newest checkpoint on disk

    def payload(current: TrainingState) -> dict:
        last_checkpoint["step"] = current.step
        return {**current.state_dict(), "config": saved_config, "wandb_run_id": tracker.run_id}

    generator = state.gan.generator

    def save_samples(step: int, finished: bool) -> None:
        with eval_mode(generator), torch.no_grad():
            samples = generator(state.fixed_z.to(prepared.device)).cpu()
        path = paths.samples(step)
        _save_samples(path, samples, cfg.data.name)
        tracker.log_images(step, {"samples": path})

    def evaluate(step: int, finished: bool) -> None:
        evaluation = prepared.quality(generator, final=finished)
        tracker.log(step, evaluation.scores)
        if evaluation.unavailable:
            tracker.log_statuses(step, {f"{key}_status": error.reason for key, error in evaluation.unavailable.items()})
            for error in dict.fromkeys(evaluation.unavailable.values()):  # one line per computation, in order
                keys = [key for key, e in evaluation.unavailable.items() if e is error]
                print(f"stiefel-gan: step {step}: {', '.join(keys)} unavailable, logged as NaN: {error}",
                      file=sys.stderr)
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
    stop = StopRequest(study)

    def interruptible(phase: str, action: Callable[[int, bool], None]) -> Callable[[int, bool], None]:
        def run_phase(step: int, finished: bool) -> None:
            with stop.interruptible(f"final {phase}" if finished else phase):
                action(step, finished)
        return run_phase

    periodic = [Periodic(cfg.train.sample_every, interruptible("sample grid", save_samples)),
                Periodic(cfg.metrics.every or cfg.train.steps, interruptible("evaluation", evaluate),
                         at=frozenset(cfg.metrics.at_steps)),
                Periodic(cfg.metrics.diagnostics_every, interruptible("diagnostics", diagnose))]
    cut_short = None
    with stop, tracker:
        tracker.set_status("running", f"training from step {state.step}", state.step)
        try:
            if prepared.checkpoint is None and cfg.metrics.diagnostics_every > 0:
                # D at its initialization: the reference every trained spectrum and norm is read against
                periodic[-1].action(0, False)
            train(state, prepared.batches, settings, prepared.device, paths.checkpoint,
                  payload, tracker.log, periodic, progress=cfg.train.progress,
                  last_good=checkpoint.get("step"), should_stop=stop.requested,
                  previous_checkpoint=paths.previous_checkpoint)
            if cfg.wandb.log_checkpoints:
                with stop.interruptible("checkpoint upload"):
                    # the loop wrote the checkpoint of its last step, finished or stopped
                    tracker.log_checkpoint(state.step, paths.checkpoint)
        except StopNow as error:
            cut_short = error
        except BaseException as error:
            tracker.set_status(*ended_by(error), state.step)
            raise
        # a stop that came with the last step's checkpoint finished the run all the same; one that cut
        # the final evaluation short did not (its checkpoint was not written)
        finished = stop.signum is None or (cut_short is None and state.step >= cfg.train.steps)
        stopped = None if finished else _interruption(stop.signum, cut_short, state.step, cfg.train.steps,
                                                      paths, last_checkpoint["step"], run_dir)
        if stopped is None:
            tracker.set_status("finished", f"reached train.steps={cfg.train.steps}", state.step)
        else:
            tracker.set_status("interrupted", str(stopped), state.step)
    if stop.signum is not None:
        stop.forward()  # submitit: requeue this job (it exits); in a study run here: stop the study
    if stopped is not None:
        raise stopped
    return run_dir


def _interruption(signum: int, cut_short: StopNow | None, step: int, steps: int, paths: RunDir,
                  checkpoint_step: int | None, run_dir: Path) -> RunInterrupted:
    """What a stopped run says: between steps, the checkpoint of the step it finished; during an
    evaluation (``cut_short``), that nothing of that step was saved and which checkpoint stands."""
    name = signal.Signals(signum).name
    how = f"continue it with the same command and resume=auto, or resume={run_dir}"
    if cut_short is None:
        return RunInterrupted(f"{name} stopped the run at step {step} of {steps}; checkpoint in "
                              f"{paths.checkpoint}; {how}", signum)
    kept = f"its last checkpoint, {paths.checkpoint}, is of step {checkpoint_step}" \
        if checkpoint_step is not None else "no checkpoint was written yet"
    return RunInterrupted(f"{name} stopped the run during its {cut_short.phase} at step {step} of {steps}, "
                          f"which saved nothing; {kept}; {how} (what came after that checkpoint is redone)", signum)


def ended_by(error: BaseException) -> tuple[str, str]:
    """The status (:data:`~stiefel_gan.config.paths.RUN_STATUSES`) and one-line reason of a run that
    ``error`` ended: ``diverged`` for a non-finite loss, ``interrupted`` for a KeyboardInterrupt (a
    second Ctrl-C), ``failed`` for anything else (a bug, a full disk)."""
    if isinstance(error, TrainingDiverged):
        return "diverged", str(error)
    if isinstance(error, (KeyboardInterrupt, RunInterrupted)):
        return "interrupted", str(error) or type(error).__name__
    return "failed", f"{type(error).__name__}: {one_line(error)}"


def objective(run_dir: Path, cfg: Config) -> float | None:
    """The run's final value of its dataset's headline quality metric (:data:`OBJECTIVES`), the
    number a Hydra sweeper such as Optuna optimizes; ``None`` when the run never measured it."""
    key, _ = OBJECTIVES[cfg.data.name]
    values = [row[key] for row in read_metrics(run_dir) if key in row]
    return values[-1] if values else None


def run(cfg: Config, base: Path | None = None, owner: str | None = None) -> Path:
    """Prepare (no writes), then train. Returns the run directory."""
    return execute(prepare(cfg, base, owner))
