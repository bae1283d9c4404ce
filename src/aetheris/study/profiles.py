"""Named evaluation profiles: which tasks, languages and items a study scores every model on.

`cpu-equity` is sized for the gemma3-270m study (>= 12 models in about 3 hours on 2 CPU cores in
bf16); the estimate is in configs/study-gemma3-270m.yaml. `demo` runs in minutes.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from aetheris.eval.tasks import TaskName

# Stands for "every Tiny Aya language the task has data for" in a profile's languages.
TINY_AYA = "tiny-aya"


class TaskPlan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    task: TaskName
    languages: list[str] | None = None  # None: every language of the task; ["tiny-aya"]: Tiny Aya's
    limit: int | None = None  # first N items per language (None: all)
    instruct_only: bool = False  # run only when the teacher is instruction-tuned (tool calling)


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    tasks: list[TaskPlan]

    def plans_for(self, instruction_tuned: bool) -> list[TaskPlan]:
        return [t for t in self.tasks if instruction_tuned or not t.instruct_only]


def tiny_aya_codes(task: str) -> list[str]:
    """Tiny Aya's languages that `task` covers (69 for FLORES: SIB-200 has no Nigerian Pidgin)."""
    from aetheris import languages
    from aetheris.eval.tasks import get_task

    covered = set(get_task(task).languages())
    return [lang.code for lang in languages.tiny_aya() if lang.code in covered]


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in [
        Profile(
            name="cpu-equity",
            description="FLORES bits/byte (SIB-200 test, 16 sentences) in every Tiny Aya language, "
            "XCOPA (100 test items) in all 11 languages, tool calling when the teacher is instruction-tuned",
            tasks=[
                TaskPlan(task="flores_bpb", languages=[TINY_AYA], limit=16),
                TaskPlan(task="xcopa", languages=None, limit=100),
                TaskPlan(task="tools", languages=[TINY_AYA], limit=4, instruct_only=True),
            ],
        ),
        Profile(
            name="demo",
            description="FLORES bits/byte in 6 languages of 3 families (8 sentences), XCOPA in 4 languages of 4 families (10 items)",
            tasks=[
                TaskPlan(task="flores_bpb", languages=["en", "de", "hi", "sw", "yo", "zh-Hans"], limit=8),
                TaskPlan(task="xcopa", languages=["sw", "ta", "zh", "it"], limit=10),
            ],
        ),
    ]
}
