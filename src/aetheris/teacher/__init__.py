"""Teachers: load any decoder-only HF causal LM (hub id, directory, .gguf, embedded) and describe it."""

from aetheris.teacher.embedded import EMBEDDED_TEACHERS, EmbeddedTeacher, EmbeddedTeacherMissing
from aetheris.teacher.introspect import LayerModules, UnsupportedArchitectureError, introspect, teacher_layers
from aetheris.teacher.load import ChecksumMismatch, LoadedTeacher, default_cache_dir, load_teacher
from aetheris.teacher.spec import AttentionSpec, LayerSpec, MLPSpec, NormSpec, RopeSpec, TeacherSpec

__all__ = [
    "EMBEDDED_TEACHERS",
    "AttentionSpec",
    "ChecksumMismatch",
    "EmbeddedTeacher",
    "EmbeddedTeacherMissing",
    "LayerModules",
    "LayerSpec",
    "LoadedTeacher",
    "MLPSpec",
    "NormSpec",
    "RopeSpec",
    "TeacherSpec",
    "UnsupportedArchitectureError",
    "default_cache_dir",
    "introspect",
    "load_teacher",
    "teacher_layers",
]
