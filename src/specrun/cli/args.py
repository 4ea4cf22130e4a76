"""Command-line shapes people type by mistake, answered with the right one.

``--set optimizer.lr 1e-3`` and a bare ``optimizer.lr=1e-3`` are both natural to
type; click would say "unexpected extra argument" (or, for ``validate``, take
``1e-3`` for a file). Commands that take ``--set`` use ``SetCommand``, which
looks at the arguments before click does and names the form that works.
"""

from __future__ import annotations

import re

import click

_SETTING = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*=")
_PATH_LIKE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


def _looks_like_file(arg: str) -> bool:
    return arg.endswith(".train") or "/" in arg


def misplaced_setting(args: list[str]) -> str | None:
    """A usage message for ``--set k v`` or a bare ``k=v`` among ``args``; None when fine."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return None
        if arg == "--set" and i + 1 < len(args):
            key = args[i + 1]
            if "=" not in key and i + 2 < len(args) and _PATH_LIKE.match(key) \
                    and not args[i + 2].startswith("-") and not _looks_like_file(args[i + 2]):
                value = args[i + 2]
                return (f"--set takes PATH=VALUE as one argument: --set {key}={value} "
                        f"(not --set {key} {value})")
            i += 2
            continue
        if arg.startswith("--set="):
            i += 1
            continue
        if not arg.startswith("-") and _SETTING.match(arg) and not _looks_like_file(arg):
            prev = args[i - 1] if i else ""
            if prev not in ("--set", "-p", "--profile", "--run-dir", "--format", "-o", "--output", "--base"):
                return f"to override a setting, write --set {arg} (a bare {arg} is taken for a file)"
        i += 1
    return None


class SetCommand(click.Command):
    """A command with ``--set``: a misplaced setting gets the right form, not "extra argument"."""

    def parse_args(self, ctx, args):
        message = misplaced_setting(list(args))
        if message:
            raise click.UsageError(message, ctx)
        return super().parse_args(ctx, args)
