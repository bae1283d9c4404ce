"""Progress bars in a log file: off a terminal rich prints a bar only when it ends, so `Bar`
prints its line every `every` seconds."""

from __future__ import annotations

import io

from rich.console import Console

from aetheris.progress import Bar, track


def _bar(every: float) -> tuple[Bar, io.StringIO]:
    out = io.StringIO()
    return Bar(console=Console(file=out, force_terminal=False, width=100), every=every), out


def test_a_bar_off_a_terminal_prints_its_line_as_it_goes():
    bar, out = _bar(every=0.0)
    with bar:
        task = bar.add_task("rows", total=4)
        for i in range(4):
            bar.advance(task)
            assert out.getvalue().count("rows") == i + 1  # a line now, not only at the end
    assert "100%" in out.getvalue()


def test_a_bar_prints_no_more_often_than_every():
    bar, out = _bar(every=3600.0)
    with bar:
        task = bar.add_task("rows", total=50)
        for _ in range(50):
            bar.update(task, advance=1)
        assert out.getvalue() == ""
    assert out.getvalue().count("rows") == 1  # rich's own line at the end


def test_track_yields_every_item_and_can_be_off(capsys):
    assert list(track(range(5), "items")) == list(range(5))
    assert list(track([1, 2], "quiet", disable=True)) == [1, 2]
    assert "quiet" not in capsys.readouterr().err
