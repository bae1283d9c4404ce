"""The task registry: every evaluation task, by name. Names and choices elsewhere (the CLI's help,
configs' task fields through `TaskName`) are derived from `TASKS`, never restated."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator

from aetheris.errors import UserError
from aetheris.eval.tasks.base import Item, Task, UnknownLanguageError, resolve_language
from aetheris.eval.tasks.flores import FloresBPB
from aetheris.eval.tasks.mgsm import MGSMCoT, MGSMDirect
from aetheris.eval.tasks.tools import ToolsTask
from aetheris.eval.tasks.xcopa import XCOPA, XCOPAGen

# Each class names itself (`name`); this tuple is the one list of tasks.
TASK_CLASSES: tuple[type[Task], ...] = (XCOPA, XCOPAGen, MGSMDirect, MGSMCoT, FloresBPB, ToolsTask)
TASKS: dict[str, type[Task]] = {cls.name: cls for cls in TASK_CLASSES}


class UnknownTaskError(UserError, KeyError, ValueError):
    """A name not in the registry: a KeyError to lookups, a ValueError to pydantic fields."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def check_task_name(name: str) -> str:
    """`name` when it is a registered task; else UnknownTaskError listing the registered ones."""
    if name not in TASKS:
        raise UnknownTaskError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}")
    return name


# A task name field in a pydantic config, validated against the registry.
TaskName = Annotated[str, AfterValidator(check_task_name)]


def get_task(name: str) -> Task:
    """A fresh instance of the task registered as `name`."""
    return TASKS[check_task_name(name)]()


__all__ = [
    "TASKS",
    "TASK_CLASSES",
    "Item",
    "Task",
    "TaskName",
    "UnknownLanguageError",
    "UnknownTaskError",
    "check_task_name",
    "get_task",
    "resolve_language",
]
