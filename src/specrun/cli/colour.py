"""Colour on a terminal; none when piped, redirected, or NO_COLOR is set (https://no-color.org)."""

from __future__ import annotations

import os
import sys

import click


def use_colour(stream=None) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    stream = stream or sys.stdout
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def paint(text: str, colour: str, stream=None, bold: bool = False) -> str:
    """``text`` in ``colour`` (a click colour name) when ``stream`` is a terminal."""
    return click.style(text, fg=colour, bold=bold) if use_colour(stream) else text
