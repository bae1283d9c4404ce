"""Progress bars that also show in a log file.

rich draws a live bar only on a terminal; redirected to a file (a background run, CI) it prints
the bar once, when it ends, so a run of hours says nothing until it is over. Off a terminal this
bar prints its current line every `every` seconds instead."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from rich.progress import Progress, ProgressColumn, TaskID

T = TypeVar("T")


class Bar(Progress):
    """`rich.progress.Progress` that, off a terminal, prints its tasks' line every `every` seconds."""

    def __init__(self, *columns: str | ProgressColumn, every: float = 60.0, **kwargs: Any) -> None:
        super().__init__(*columns, **kwargs)
        self.every = every
        self._printed = time.monotonic()

    def update(self, task_id: TaskID, **kwargs: Any) -> None:
        super().update(task_id, **kwargs)
        self._log()

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._log()

    def _log(self) -> None:
        if self.disable or self.console.is_terminal or time.monotonic() - self._printed < self.every:
            return
        self._printed = time.monotonic()
        self.console.print(self.make_tasks_table(self.tasks))


def track(items: Iterable[T], description: str, total: int | None = None, disable: bool = False) -> Iterator[T]:
    """`rich.progress.track` with a `Bar`: description, bar, count, rate-free ETA."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn(f"[bold]{description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn())  # fmt: skip
    total = total if total is not None else len(items)  # type: ignore[arg-type]
    with Bar(*columns, disable=disable) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)
