"""The command line: a thin layer of click commands over spec/, plan and engine/."""

from specrun.cli.main import main

__all__ = ["main"]
