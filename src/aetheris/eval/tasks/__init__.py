"""Task registry: name -> "module:Class". Modules are imported only when a task is used,
so a task whose module is not installed (e.g. ``tools``, written separately) fails alone."""

from __future__ import annotations

import importlib

from aetheris.errors import UserError
from aetheris.eval.tasks.base import Item, Task, UnknownLanguageError, resolve_language

TASKS: dict[str, str] = {
    "xcopa": "aetheris.eval.tasks.xcopa:XCOPA",
    "xcopa_gen": "aetheris.eval.tasks.xcopa:XCOPAGen",
    "mgsm_direct": "aetheris.eval.tasks.mgsm:MGSMDirect",
    "mgsm_cot": "aetheris.eval.tasks.mgsm:MGSMCoT",
    "flores_bpb": "aetheris.eval.tasks.flores:FloresBPB",
    # Plug-in point: multilingual tool calling, implemented in its own module.
    "tools": "aetheris.eval.tasks.tools:ToolsTask",
}


class UnknownTaskError(UserError, KeyError):
    """No task has this name; the message lists the registered ones."""


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise UnknownTaskError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}")
    module, cls = TASKS[name].split(":")
    try:
        return getattr(importlib.import_module(module), cls)()
    except ModuleNotFoundError as e:
        if e.name != module:
            raise
        raise ImportError(f"task {name!r} is registered but its module {module} is not installed") from e


__all__ = ["TASKS", "Item", "Task", "UnknownLanguageError", "UnknownTaskError", "get_task", "resolve_language"]
