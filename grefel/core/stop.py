"""Stopping on a signal, for a requeue: what a scheduler sends before it takes the machine back.

Slurm sends SIGTERM when it preempts or requeues a job (``scontrol requeue``) and SIGUSR2 shortly
before the time limit (the study's Slurm jobs ask for it), to every process of the job, data-loader
workers included. A long job takes either as "save and exit, to be continued", never as a crash:

* loader workers ignore both (:func:`ignore_stop_signals`, their ``worker_init_fn``): the main process
  decides, and a worker killed by the signal would otherwise end the run with a DataLoader error;
* the main process, inside :func:`deferred_stop`, only notes the signal; the training loop looks at
  :func:`stop_requested` between steps, keeps its last.pt whole and raises :class:`StopRequested`;
* the process then exits with :data:`EXIT_STOPPED` (128 + SIGTERM), the status of a job that stopped
  to be continued (a study marks the run stopped or requeued, and resumes it from last.pt).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)
EXIT_STOPPED = 128 + signal.SIGTERM  # 143: stopped to be continued (not failed)

_noted: list[int] = []


class StopRequested(BaseException):
    """A stop signal arrived: the work stopped where it could be continued. ``signum``: which signal;
    ``message``: one line saying what was kept and how to go on. A BaseException, so that no
    ``except Exception`` takes it for a failure."""

    def __init__(self, signum: int, message: str = ""):
        self.signum = signum
        self.message = message or f"stopped by {signal.Signals(signum).name}"
        super().__init__(self.message)

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


def ignore_stop_signals(*_) -> None:
    """Ignore SIGTERM and SIGUSR2 in this process (a DataLoader ``worker_init_fn``: the worker's parent
    decides when to stop, and ends its workers itself)."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


def _note(signum, frame) -> None:
    _noted.append(signum)


@contextlib.contextmanager
def deferred_stop() -> Iterator[None]:
    """Inside the block, SIGTERM and SIGUSR2 only note that a stop was asked for
    (:func:`stop_requested`); the previous handlers come back afterwards. Outside the main thread
    (where Python cannot set handlers) the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _noted.clear()
    old = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    for s in STOP_SIGNALS:
        signal.signal(s, _note)
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if _noted:  # the work ended before it looked: the signal goes to whoever handles it outside the block
        signal.raise_signal(_noted[0])


def stop_requested() -> int | None:
    """The stop signal noted inside :func:`deferred_stop`, or None."""
    return _noted[0] if _noted else None
