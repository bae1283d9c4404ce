"""Teachers: load any supported HF causal LM (hub id, directory, .gguf, embedded) and describe it."""

from aetheris.teacher.embedded import EMBEDDED_TEACHERS, EmbeddedTeacher, EmbeddedTeacherMissing
from aetheris.teacher.introspect import ARCHITECTURES, UnsupportedArchitectureError, introspect
from aetheris.teacher.load import ChecksumMismatch, LoadedTeacher, default_cache_dir, load_teacher
from aetheris.teacher.spec import AttentionSpec, LayerSpec, MLPSpec, NormSpec, RopeSpec, TeacherSpec

__all__ = [
    "ARCHITECTURES",
    "EMBEDDED_TEACHERS",
    "AttentionSpec",
    "ChecksumMismatch",
    "EmbeddedTeacher",
    "EmbeddedTeacherMissing",
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
]
