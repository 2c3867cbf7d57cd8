"""Progress bars and messages for long work, always on stderr so that stdout stays clean for `--json`. Under
torchrun only rank 0 shows them."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console  # noqa: F401  (re-exported for tables on stdout)
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from . import distributed

stderr = Console(stderr=True)


@contextmanager
def progress_bar() -> Iterator[Progress]:
    """A rich progress display with counts, elapsed time and ETA; add tasks with `.add_task(desc, total=N)`."""
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=stderr, transient=False, disable=not distributed.is_main()) as progress:
        yield progress


def info(message: str) -> None:
    if distributed.is_main():
        stderr.print(message, highlight=False)


@contextmanager
def quiet_native() -> Iterator[None]:
    """Silence stdout and stderr at the file-descriptor level: the converter, quantizer and interpreter log from
    C++, which Python's redirection cannot catch, and stdout must stay clean for --json."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
