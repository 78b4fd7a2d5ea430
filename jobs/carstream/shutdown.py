"""Turning Ctrl+C and SIGTERM into an orderly stop of a long-running command."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals(threading.Event):
    """An event set by the first SIGINT or SIGTERM once `install()`ed.

    The first signal only sets the event, so the caller can stop its parts in order; a second
    one raises KeyboardInterrupt, for when that orderly stop itself hangs. Outside the main
    thread no handler can be installed and the event is only set by whoever holds it.
    """

    def __init__(self) -> None:
        super().__init__()
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.is_set():
            raise KeyboardInterrupt
        self.set()

    def install(self) -> None:
        """(Re)installs the handlers, e.g. after a library replaced them with its own
        (starting a SparkContext installs a SIGINT handler)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in STOP_SIGNALS:
            previous = signal.signal(signum, self._handle)
            self._previous.setdefault(signum, previous)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


@contextmanager
def stop_requested_on_signals() -> Iterator[StopSignals]:
    """StopSignals (a threading.Event) installed while the block runs, the previous
    handlers restored after."""
    signals = StopSignals()
    signals.install()
    try:
        yield signals
    finally:
        signals.restore()
