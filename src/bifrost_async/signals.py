"""SIGTERM and SIGINT outside the supervised passes: at once, in a known way.

During the passes ``runner.watch_signals`` owns both signals (a first one stops
gracefully, a second one ends the process with 130). Before it listens (start-up:
imports, the ledger, the catalog) and after it stopped (wind-down), nothing is being
committed, so a signal ends the process at once: with 0, or with 130 when a signal had
already stopped the run. Once the run's summary is written, signals are ignored: the
process is only exiting. This module is imported first by the command, so it must
stay light: no pyarrow, no pyiceberg.
"""

from __future__ import annotations

import logging
import os
import signal
from types import FrameType

__all__ = ["STOP_SIGNALS", "ExitOnSignal", "exit_on_signal", "ignore_signals"]

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ExitOnSignal:
    """A signal handler that logs the signal and ends the process with ``code``."""

    def __init__(self, code: int) -> None:
        self.code = code

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        logger.warning(
            "run.stopped reason=signal %s outside a pass exit=%d",
            signal.Signals(signum).name,
            self.code,
        )
        logging.shutdown()
        os._exit(self.code)


def exit_on_signal(code: int = 0) -> None:
    """From now on, SIGTERM or SIGINT ends the process at once with ``code``.

    Call it from the main thread only.
    """
    handler = ExitOnSignal(code)
    for signum in STOP_SIGNALS:
        signal.signal(signum, handler)


def ignore_signals() -> None:
    """From now on, SIGTERM and SIGINT are ignored (the process is only exiting).

    Python puts back the default action of a signal it handles when the interpreter
    shuts down, which would end an exiting process with 143; an ignored signal stays
    ignored through that.
    """
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
