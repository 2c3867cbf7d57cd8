"""Progress bars and messages for long work, always on stderr so that stdout stays clean for `--json`. Under
torchrun only rank 0 shows them."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console  # noqa: F401  (re-exported for tables on stdout)
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from . import distributed

stderr = Console(stderr=True, soft_wrap=True)  # messages stay one line each in logs, whatever the width


class _LazyProgress(Progress):
    """Draws from the first progress update on, so that an error found before any work is the only line shown."""

    def start(self) -> None:
        pass

    def update(self, task_id, **fields) -> None:
        super().update(task_id, **fields)
        if not self.live.is_started:
            super().start()


@contextmanager
def progress_bar() -> Iterator[Progress]:
    """A rich progress display with counts, elapsed time and ETA; add tasks with `.add_task(desc, total=N)`."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with _LazyProgress(*columns, console=stderr, transient=False, disable=not distributed.is_main()) as progress:
        yield progress


def info(message: str) -> None:
    if distributed.is_main():
        stderr.print(message, highlight=False)


_quiet_lock = threading.Lock()
_quiet_depth = 0
_saved_fds: tuple[int, int] | None = None


@contextmanager
def quiet_native() -> Iterator[None]:
    """Silence stdout and stderr at the file-descriptor level: the converter, quantizer and interpreter log from
    C++, which Python's redirection cannot catch, and stdout must stay clean for --json. Threads (one per phone)
    share one redirection: the first in silences, the last out restores."""
    global _quiet_depth, _saved_fds
    with _quiet_lock:
        if _quiet_depth == 0:
            sys.stdout.flush()
            sys.stderr.flush()
            _saved_fds = os.dup(1), os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            os.close(devnull)
        _quiet_depth += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0 and _saved_fds is not None:
                sys.stdout.flush()
                sys.stderr.flush()
                for fd, saved in zip((1, 2), _saved_fds):
                    os.dup2(saved, fd)
                    os.close(saved)
                _saved_fds = None
