"""Writing finished steps on a thread of their own, so that a step's file is written while the
implementation computes the next one. The queue is bounded: the recording thread waits only when
`DEPTH` steps are waiting to be written, so memory stays a few steps whatever the run's speed.

Crash guarantees are the writer's own: each step is written to a temporary name and renamed into place
(format._write_then_rename), so a killed run keeps every step whose write finished and never shows half
a step. The first write that fails stops the thread's work: later steps are dropped, and the failure
is raised, naming its file, at the next step boundary or at close()."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from harness.spec.records import Step

DEPTH = 2  # finished steps that may wait to be written before the recording thread waits


class BackgroundWriter:
    """One daemon thread that runs each step's write in the order the steps were handed over."""

    def __init__(self, threaded: bool = True) -> None:
        self.threaded = threaded  # False: each write runs when handed over (the baseline the benchmark measures)
        self._queue: queue.Queue[tuple[Step, str, Callable[[], None]] | None] = queue.Queue(maxsize=DEPTH)
        self.written: list[Step] = []  # the steps whose file is in place, in order
        self.failure: tuple[str, Exception] | None = None  # (the file, why) of the first write that failed
        self._thread: threading.Thread | None = None

    def put(self, step: Step, path: str, write: Callable[[], None]) -> None:
        """Hand over one step's write (`path` names its file); waits while DEPTH steps are queued."""
        if not self.threaded:
            self._write(step, path, write)
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="memstate-writer", daemon=True)
            self._thread.start()
        self._queue.put((step, path, write))

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                self._write(*job)
            finally:
                self._queue.task_done()

    def _write(self, step: Step, path: str, write: Callable[[], None]) -> None:
        if self.failure is None:  # after a failure nothing more is written: the run stops there
            try:
                write()
                self.written.append(step)
            except Exception as e:  # noqa: BLE001 - an OSError, or a bug: either way the thread must live on, or
                self.failure = (path, e)  # the recording thread would wait forever on a full queue

    def stop(self) -> None:
        """Write what is queued, then end the thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
