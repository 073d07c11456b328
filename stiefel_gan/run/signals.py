"""Stopping a run on a signal: SIGTERM / SIGINT (Slurm before preemption, ``timeout``, Ctrl-C) become a
request the training loop honours between steps, and :class:`RunInterrupted` carries the exit status.
"""

from __future__ import annotations

import signal
from pathlib import Path

from ..config.paths import stop_requested


class RunInterrupted(RuntimeError):
    """A signal stopped a run after writing its checkpoint; ``exit_status`` is 128 + signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_status = 128 + signum


class StopRequest:
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
    the signal to submitit's handler, so the requeued job continues from that very step. In a study
    run in this process (Hydra's basic launcher), the previous handler is the sweeper's, and the
    forwarded signal stops the study.

    ``study``: the sweep directory of the study this run is a job of. A stop the study's command wrote
    there (Note [Stopping a study] in :mod:`stiefel_gan.config.paths`) stops the run as a signal to
    this process would; it is polled with each :meth:`requested`, one ``stat`` per step.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)
    SCHEDULER_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)  # taken only where a Python handler owns them

    def __init__(self, study: Path | None = None):
        self.signum: int | None = None
        self.study = study
        self._caught = False  # the signal came to this process (not through the study's stop file)
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self._caught:  # a second signal: the previous handler takes it now
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            signal.raise_signal(signum)
            return
        self.signum, self._caught = signum, True

    def requested(self) -> bool:
        if self.signum is None and self.study is not None:
            self.signum = stop_requested(self.study)
        return self.signum is not None

    def forward(self) -> None:
        """Call the previous Python handler of the signal this process caught (submitit's requeue, or
        the sweeper's stop of the study); nothing for a stop that came through the study's stop file."""
        handler = self._previous.get(self.signum) if self._caught else None
        if callable(handler):
            handler(self.signum, None)

    def __enter__(self) -> "StopRequest":
        owned = [s for s in self.SCHEDULER_SIGNALS if callable(signal.getsignal(s))]
        try:
            self._previous = {s: signal.signal(s, self._handle) for s in (*self.SIGNALS, *owned)}
        except ValueError:  # not the main thread
            self._previous = {}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
