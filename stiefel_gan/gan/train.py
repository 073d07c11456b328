"""The training loop: ``n_dis`` D updates per G update, logging, samples and checkpoints.

It knows no layer type: the :class:`~stiefel_gan.gan.builder.GAN` gives it optimizers, D's
regularization term and diagnostics.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .builder import GAN
from .losses import discriminator_loss, generator_loss

CHECKPOINT_NAME = "last.pt"


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is left as it was."""


@dataclass
class LoopSettings:
    steps: int
    batch_size: int
    n_dis: int
    loss: str
    log_every: int
    checkpoint_every: int


@dataclass
class Periodic:
    """An action run every ``every`` generator updates and after the last one (``every=0``: never)."""

    every: int
    action: Callable[[int, bool], None]  # (step, finished)


@dataclass
class TrainingState:
    """Everything a resumed run needs beyond the config, saved in every checkpoint."""

    gan: GAN
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    z_generator: torch.Generator  # draws every latent of the run (CPU: same stream on any device)
    fixed_z: Tensor  # latents of the sample grids
    step: int = 0  # generator updates done

    def state_dict(self) -> dict:
        return {"step": self.step, "generator": self.gan.generator.state_dict(),
                "discriminator": self.gan.discriminator.state_dict(), "opt_g": self.opt_g.state_dict(),
                "opt_d": self.opt_d.state_dict(), "z_generator": self.z_generator.get_state(),
                "fixed_z": self.fixed_z.cpu()}


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write atomically: a temp file in the same directory, then ``os.replace`` (a crash mid-write
    leaves the previous checkpoint intact)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _check_finite(name: str, value: Tensor, step: int, checkpoint: Path, last_good: int | None) -> None:
    if not math.isfinite(value.item()):
        kept = f"the last good checkpoint is {checkpoint} (step {last_good})" if last_good is not None \
            else "no checkpoint was written yet"
        raise TrainingDiverged(f"{name} is {value.item()} at step {step}; {kept}")


def train(state: TrainingState, batches: Iterator[Tensor], settings: LoopSettings, device: torch.device,
          checkpoint_path: Path, payload: Callable[[TrainingState], dict],
          log: Callable[[int, dict], None], periodic: list[Periodic] = (),
          progress: bool = True, last_good: int | None = None,
          should_stop: Callable[[], bool] | None = None) -> TrainingState:
    """Run from ``state.step`` to ``settings.steps`` generator updates.

    Each D update sees one real batch and one fake batch concatenated into a single forward: D has no
    batch statistics, so this equals two forwards, and each layer's weight (an SN power iteration, a
    Stiefel product ``diag(lambda) X``) is computed once per update instead of twice.

    After each update: losses and ``gan.diagnostics()`` are logged every ``log_every`` steps, the
    ``periodic`` actions run (samples, evaluation, spectral diagnostics), then the checkpoint is written,
    so a checkpoint always follows everything logged for its step.

    ``should_stop`` is asked after each update (a SIGTERM / SIGINT flag): when it says yes, the
    checkpoint is written and the loop returns early, with ``state.step < settings.steps``.
    With ``progress``, a terminal gets a progress bar and anything else (a file, a Slurm log) one line
    per ``log_every`` steps, since a bar's carriage returns would fill a log with partial lines.
    """
    gan, opt_g, opt_d = state.gan, state.opt_g, state.opt_d
    generator, discriminator = gan.generator, gan.discriminator
    n = settings.batch_size
    progress_lines = progress and not sys.stderr.isatty()
    bar = tqdm(total=settings.steps, initial=state.step, disable=not progress or progress_lines, desc="train", unit="step",
               dynamic_ncols=True)
    window_start, window_steps = time.perf_counter(), 0
    while state.step < settings.steps:
        for _ in range(settings.n_dis):
            real = next(batches)
            with torch.no_grad():
                fake = generator(generator.sample_z(n, state.z_generator, device))
            logits = discriminator(torch.cat((real, fake)))
            d_real, d_fake = logits[:n], logits[n:]
            loss_d = discriminator_loss(settings.loss, d_real, d_fake) + gan.penalty(real, fake, state.z_generator)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            gan.after_discriminator_step()

        discriminator.requires_grad_(False)  # G's update needs gradients through D, not of D
        loss_g = generator_loss(settings.loss, discriminator(generator(generator.sample_z(n, state.z_generator, device))))
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        discriminator.requires_grad_(True)

        state.step += 1
        window_steps += 1
        bar.update(1)
        _check_finite("loss_d", loss_d.detach(), state.step, checkpoint_path, last_good)
        _check_finite("loss_g", loss_g.detach(), state.step, checkpoint_path, last_good)
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
            if hook.every > 0 and (state.step % hook.every == 0 or finished):
                hook.action(state.step, finished)
        stop = should_stop is not None and should_stop()
        if state.step % settings.checkpoint_every == 0 or finished or stop:
            save_checkpoint(checkpoint_path, payload(state))
            last_good = state.step
        if stop:
            break
    bar.close()
    return state
