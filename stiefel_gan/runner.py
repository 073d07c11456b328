"""From a composed config to a trained, logged, checkpointed run directory.

Two phases, so that bad input never leaves anything behind:

1. :func:`prepare` checks the config, loads the data, builds the models and optimizers and, for
   ``resume=<run dir>``, reads and checks the checkpoint. It writes nothing.
2. :func:`execute` creates ``runs/<name>/<run_name>/``, writes the resolved ``config.yaml`` and trains.

Layout of a run directory::

    config.yaml            the resolved config
    metrics.jsonl          one JSON object per logged step
    series.jsonl           line plots (normalized spectra, lambda) per diagnostics step
    samples/step_*.png     sample grids from fixed latents (scatter plots for 2-D data)
    spectra/step_*.json    every D layer's spectra, norms and lambda per diagnostics step
    checkpoints/last.pt    G, D, both optimizers (geoopt state too), latent RNG, step, W&B id
    wandb/                 the W&B run (offline runs: `wandb sync <run dir>/wandb/offline-run-*`)
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torchvision.utils import save_image

from ._modules import eval_mode
from .config import DISC_KINDS, Config, flatten
from .data import build_dataset, data_shape, infinite_batches
from .gan.builder import build_gan
from .gan.losses import LOSS_KINDS
from .diagnostics import DiscriminatorDiagnostics
from .evaluation import SampleQuality
from .gan.train import CHECKPOINT_NAME, PRECISIONS, LoopSettings, Periodic, Precision, TrainingState, train
from .manifold import OPTIMIZERS, SECOND_MOMENTS, load_optimizer_state
from .report import scatter_png
from .tracking import WANDB_MODES, Tracker

#: keys that may differ between a checkpoint's config and the config that resumes it
RESUMABLE_KEYS = ("resume", "train.steps", "train.progress", "train.device", "train.threads", "wandb.mode",
                  "wandb.tags")
FIXED_Z_SEED_OFFSET = 1_000_003  # the sample-grid latents get their own stream, apart from training's
DIAGNOSTIC_SEED_OFFSET = 3_000_017  # the real batch the spectral diagnostics see


def _fail(message: str) -> None:
    raise ValueError(message)


def check_config(cfg: Config) -> None:
    """Checks that types cannot express; each failure is a one-line ValueError naming the fix."""
    positive = {"train.steps": cfg.train.steps, "train.batch_size": cfg.train.batch_size,
                "optim.n_dis": cfg.optim.n_dis, "train.log_every": cfg.train.log_every,
                "train.sample_every": cfg.train.sample_every, "train.checkpoint_every": cfg.train.checkpoint_every,
                "train.n_grid_samples": cfg.train.n_grid_samples, "metrics.n_samples": cfg.metrics.n_samples}
    for key, value in positive.items():
        if value < 1:
            _fail(f"{key}={value} is not allowed: use an integer >= 1")
    choices = {"disc.kind": (cfg.disc.kind, DISC_KINDS), "optim.name": (cfg.optim.name, OPTIMIZERS),
               "optim.second_moment": (cfg.optim.second_moment, SECOND_MOMENTS),
               "loss.name": (cfg.loss.name, LOSS_KINDS), "wandb.mode": (cfg.wandb.mode, WANDB_MODES),
               "train.precision": (cfg.train.precision, tuple(PRECISIONS))}
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            _fail(f"{key}={value!r} is not allowed: use one of {', '.join(allowed)}")
    for key, every in (("metrics.every", cfg.metrics.every), ("metrics.diagnostics_every", cfg.metrics.diagnostics_every)):
        if every < 0:
            _fail(f"{key}={every} is not allowed: use an interval >= 1, or 0 (metrics: only at the end; "
                  "diagnostics: never)")
    for key, lr in (("optim.lr_g", cfg.optim.lr_g), ("optim.lr_d", cfg.optim.lr_d)):
        if not lr > 0:
            _fail(f"{key}={lr} is not allowed: use a learning rate > 0")
    if cfg.disc.kind.startswith("stiefel") and cfg.optim.name == "adam":
        _fail(f"optim=adam is not allowed with disc={cfg.disc.kind}: Adam leaves the Stiefel manifold; "
              "use optim=radam (Adam off-manifold) or optim=rsgd")
    if cfg.optim.second_moment != "matrix" and cfg.optim.name != "radam":
        _fail(f"optim.second_moment={cfg.optim.second_moment!r} is not allowed with optim.name={cfg.optim.name}: "
              "only radam has a per-entry variant (use optim.name=radam, or optim.second_moment=matrix)")
    if cfg.train.compile:
        unavailable = compile_unavailable()
        if unavailable:
            _fail(f"train.compile=true is not allowed here: torch.compile is unavailable ({unavailable}); "
                  "use train.compile=false")


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
    return cfg.run_name or f"{cfg.disc.kind}-{cfg.optim.name}-s{cfg.train.seed}"


def config_dict(cfg: Config) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)


def load_run_config(run_dir: Path) -> Config:
    """The typed config saved in a run directory."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        _fail(f"resume={run_dir} is not allowed: {path} does not exist (resume takes a run directory)")
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(path)))


