"""Reading text, splitting it, tokenising it once, and caching the tokens on disk.

A *record* is ``(prompt, text)``: ``prompt`` is the part whose tokens are not
trained on when ``loss_on response`` (empty for plain text), ``text`` the rest.

Sources:

- jsonl (``.jsonl``, ``.json``, optionally ``.gz``): one object per line with a
  ``text`` field, or ``prompt``/``response`` fields joined with ``separator``
  (field names are parameters);
- plain text (anything else, optionally ``.gz``): split into documents at blank
  lines (``text_unit paragraph``), per line, or one document per file;
- the built-in synthetic corpus (``synthetic.py``).

Validation data comes from ``val`` files, or else a held-out ``val_fraction``
of the training records chosen by a hash of each record's text, so the split
does not depend on file order and duplicate texts always land on the same side.

Tokenised splits are cached under ``<cache_dir>/text_lm/data/<key>/`` as
``.npy`` arrays (memory-mapped on load): ``tokens`` (all documents
concatenated, each as ``<bos> prompt text <eos>``), ``offsets`` (document
starts, plus the end) and, for ``loss_on response``, ``mask`` (1 where the
token is a training target). The key hashes the cache format, the contents of
every input file, the tokenizer's fingerprint and every setting that changes
the tokens. ``seq_len`` and ``packing`` are deliberately *not* in the key: they
are applied when batches are cut (``data.py``), so a curriculum over sequence
length reuses one cache. An entry is written into a temporary folder and
renamed into place, ``meta.json`` last: a reader never sees half an entry.

File digests are memoised by (path, size, mtime) under ``filehash/``, so a
large unchanged file is hashed once.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from specrun.components.lm import synthetic
from specrun.components.lm.tokenizer import BPETokenizer, ByteTokenizer, atomic_write_text

CACHE_VERSION = 2
Record = tuple[str, str]

#: task parameters that change which records are read or how they become tokens
DATA_KEYS = ("source", "train", "val", "val_fraction", "format", "text_field", "prompt_field",
             "response_field", "separator", "text_unit", "loss_on", "min_tokens", "synthetic")


@dataclass
class Split:
    tokens: np.ndarray  # uint16/uint32, all documents back to back
    offsets: np.ndarray  # int64, len = documents + 1
    mask: np.ndarray | None  # uint8 per token: 1 = a training target; None = all are

    @property
    def documents(self) -> int:
        return len(self.offsets) - 1


# ---------------------------------------------------------------- reading ---

def _as_list(value) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _open_text(path: Path):
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def _format_of(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    suffixes = [s for s in path.suffixes if s != ".gz"]
    return "jsonl" if suffixes and suffixes[-1] in (".jsonl", ".json", ".ndjson") else "text"


def read_file(path: str | os.PathLike, params: dict) -> list[Record]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"task text_lm: data file {str(path)!r} does not exist "
                                f"(paths are relative to {os.getcwd()})")
    records: list[Record] = []
    if _format_of(path, params["format"]) == "jsonl":
        tf, pf, rf = params["text_field"], params["prompt_field"], params["response_field"]
        sep = params["separator"]
        with _open_text(path) as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{lineno}: not valid JSON: {exc.msg}") from None
                if isinstance(obj, dict) and isinstance(obj.get(tf), str):
                    records.append(("", obj[tf]))
                elif isinstance(obj, dict) and isinstance(obj.get(pf), str) and isinstance(obj.get(rf), str):
                    records.append((obj[pf] + sep, obj[rf]))
                else:
                    raise ValueError(f"{path}:{lineno}: expected a string field {tf!r}, or "
                                     f"{pf!r} and {rf!r}")
        return records
    with _open_text(path) as fh:
        content = fh.read()
    unit = params["text_unit"]
    if unit == "file":
        parts = [content]
    elif unit == "line":
        parts = content.splitlines()
    else:
        parts, current = [], []
        for line in content.splitlines():
            if line.strip():
                current.append(line)
            elif current:
                parts.append("\n".join(current))
                current = []
        if current:
            parts.append("\n".join(current))
    return [("", p) for p in parts if p.strip()]


def _held_out(text: str, fraction: float) -> bool:
    h = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")
    return h / 2**64 < fraction


def load_records(params: dict) -> tuple[list[Record], list[Record]]:
    """(train, val) records for the task parameters."""
    if params["source"] == "synthetic":
        return synthetic.generate(params["synthetic"])
    train_files = _as_list(params["train"])
    if not train_files:
        raise ValueError("task text_lm: `source files` needs `train` (a path or a list of paths)")
    train: list[Record] = []
    for f in train_files:
        train.extend(read_file(f, params))
    val_files = _as_list(params["val"])
    if val_files:
        val: list[Record] = []
        for f in val_files:
            val.extend(read_file(f, params))
    else:
        frac = float(params["val_fraction"])
        val = [r for r in train if _held_out(r[0] + r[1], frac)]
        train = [r for r in train if not _held_out(r[0] + r[1], frac)]
    if not train:
        raise ValueError("task text_lm: the training split is empty")
    if not val:
        raise ValueError("task text_lm: the validation split is empty; give `val` files "
                         "or a larger `val_fraction`")
    return train, val


class Records:
    """(train, val) records, read on first use and kept."""

    def __init__(self, params: dict):
        self.params = params
        self._value = None

    def get(self) -> tuple[list[Record], list[Record]]:
        if self._value is None:
            self._value = load_records(self.params)
        return self._value


# ---------------------------------------------------------------- hashing ---

def file_digest(path: str | os.PathLike, cache_dir: Path) -> str:
    """blake2b of the file's bytes, memoised by (real path, size, mtime)."""
    real = os.path.realpath(path)
    st = os.stat(real)
    memo = cache_dir / "filehash" / (hashlib.sha256(real.encode()).hexdigest()[:32] + ".json")
    try:
        saved = json.loads(memo.read_text())
        if saved["size"] == st.st_size and saved["mtime_ns"] == st.st_mtime_ns:
            return saved["digest"]
    except (OSError, ValueError, KeyError):
        pass
    h = hashlib.blake2b(digest_size=20)
    with open(real, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    atomic_write_text(memo, json.dumps({"path": real, "size": st.st_size,
                                        "mtime_ns": st.st_mtime_ns, "digest": digest}))
    return digest


def data_identity(params: dict, cache_dir: Path) -> dict:
    """Everything that decides the records, as plain JSON (file contents by digest)."""
    ident = {k: params[k] for k in DATA_KEYS if k not in ("train", "val")}
    if params["source"] == "synthetic":
        ident = {"source": "synthetic", "synthetic": {**synthetic.DEFAULTS, **params["synthetic"]},
                 "loss_on": params["loss_on"], "min_tokens": params["min_tokens"]}
    else:
        ident.pop("synthetic", None)
        ident["train"] = [file_digest(f, cache_dir) for f in _as_list(params["train"])]
        ident["val"] = [file_digest(f, cache_dir) for f in _as_list(params["val"])]
        if ident["val"]:
            ident.pop("val_fraction")
    return ident


def _key(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:24]


# -------------------------------------------------------------- tokenizer ---

def build_tokenizer(params: dict, cache_dir: Path, records: Records | None = None, note=None):
    """The byte tokenizer, or a BPE trained once on the training split and cached."""
    if params["tokenizer"] == "byte":
        return ByteTokenizer()
    ident = data_identity(params, cache_dir)
    for k in ("loss_on", "min_tokens"):
        ident.pop(k, None)
    path = cache_dir / "tokenizers" / f"bpe-{params['bpe_vocab']}-{_key(ident)}.json"
    if path.exists():
        return BPETokenizer.from_file(path)
    train = (records or Records(params)).get()[0]
    started = time.perf_counter()
    tok = BPETokenizer.train((p + t for p, t in train), int(params["bpe_vocab"]))
    tok.save(path)
    if note:
        note(f"text_lm: trained a {tok.vocab_size}-token BPE in {time.perf_counter() - started:.1f}s")
    return tok


# ----------------------------------------------------------------- caching ---

def _tokenise(records: list[Record], tok, loss_on: str, min_tokens: int) -> dict[str, np.ndarray]:
    want_mask = loss_on == "response"
    dtype = np.uint16 if tok.vocab_size <= 65536 else np.uint32
    pieces, masks, lengths = [], [], []
    chunk = 4096
    for start in range(0, len(records), chunk):
        part = records[start:start + chunk]
        prompts = tok.encode_batch([p for p, _ in part]) if any(p for p, _ in part) else None
        texts = tok.encode_batch([t for _, t in part])
        for i, text_ids in enumerate(texts):
            prompt_ids = prompts[i] if prompts is not None else np.zeros(0, np.int64)
            n = len(prompt_ids) + len(text_ids) + 2
            if n - 2 < min_tokens:
                continue
            ids = np.empty(n, dtype=dtype)
            ids[0] = tok.bos_id
            ids[1:1 + len(prompt_ids)] = prompt_ids
            ids[1 + len(prompt_ids):-1] = text_ids
            ids[-1] = tok.eos_id
            pieces.append(ids)
            lengths.append(n)
            if want_mask:
                m = np.ones(n, dtype=np.uint8)
                m[:1 + len(prompt_ids)] = 0
                masks.append(m)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    out = {"tokens": np.concatenate(pieces) if pieces else np.zeros(0, dtype), "offsets": offsets}
    if want_mask:
        out["mask"] = np.concatenate(masks) if masks else np.zeros(0, np.uint8)
    return out


def _load_entry(folder: Path) -> dict[str, Split]:
    splits = {}
    for name in ("train", "val"):
        mask_path = folder / f"{name}_mask.npy"
        splits[name] = Split(
            tokens=np.load(folder / f"{name}_tokens.npy", mmap_mode="r"),
            offsets=np.load(folder / f"{name}_offsets.npy"),
            mask=np.load(mask_path, mmap_mode="r") if mask_path.exists() else None,
        )
    return splits


def load_or_build(params: dict, tok, cache_dir: Path, records: Records | None = None,
                  note=None) -> tuple[dict[str, Split], bool]:
    """The tokenised (train, val) splits and whether they came from the cache."""
    ident = {"version": CACHE_VERSION, "data": data_identity(params, cache_dir),
             "tokenizer": tok.fingerprint()}
    folder = cache_dir / "data" / _key(ident)
    if (folder / "meta.json").exists():
        return _load_entry(folder), True
    started = time.perf_counter()
    train, val = (records or Records(params)).get()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        counts = {}
        for name, recs in (("train", train), ("val", val)):
            arrays = _tokenise(recs, tok, params["loss_on"], int(params["min_tokens"]))
            if len(arrays["offsets"]) < 2:
                raise ValueError(f"task text_lm: no {name} document has min_tokens "
                                 f"{params['min_tokens']} tokens")
            for k, arr in arrays.items():
                with open(tmp / f"{name}_{k}.npy", "wb") as fh:
                    np.save(fh, arr, allow_pickle=False)
                    fh.flush()
                    os.fsync(fh.fileno())
            counts[name] = {"documents": len(arrays["offsets"]) - 1, "tokens": int(len(arrays["tokens"]))}
        (tmp / "meta.json").write_text(json.dumps({"identity": ident, **counts}, indent=1))
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / "meta.json").exists():  # not a concurrent writer's entry
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if note:
        note(f"text_lm: tokenised {counts['train']['tokens']:,} train / {counts['val']['tokens']:,} "
             f"val tokens in {time.perf_counter() - started:.1f}s, cached in {folder}")
    return _load_entry(folder), False

