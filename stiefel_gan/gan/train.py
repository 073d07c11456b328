"""The training loop: ``n_dis`` D updates per G update, logging, samples and checkpoints.

It knows no layer type: the :class:`~stiefel_gan.gan.builder.GAN` gives it optimizers, D's
regularization term and diagnostics.
"""

from __future__ import annotations

import math
import os
import sys
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..config.schema import PrecisionKind
from .builder import GAN
from .losses import discriminator_loss, generator_loss


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is left as it was."""


class CheckpointWriteFailed(RuntimeError):
    """Writing a checkpoint failed (a full disk, an I/O error); the checkpoints before it are intact."""


#: ``train.precision`` -> the autocast dtype of G's and D's forward passes (fp32: no autocast).
AUTOCAST_DTYPES = {PrecisionKind.fp32: None, PrecisionKind.bf16: torch.bfloat16, PrecisionKind.fp16: torch.float16}


@dataclass
class Precision:
    """The precision G and D run in: ``fp32``, or autocast to ``bf16`` / ``fp16``.

    Note [mixed precision]
        Under autocast the convolutions and dense layers run in the low precision. Parameters,
        gradients and optimizer states stay float32, the Stiefel layers build their weight
        ``diag(lambda) X`` with autocast off (Note [weight in the parameters' precision] in
        ``StiefelMatrix.forward``) and the losses are computed
        in float32 from the logits: the manifold algebra (projections, retractions) is float32, so
        ``X^T X = I`` and the spectrum ``lambda`` hold to float32 accuracy whatever the precision.
        fp16's narrow range needs loss scaling (CUDA only): one ``GradScaler`` per optimizer, saved
        in the checkpoint so that a resumed run continues with the same scale.
    """

    name: str = "fp32"
    device_type: str = "cpu"
    scalers: dict[str, torch.amp.GradScaler] = field(default_factory=dict)  # "d", "g" (fp16 only)

    @classmethod
    def build(cls, name: str, device: torch.device) -> "Precision":
        scalers = {"d": torch.amp.GradScaler(device.type), "g": torch.amp.GradScaler(device.type)} \
            if name == "fp16" else {}
        return cls(name, device.type, scalers)

    def autocast(self) -> AbstractContextManager:
        if AUTOCAST_DTYPES[self.name] is None:
            return torch.autocast(self.device_type, enabled=False)
        return torch.autocast(self.device_type, dtype=AUTOCAST_DTYPES[self.name])

    def backward_and_step(self, loss: Tensor, optimizer: torch.optim.Optimizer, which: str) -> None:
        """``loss.backward(); optimizer.step()``, through the loss scaler ``which`` under fp16."""
        scaler = self.scalers.get(which)
        if scaler is None:
            loss.backward()
            optimizer.step()
            return
        scaler.scale(loss).backward()
        scaler.step(optimizer)  # unscales the gradients; skips the step if any is inf or NaN
        scaler.update()


@dataclass
class LoopSettings:
    steps: int
    batch_size: int
    n_dis: int
    loss: str
    log_every: int
    checkpoint_every: int
    lr_decay: str = "constant"


@dataclass
class Periodic:
    """An action run every ``every`` generator updates, at each step in ``at``, and after the last one
    (``every=0`` and no ``at``: never)."""

    every: int
    action: Callable[[int, bool], None]  # (step, finished)
    at: frozenset[int] = frozenset()

    def due(self, step: int, finished: bool) -> bool:
        if self.every <= 0 and not self.at:
            return False
        return finished or step in self.at or (self.every > 0 and step % self.every == 0)


@dataclass
class TrainingState:
    """Everything a resumed run needs beyond the config, saved in every checkpoint."""

    gan: GAN
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    z_generator: torch.Generator  # draws every latent of the run (CPU: same stream on any device)
    fixed_z: Tensor  # latents of the sample grids
    step: int = 0  # generator updates done
    precision: Precision = field(default_factory=Precision)

    def state_dict(self) -> dict:
        return {"step": self.step, "generator": self.gan.generator.state_dict(),
                "discriminator": self.gan.discriminator.state_dict(), "opt_g": self.opt_g.state_dict(),
                "opt_d": self.opt_d.state_dict(), "z_generator": self.z_generator.get_state(),
                "fixed_z": self.fixed_z.cpu(),
                "grad_scalers": {k: v.state_dict() for k, v in self.precision.scalers.items()}}


def sample_fake(gan: GAN, n: int, z_generator: torch.Generator, device: torch.device,
                precision: Precision) -> Tensor:
    """``n`` samples of G for D's update (no gradient)."""
    generator = gan.generator
    with torch.no_grad(), precision.autocast():
        return generator(generator.sample_z(n, z_generator, device))


def discriminator_step(gan: GAN, opt_d: torch.optim.Optimizer, real: Tensor, fake: Tensor, loss: str,
                       precision: Precision, z_generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """One D update, then ``gan.after_discriminator_step()`` (weight clipping); returns the detached
    ``(loss_d, d_real, d_fake)``. ``z_generator`` draws the gradient penalty's interpolation weights.

    One real batch and one fake batch go through D concatenated, in a single forward: D has no batch
    statistics, so this equals two forwards, and each layer's weight (an SN power iteration, a Stiefel
    product ``diag(lambda) X``) is computed once per update instead of twice.
    """
    n = real.shape[0]
    with precision.autocast():
        logits = gan.discriminator(torch.cat((real, fake.to(real.dtype))))
    logits = logits.float()  # Note [mixed precision]: the loss in float32
    d_real, d_fake = logits[:n], logits[n:]
    loss_d = discriminator_loss(loss, d_real, d_fake) + gan.penalty(real, fake, z_generator)
    opt_d.zero_grad(set_to_none=True)
    precision.backward_and_step(loss_d, opt_d, "d")
    gan.after_discriminator_step()
    return loss_d.detach(), d_real.detach(), d_fake.detach()


def generator_step(gan: GAN, opt_g: torch.optim.Optimizer, z: Tensor, loss: str, precision: Precision) -> Tensor:
    """One G update through D (D's parameters get no gradient); returns the detached ``loss_g``."""
    discriminator = gan.discriminator
    discriminator.requires_grad_(False)  # G's update needs gradients through D, not of D
    try:
        with precision.autocast():
            logits = discriminator(gan.generator(z))
        loss_g = generator_loss(loss, logits.float())
        opt_g.zero_grad(set_to_none=True)
        precision.backward_and_step(loss_g, opt_g, "g")
    finally:
        discriminator.requires_grad_(True)
    return loss_g.detach()


def decay_learning_rates(optimizers: tuple[torch.optim.Optimizer, ...], decay: str, step: int, steps: int) -> None:
    """Set every parameter group's learning rate for generator update ``step + 1`` of ``steps``.

    ``linear``: ``lr = lr_0 (1 - step / steps)``, from ``lr_0`` at the first update to ``lr_0 / steps``
    at the last (the schedule of the standard 2-D mixture setups and of SN-GAN's ResNet runs).
    ``lr_0`` is kept in the group as ``initial_lr`` (torch's schedulers use the same key), which the
    optimizer's state dict saves; the rate is a function of the step alone, so a resumed run continues
    the schedule exactly with no scheduler state of its own.
    """
    if decay == "constant":
        return
    factor = 1.0 - step / steps
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group["lr"] = group["initial_lr"] * factor


def save_checkpoint(path: Path, payload: dict, previous: Path | None = None) -> None:
    """Write ``payload`` to ``path`` atomically, keeping the checkpoint it replaces as ``previous``.

    The new checkpoint goes to a temp file in the same directory, flushed to disk; only then is
    ``path`` renamed to ``previous`` and the temp file to ``path`` (``os.replace``, atomic on POSIX).
    So a crash or a full disk at any point leaves the last complete checkpoint readable as ``path``
    or, between the two renames, as ``previous``. A write that fails removes its temp file and raises
    :class:`CheckpointWriteFailed` naming the path and the error.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        # through a Python file, so that a failed write raises the OSError with its errno (torch's own
        # writer, given a path, reports a full disk as a RuntimeError without one)
        with open(tmp, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        if previous is not None and path.exists():
            os.replace(path, previous)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as error:
        failed_io = _os_error_behind(error)
        if failed_io is None:
            raise
        kept = [str(p) for p in (path, previous) if p is not None and p.exists()]
        kept_text = f"{' and '.join(kept)} kept as they were" if kept else "no checkpoint was written yet"
        raise CheckpointWriteFailed(f"writing {path} failed ({failed_io.strerror or failed_io}); {kept_text}") from None
    finally:
        tmp.unlink(missing_ok=True)  # a failed write leaves no partial file (after a success it is gone)


def _os_error_behind(error: BaseException) -> OSError | None:
    """``error`` itself if it is an OSError, else the OSError it was raised while handling, if any: a
    write torch's zip writer could not finish fails again when the writer closes, with a RuntimeError
    whose context is the original OSError."""
    while error is not None and not isinstance(error, OSError):
        error = error.__cause__ or error.__context__
    return error


def _check_finite(name: str, value: Tensor, step: int, checkpoint: Path, last_good: int | None) -> None:
    if not math.isfinite(value.item()):
        kept = f"the last good checkpoint is {checkpoint} (step {last_good})" if last_good is not None \
            else "no checkpoint was written yet"
        raise TrainingDiverged(f"{name} is {value.item()} at step {step}; {kept}")


def train(state: TrainingState, batches: Iterator[Tensor], settings: LoopSettings, device: torch.device,
          checkpoint_path: Path, payload: Callable[[TrainingState], dict],
          log: Callable[[int, dict], None], periodic: list[Periodic] = (),
          progress: bool = True, last_good: int | None = None,
          should_stop: Callable[[], bool] | None = None, previous_checkpoint: Path | None = None) -> TrainingState:
    """Run from ``state.step`` to ``settings.steps`` generator updates (:func:`discriminator_step`
    ``n_dis`` times, each on a fresh real and fake batch, then :func:`generator_step`).

    After each update: losses and ``gan.diagnostics()`` are logged every ``log_every`` steps, the
    ``periodic`` actions run (samples, evaluation, spectral diagnostics), then the checkpoint is written,
    so a checkpoint always follows everything logged for its step.

    ``should_stop`` is asked after each update and after each checkpoint write (a SIGTERM / SIGINT
    flag): when it says yes, the step's checkpoint is written (or finished) and the loop returns early,
    with ``state.step < settings.steps``. Each checkpoint write keeps the one before as
    ``previous_checkpoint`` (:func:`save_checkpoint`).
    With ``progress``, a terminal gets a progress bar and anything else (a file, a Slurm log) one line
    per ``log_every`` steps, since a bar's carriage returns would fill a log with partial lines.
    """
    gan, opt_g, opt_d, precision = state.gan, state.opt_g, state.opt_d, state.precision
    generator = gan.generator
    n = settings.batch_size
    progress_lines = progress and not sys.stderr.isatty()
    bar = tqdm(total=settings.steps, initial=state.step, disable=not progress or progress_lines, desc="train", unit="step",
               dynamic_ncols=True)
    window_start, window_steps = time.perf_counter(), 0
    while state.step < settings.steps:
        decay_learning_rates((opt_g, opt_d), settings.lr_decay, state.step, settings.steps)
        for _ in range(settings.n_dis):
            real = next(batches)
            fake = sample_fake(gan, n, state.z_generator, device, precision)
            loss_d, d_real, d_fake = discriminator_step(gan, opt_d, real, fake, settings.loss, precision, state.z_generator)
        z = generator.sample_z(n, state.z_generator, device)
        loss_g = generator_step(gan, opt_g, z, settings.loss, precision)

        state.step += 1
        window_steps += 1
        bar.update(1)
        _check_finite("loss_d", loss_d, state.step, checkpoint_path, last_good)
        _check_finite("loss_g", loss_g, state.step, checkpoint_path, last_good)
        finished = state.step == settings.steps

        if state.step % settings.log_every == 0 or finished:
            elapsed = time.perf_counter() - window_start
            scalars = {"loss/d": loss_d.item(), "loss/g": loss_g.item(), "d/real": d_real.mean().item(),
                       "d/fake": d_fake.mean().item(), "lr/g": opt_g.param_groups[0]["lr"],
                       **{f"lr/d_{g.get('name', i)}": g["lr"] for i, g in enumerate(opt_d.param_groups)},
                       **gan.diagnostics(), "perf/steps_per_s": window_steps / max(elapsed, 1e-9)}
            log(state.step, scalars)
            bar.set_postfix(loss_d=f"{scalars['loss/d']:.3f}", loss_g=f"{scalars['loss/g']:.3f}")
            if progress_lines:
                print(f"train: step {state.step}/{settings.steps} loss_d={scalars['loss/d']:.3f} "
                      f"loss_g={scalars['loss/g']:.3f} {scalars['perf/steps_per_s']:.2f} step/s",
                      file=sys.stderr, flush=True)
            window_start, window_steps = time.perf_counter(), 0
        for hook in periodic:
            if hook.due(state.step, finished):
                hook.action(state.step, finished)
        stop = should_stop is not None and should_stop()
        if state.step % settings.checkpoint_every == 0 or finished or stop:
            save_checkpoint(checkpoint_path, payload(state), previous_checkpoint)
            last_good = state.step
            stop = should_stop is not None and should_stop()  # a signal during the write: it is complete now
        if stop:
            break
    bar.close()
    return state