def _load_checkpoint(run_dir: Path, cfg: Config) -> dict:
    path = run_dir / "checkpoints" / CHECKPOINT_NAME
    if not path.is_file():
        _fail(f"resume={run_dir} is not allowed: it holds no checkpoint ({path} is missing)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises several types for a damaged zip / pickle
        _fail(f"checkpoint {path} is corrupt or unreadable ({type(error).__name__}): delete the run directory "
              "or start a new run without resume=")
    if not isinstance(checkpoint, dict) or "config" not in checkpoint or "step" not in checkpoint:
        _fail(f"checkpoint {path} is not a stiefel_gan checkpoint: start a new run without resume=")
    saved, wanted = flatten(checkpoint["config"]), flatten(config_dict(cfg))
    for key in sorted(set(saved) | set(wanted)):
        if key not in RESUMABLE_KEYS and saved.get(key) != wanted.get(key):
            _fail(f"checkpoint {path} was written with {key}={saved.get(key)!r}, not {wanted.get(key)!r}: "
                  f"resume with the run's own config (only {', '.join(RESUMABLE_KEYS[1:])} may change)")
    if checkpoint["step"] >= cfg.train.steps:
        _fail(f"resume={run_dir}: the run already did {checkpoint['step']} of train.steps={cfg.train.steps}; "
              "pass a larger train.steps to continue it")
    return checkpoint


@dataclass
class PreparedRun:
    cfg: Config
    run_dir: Path
    device: torch.device
    state: TrainingState
    batches: object
    checkpoint: dict | None
    quality: SampleQuality
    diagnostics: DiscriminatorDiagnostics
    diagnostic_batch: torch.Tensor  # a fixed real batch and fixed latents, the same at every diagnostics step
    diagnostic_z: torch.Tensor


def _unique_run_dir(cfg: Config) -> Path:
    base = Path(cfg.out_dir) / cfg.name / default_run_name(cfg)
    candidate, suffix = base, 2
    while candidate.exists():  # never overwrite an earlier run
        candidate, suffix = base.with_name(f"{base.name}-{suffix}"), suffix + 1
    return candidate


def prepare(cfg: Config) -> PreparedRun:
    """Check and build everything; write nothing (see the module docstring)."""
    check_config(cfg)
    device = resolve_device(cfg.train.device)
    check_device_options(cfg, device)
    if cfg.train.threads is not None:
        torch.set_num_threads(cfg.train.threads)
    checkpoint = None
    if cfg.resume is not None:
        run_dir = Path(cfg.resume)
        if not run_dir.is_dir():
            _fail(f"resume={cfg.resume} is not allowed: no such run directory")
        checkpoint = _load_checkpoint(run_dir, cfg)
    else:
        run_dir = _unique_run_dir(cfg)
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
    quality = SampleQuality(cfg, dataset, device, run_dir)
    diagnostics = DiscriminatorDiagnostics(gan.discriminator, shape, cfg.loss.name, cfg.metrics.operator_norm_iters)
    diagnostic_seed = cfg.train.seed + DIAGNOSTIC_SEED_OFFSET
    diagnostic_batch = next(infinite_batches(dataset, cfg.train.batch_size, seed=diagnostic_seed, device=device))
    diagnostic_z = gan.generator.sample_z(cfg.train.batch_size, torch.Generator().manual_seed(diagnostic_seed), device)
    return PreparedRun(cfg, run_dir, device, state, batches, checkpoint, quality, diagnostics,
                       diagnostic_batch, diagnostic_z)


def _save_samples(path: Path, samples: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if samples.ndim == 4:
        save_image(samples, path, nrow=int(round(samples.shape[0] ** 0.5)), normalize=True, value_range=(-1, 1))
        return
    scatter_png(samples.numpy(), path)


def execute(prepared: PreparedRun) -> Path:
    """Create the run directory and train; returns the run directory."""
    cfg, run_dir, state = prepared.cfg, prepared.run_dir, prepared.state
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.structured(cfg), run_dir / "config.yaml")
    checkpoint = prepared.checkpoint or {}
    tags = sorted({cfg.disc.kind, cfg.optim.name, cfg.loss.name, cfg.data.name, *cfg.wandb.tags}
                  | ({"baseline"} if cfg.disc.kind == "sn" else set()))
    tracker = Tracker(run_dir, config_dict(cfg), project=cfg.wandb.project, entity=cfg.wandb.entity,
                      group=cfg.wandb.group or cfg.name, tags=tags, name=run_dir.name, mode=cfg.wandb.mode,
                      run_id=checkpoint.get("wandb_run_id"), resume_step=checkpoint.get("step"))
    saved_config = config_dict(cfg)

    def payload(current: TrainingState) -> dict:
        return {**current.state_dict(), "config": saved_config, "wandb_run_id": tracker.run_id}

    generator = state.gan.generator

    def save_samples(step: int, finished: bool) -> None:
        with eval_mode(generator), torch.no_grad():
            samples = generator(state.fixed_z.to(prepared.device)).cpu()
        path = run_dir / "samples" / f"step_{step:06d}.png"
        _save_samples(path, samples)
        tracker.log_images(step, {"samples": path})

    def evaluate(step: int, finished: bool) -> None:
        tracker.log(step, prepared.quality(generator, final=finished))
        if finished and (run_dir / "geometry_rlt.png").is_file():
            tracker.log_images(step, {"geometry_rlt": run_dir / "geometry_rlt.png"})

    def diagnose(step: int, finished: bool) -> None:
        with eval_mode(generator), torch.no_grad():
            fake = generator(prepared.diagnostic_z)
        measured = prepared.diagnostics(prepared.diagnostic_batch, fake)
        tracker.log(step, measured.scalars)
        for key, (xs, series) in measured.series.items():
            tracker.log_series(step, key, xs, series, title=key)
        spectra_dir = run_dir / "spectra"
        spectra_dir.mkdir(exist_ok=True)
        (spectra_dir / f"step_{step:06d}.json").write_text(json.dumps({"step": step, **measured.spectra}))

    settings = LoopSettings(steps=cfg.train.steps, batch_size=cfg.train.batch_size, n_dis=cfg.optim.n_dis,
                            loss=cfg.loss.name, log_every=cfg.train.log_every,
                            checkpoint_every=cfg.train.checkpoint_every)
    periodic = [Periodic(cfg.train.sample_every, save_samples), Periodic(cfg.metrics.every or cfg.train.steps, evaluate),
                Periodic(cfg.metrics.diagnostics_every, diagnose)]
    with tracker:
        train(state, prepared.batches, settings, prepared.device, run_dir / "checkpoints" / CHECKPOINT_NAME,
              payload, tracker.log, periodic, progress=cfg.train.progress,
              last_good=checkpoint.get("step"))
    return run_dir


def run(cfg: Config) -> Path:
    """Prepare (no writes), then train. Returns the run directory."""
    return execute(prepare(cfg))
