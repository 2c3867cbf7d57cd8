"""Progress bars and messages for long work, always on stderr so that stdout stays clean for `--json`."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from rich.console import Console  # noqa: F401  (re-exported for tables on stdout)
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

stderr = Console(stderr=True)


@contextmanager
def progress_bar() -> Iterator[Progress]:
    """A rich progress display with counts, elapsed time and ETA; add tasks with `.add_task(desc, total=N)`."""
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=stderr, transient=False) as progress:
        yield progress


def info(message: str) -> None:
    stderr.print(message, highlight=False)
