"""cli/colour.py: colour on a terminal only, never when piped or when NO_COLOR is set."""

from __future__ import annotations

import io

import click

from specrun.cli.colour import paint, use_colour


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_colour(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_colour(Terminal())
    assert paint("error", "red", Terminal(), bold=True) == click.style("error", fg="red", bold=True) != "error"


def test_no_color_wins_over_a_terminal(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_colour(Terminal()) and paint("error", "red", Terminal()) == "error"


def test_a_pipe_or_file_gets_plain_text(monkeypatch, tmp_path):
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert not use_colour(io.StringIO()) and paint("ok", "green", io.StringIO()) == "ok"
    with open(tmp_path / "out.txt", "w") as fh:
        assert not use_colour(fh)


def test_a_closed_or_odd_stream_gets_plain_text(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    closed = io.StringIO()
    closed.close()  # isatty() raises ValueError
    assert not use_colour(closed) and not use_colour(object())
