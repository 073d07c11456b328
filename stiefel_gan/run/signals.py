"""Stopping a run on a signal: SIGTERM / SIGINT (Slurm before preemption, ``timeout``, Ctrl-C) become a
request the training loop honours between steps or an exception that ends an evaluation at once, and
:class:`RunInterrupted` carries the exit status.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..config.paths import stop_requested


class RunInterrupted(RuntimeError):
    """A signal stopped a run after writing its checkpoint; ``exit_status`` is 128 + signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_status = 128 + signum


class StopNow(BaseException):
    """Raised by the signal handler inside an :meth:`StopRequest.interruptible` phase.

    A ``BaseException``, like ``KeyboardInterrupt``: library code that catches ``Exception`` (a metric
    that falls back when its network is offline) must not swallow a stop."""

    def __init__(self, signum: int, phase: str):
        super().__init__(signum, phase)
        self.signum, self.phase = signum, phase


class StopRequest:
    """Turns SIGTERM / SIGINT (and SIGUSR1 / SIGUSR2 where a scheduler such as submitit handles them)
    into a flag the training loop polls after each step, or into :class:`StopNow` during a phase that
    may be cut short (:meth:`interruptible`).

    Note [Stopping between steps]: a signal arriving mid-step must not leave half-updated optimizer
    state in a checkpoint, nor a half-written checkpoint, and Python runs a handler between bytecodes,
    so during a step or a checkpoint write the handler only records the signal; the loop finishes the
    step (or the write), writes the checkpoint and returns.

    Note [Stopping an evaluation]: an evaluation, the diagnostics or a sample grid may take minutes,
    and nothing they compute can be checkpointed halfway, so there the handler raises
    :class:`StopNow` at once: the run ends with its last checkpoint as it was, and a resume redoes the
    steps after it, the evaluation included. A signal still pending when such a phase begins stops the
    run before the phase. A long call into C (gudhi, LAPACK) returns before Python runs the handler:
    each such call is bounded (the metrics' cost bounds) to keep a stop within seconds.

    A second signal while the first is pending ends the process at once: SIGTERM and SIGINT by their
    default action (exit status 128 + signal, even inside a long C call), a scheduler's signal through
    its previous handler. Handlers can only be installed from the main thread; elsewhere nothing is
    installed.

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
        self.phase: str | None = None  # the interruptible phase the signal cut short, if any
        self._interruptible: str | None = None  # the phase running now, when it may be cut short
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self._caught:  # a second signal: end the process now
            previous = signal.SIG_DFL if signum in self.SIGNALS else self._previous.get(signum, signal.SIG_DFL)
            signal.signal(signum, previous)
            signal.raise_signal(signum)
            return
        self.signum, self._caught = signum, True
        if self._interruptible is not None:
            self.phase = self._interruptible
            raise StopNow(signum, self.phase)

    def requested(self) -> bool:
        if self.signum is None and self.study is not None:
            self.signum = stop_requested(self.study)
        return self.signum is not None

    @contextmanager
    def interruptible(self, phase: str) -> Iterator[None]:
        """A phase a signal ends at once with :class:`StopNow` (Note [Stopping an evaluation]);
        ``phase`` names it in the message (``"final evaluation"``)."""
        if self.signum is not None:
            self.phase = phase
            raise StopNow(self.signum, phase)
        self._interruptible = phase
        try:
            yield
        finally:
            self._interruptible = None

    def forward(self) -> None:
        """Call the previous Python handler of the signal this process caught (submitit's requeue, or
        the sweeper's stop of the study); nothing for a stop that came through the study's stop file."""
        handler = self._previous.get(self.signum) if self._caught else None
        # Python's own SIGINT handler only raises KeyboardInterrupt, which the stop has already replaced
        if callable(handler) and handler is not signal.default_int_handler:
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
