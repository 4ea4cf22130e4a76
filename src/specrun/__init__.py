"""specrun: a training run as a reviewable file.

The Python API (docs/api.md) is importable from here: ``specrun.load_spec``,
``specrun.build_plan``, ``specrun.run``, ``specrun.runs``, ``specrun.export``,
``specrun.load``... It is loaded on first use, so ``import specrun`` stays cheap
and torch is imported only by what trains or loads a model.
"""

from specrun._version import __version__

_API = ("load_spec", "validate", "build_plan", "require_torch", "run", "runs", "find_run", "read_run", "metrics",
        "events", "export", "load", "RunResult", "TorchMissing", "Spec", "SpecError", "Diagnostic")

__all__ = ["__version__", *_API, "ExportError"]


def __getattr__(name: str):
    if name in _API:
        from specrun import api

        return getattr(api, name)
    if name == "ExportError":
        from specrun.engine.export import ExportError

        return ExportError
    raise AttributeError(f"module 'specrun' has no attribute {name!r}")
