"""bf16 is turned on where the hardware has it, and the decision is said in the log."""

import logging

import pytest

from aetheris import precision


@pytest.fixture
def flags(monkeypatch):
    def use(*names):
        monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(names))

    return use


@pytest.mark.parametrize(
    ("have", "native"),
    [(("avx2", "avx512f", "avx512_bf16"), True), (("avx512f", "amx_tile", "amx_bf16"), True),
     (("avx2", "avx512f"), False), ((), False), (("fp", "asimd", "bf16"), True)],
)  # fmt: skip
def test_auto_follows_the_cpu_flags(flags, have, native, caplog):
    flags(*have)
    with caplog.at_level(logging.INFO, logger="aetheris.precision"):
        assert precision.resolve_bf16("auto", "cpu") is native
    assert ("bf16 on" if native else "bf16 off") in caplog.text and "auto" in caplog.text


def test_explicit_settings_win_and_a_forced_emulation_warns(flags, caplog):
    flags("avx2")
    with caplog.at_level(logging.INFO, logger="aetheris.precision"):
        assert precision.resolve_bf16(True, "cpu") is True
        assert precision.resolve_bf16(False, "cpu") is False
    assert "forced on although CPU has no native bf16" in caplog.text


def test_this_machine_reads_its_own_flags():
    precision.cpu_flags.cache_clear()
    summary = precision.cpu_summary()
    assert "flags:" in summary
    native, why = precision.bf16_support("cpu")
    assert native == any(f in precision.cpu_flags() for f in ("amx_bf16", "avx512_bf16", "bf16")), why
