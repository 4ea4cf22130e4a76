"""Where the grammar, schemas and reference specs live, installed or in a checkout.

``grammar/``, ``schemas/`` and ``specs/`` at the top of the repository are the single
source of truth. A wheel carries copies under ``specrun/_data/`` (see
pyproject's force-include); an editable install or a plain checkout reads the
top-level folders directly.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_CANDIDATES = (_PACKAGE / "_data", _PACKAGE.parent.parent)


def resource_dir(*parts: str) -> Path:
    for root in _CANDIDATES:
        path = root.joinpath(*parts)
        if path.exists():
            return path
    raise FileNotFoundError(f"specrun resource {'/'.join(parts)} is missing from the install")
