"""Hugging Face, offline: a causal LM from a local config.json or save_pretrained folder
(``model.py``), and text data from local json/csv/parquet/text files with a local
tokenizer (``text.py``). Needs the ``hf`` extra (transformers, datasets).

Nothing is ever downloaded: the Hub's offline switches are set before transformers
is imported, every load is ``local_files_only``, weights load only from safetensors
(never a pickle), and no remote code runs.
"""

from __future__ import annotations

import os
from pathlib import Path

from specrun.components.api import ComponentError, Context


def offline() -> None:
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[key] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def need(what: str):
    """Import transformers (offline), or say how to install it."""
    offline()
    try:
        import transformers
    except ImportError:
        raise ComponentError(f"{what} needs Hugging Face transformers: pip install 'specrun[hf]'") from None
    return transformers


def local_path(ctx: Context, written: str, what: str) -> Path:
    """A path a spec names, relative to the spec's folder and kept inside it."""
    base = Path(ctx.extras.get("spec_dir") or ".").resolve()
    rel = Path(written)
    path = (base / rel).resolve()
    if rel.is_absolute() or not path.is_relative_to(base):
        raise ComponentError(f"{what}: {written!r} must stay inside the spec's folder ({base})")
    if not path.exists():
        raise ComponentError(f"{what}: no {written} in {base}")
    return path
