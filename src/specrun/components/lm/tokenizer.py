"""Tokenizers: byte-level (no dependency) and a small trained BPE (``tokenizers``).

Both expose the same small interface::

    vocab_size, pad_id, bos_id, eos_id
    encode(text) -> np.ndarray[int]     (no specials added)
    encode_batch(texts) -> list[np.ndarray]
    decode(ids) -> str                  (specials dropped)
    fingerprint() -> str                (changes whenever encode would)

Byte-level ids: 0..255 are the UTF-8 bytes, 256 = <pad>, 257 = <bos>, 258 = <eos>
(vocab 259). The BPE is byte-level too (GPT-2 style pre-tokeniser), so it never
meets an unknown character; ids 0, 1, 2 are <pad>, <bos>, <eos>.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

SPECIALS = ("<pad>", "<bos>", "<eos>")


class ByteTokenizer:
    name = "byte"

    def __init__(self) -> None:
        self.pad_id, self.bos_id, self.eos_id = 256, 257, 258
        self.vocab_size = 259

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        data = bytes(int(i) for i in ids if 0 <= int(i) < 256)
        return data.decode("utf-8", errors="replace")

    def fingerprint(self) -> str:
        return "byte-v1"


class BPETokenizer:
    """A trained byte-level BPE from the ``tokenizers`` library (optional dependency)."""

    name = "bpe"

    def __init__(self, tokenizer) -> None:
        self._tok = tokenizer
        self.pad_id, self.bos_id, self.eos_id = (tokenizer.token_to_id(s) for s in SPECIALS)
        self.vocab_size = tokenizer.get_vocab_size()
        self._json = tokenizer.to_str()

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> "BPETokenizer":
        lib = _import_tokenizers()
        tok = lib.Tokenizer(lib.models.BPE())
        tok.pre_tokenizer = lib.pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = lib.decoders.ByteLevel()
        trainer = lib.trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(SPECIALS),
            initial_alphabet=lib.pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "BPETokenizer":
        lib = _import_tokenizers()
        return cls(lib.Tokenizer.from_file(str(path)))

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(Path(path), self._json)

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        encs = self._tok.encode_batch(texts, add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int64) for e in encs]

    def decode(self, ids: Iterable[int]) -> str:
        """Specials and ids past the trained vocabulary (a model's table may be larger) dropped."""
        specials = {self.pad_id, self.bos_id, self.eos_id}
        return self._tok.decode([int(i) for i in ids if int(i) not in specials and 0 <= int(i) < self.vocab_size])

    def fingerprint(self) -> str:
        return "bpe-" + hashlib.sha256(self._json.encode("utf-8")).hexdigest()[:16]


def _import_tokenizers():
    try:
        import tokenizers
        from tokenizers import decoders, models, pre_tokenizers, trainers  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "task text_lm: `tokenizer bpe` needs the optional package 'tokenizers' "
            "(pip install tokenizers); `tokenizer byte` needs nothing"
        ) from exc
    return tokenizers


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


