"""Diagnostics: every problem a user can cause, tied to where they caused it.

Rendered like a compiler does it::

    specs/x.train:12:8: error[E203]: lr must be greater than 0, got -0.001
       12 |     lr -1e-3
          |        ^^^^^
       = hint: a typical AdamW learning rate is 1e-4 .. 3e-4

Codes are stable (tests and CI annotations match on them); docs/errors.md
lists them all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

from specrun.spec.syntax import Span

CODES = {
    "E100": "syntax error",
    "E101": "unexpected character",
    "E102": "unterminated string",
    "E103": "file is not UTF-8 text",
    "E104": "empty spec",
    "E105": "nesting too deep",
    "E106": "file too large",
    "E107": "reserved word used as a name",
    "E108": "setting without a value",
    "E200": "unknown setting",
    "E201": "wrong type",
    "E202": "wrong unit",
    "E203": "value out of range",
    "E204": "missing setting",
    "E205": "duplicate setting",
    "E206": "not one of the allowed values",
    "E300": "unknown component",
    "E301": "user code not found",
    "E302": "user code cannot be read",
    "E303": "name not defined in user code",
    "E400": "unknown name in expression",
    "E401": "unknown function",
    "E402": "unknown phase or axis",
    "E403": "duplicate phase or axis",
    "E404": "wrong arguments",
    "E405": "expression of the wrong kind",
    "E500": "override targets no setting",
    "E501": "unknown profile",
    "E502": "malformed --set",
    "E600": "settings contradict each other",
    "E900": "cannot read file",
    # Warnings: valid settings that can never take effect. They fail `validate` only with --strict.
    "W100": "gate cannot hold before the run ends",
    "W101": "expectation judged after the run ends",
    "W102": "interval longer than the run",
    "W103": "input file not found",
    "W300": "user code without readable source: checked when the run starts",
}


@dataclass(frozen=True)
class Diagnostic:
    code: str
    message: str
    span: Span
    hint: str | None = None

    @property
    def severity(self) -> str:
        """``warning`` for W codes (a setting that can never take effect), else ``error``."""
        return "warning" if self.code.startswith("W") else "error"

    def sort_key(self):
        return (self.span.path, self.span.line, self.span.col, self.code, self.message)


class SpecError(Exception):
    """One or more diagnostics; raised by parse and check, rendered by the CLI."""

    def __init__(self, diagnostics: list[Diagnostic], sources: dict[str, str] | None = None):
        self.diagnostics = sorted(diagnostics, key=Diagnostic.sort_key)
        self.sources = dict(sources or {})
        super().__init__(self.diagnostics[0].message if self.diagnostics else "invalid spec")

    def render(self, fmt: str = "text", colour: bool = False) -> str:
        return render(self.diagnostics, self.sources, fmt, colour)


@lru_cache(maxsize=16)
def source_lines(text: str) -> tuple[str, ...]:
    """A source split into lines as the parser counts them (on "\\n" only, not str.splitlines).

    Cached: a file with thousands of diagnostics is split once, not once per excerpt (a str
    keeps its hash, so looking the same text up again costs nothing).
    """
    return tuple(text.split("\n"))


def _excerpt(diag: Diagnostic, sources: dict[str, str]) -> list[str]:
    text = sources.get(diag.span.path)
    if text is None:
        return []
    lines = source_lines(text)
    if not 1 <= diag.span.line <= len(lines):
        return []
    raw = lines[diag.span.line - 1].rstrip("\r")
    # A pathological one-line file must not flood the terminal, nor cost the whole line for
    # each of its diagnostics: the excerpt is a window of the raw line around the column.
    offset = max(0, diag.span.col - 1 - 60) if len(raw) > 160 else 0
    raw = raw[offset: offset + 160]
    # columns count characters of the raw line; the excerpt shows tabs as spaces
    col = len(raw[: max(0, diag.span.col - 1 - offset)].expandtabs(4)) + 1
    width = 1
    if diag.span.end_line == diag.span.line and diag.span.end_col > diag.span.col:
        end = len(raw[: diag.span.end_col - 1 - offset].expandtabs(4)) + 1
        width = max(1, end - col)
    line = raw.expandtabs(4)[:160]
    width = max(1, min(width, len(line) - col + 2))
    gutter = str(diag.span.line)
    pad = " " * len(gutter)
    printable = "".join(ch if ch.isprintable() else "?" for ch in line)
    return [f" {gutter} | {printable}".rstrip(), f" {pad} | {' ' * (col - 1)}{'^' * width}"]


COLOURS = {"error": "\x1b[1;31m", "warning": "\x1b[1;33m", "hint": "\x1b[36m", "reset": "\x1b[0m"}


def render_text(diag: Diagnostic, sources: dict[str, str], colour: bool = False) -> str:
    paint = (lambda text, what: f"{COLOURS[what]}{text}{COLOURS['reset']}") if colour else (lambda text, what: text)
    out = [f"{diag.span}: {paint(f'{diag.severity}[{diag.code}]', diag.severity)}: {diag.message}"]
    out += _excerpt(diag, sources)
    if diag.hint:
        out.append(f"  = {paint('hint', 'hint')}: {diag.hint}")
    return "\n".join(out)


def _github_escape(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def render(diagnostics: list[Diagnostic], sources: dict[str, str], fmt: str = "text", colour: bool = False) -> str:
    if fmt == "json":
        return json.dumps(
            [
                {
                    "path": d.span.path, "line": d.span.line, "col": d.span.col,
                    "end_line": d.span.end_line, "end_col": d.span.end_col,
                    "code": d.code, "severity": d.severity, "message": d.message, "hint": d.hint,
                }
                for d in diagnostics
            ],
            indent=2,
        )
    if fmt == "github":
        return "\n".join(
            f"::{d.severity} file={d.span.path},line={d.span.line},col={d.span.col},"
            f"endLine={d.span.end_line},endColumn={d.span.end_col},title={d.code}::"
            + _github_escape(d.message + (f" (hint: {d.hint})" if d.hint else ""))
            for d in diagnostics
        )
    return "\n\n".join(render_text(d, sources, colour) for d in diagnostics)


def did_you_mean(word: str, options) -> str | None:
    import difflib

    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None
