"""`aetheris study STUDY.yaml`: models (teacher, compress specs, students, compositions) x one
evaluation profile -> one equity report (report.md, report.html, results.json)."""

from aetheris.study.config import StudyConfig, load_study
from aetheris.study.profiles import PROFILES, Profile, TaskPlan

__all__ = ["PROFILES", "Profile", "StudyConfig", "TaskPlan", "load_study"]
