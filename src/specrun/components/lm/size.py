"""Torch-free: the ``causal_lm`` defaults and its exact parameter count.

``specrun plan`` imports this without torch to show a model's size. The count
matches ``sum(p.numel() for p in build_model(...).parameters())`` exactly (a
test holds them together), buffers such as the replay memory excluded.
"""

from __future__ import annotations

import copy

MODEL_DEFAULTS = {
    "width": 256,
    "depth": 4,
    "heads": 4,
    "mlp_ratio": 4.0,
    "dropout": 0.0,
    "tie_embeddings": True,
    "softcap": 0.0,
    "attn_softcap": 0.0,
    "max_seq_len": 0,
    "stage": 3,
    "memory": {
        "place_cells": 0,
        "active_cells": 8,
        "replay_buffer": 0,
        "retrieve": 8,
        "key_dim": 64,
        "layers": [],
        "writes_per_sequence": 4,
        "persist_buffer": True,
        "start_on": False,
    },
    "language_zone": {"depth": 0, "experts": 4, "top_k": 1, "balance_weight": 0.01},
    "association": {"depth": 0},
    "ltm": {"dim": 0, "decay": 0.9, "after_layer": -1},
    "act": {
        "enabled": False,
        "weight": 0.1,
        "entropy_weight": 0.01,
        "target_variance": 0.1,
        "diversity_weight": 0.01,
        "t_max": 3,
        "threshold": 0.5,
        "halting": True,
    },
    "limbic": {"enabled": False, "start_on": False},
}

NESTED = ("memory", "language_zone", "association", "ltm", "act", "limbic")


def with_defaults(params: dict | None) -> dict:
    out = copy.deepcopy(MODEL_DEFAULTS)
    for k, v in (params or {}).items():
        if k in NESTED:
            out[k] = {**out[k], **(v or {})}
        else:
            out[k] = v
    return out


def memory_layers(p: dict) -> list[int]:
    """Indices of the base blocks after which the hippocampal memory reads and writes."""
    depth = int(p["depth"])
    layers = list(p["memory"]["layers"]) or [depth // 2]
    out = []
    for layer in layers:
        i = layer if layer >= 0 else depth + layer
        if not 0 <= i < depth:
            raise ValueError(f"model causal_lm: memory layer {layer} is outside 0..{depth - 1}")
        if i not in out:
            out.append(i)
    return out


def has_memory(p: dict) -> bool:
    return p["memory"]["place_cells"] > 0 or p["memory"]["replay_buffer"] > 0


def _block(d: int, hidden: int) -> int:
    return 2 * d + 4 * d * d + 2 * d * hidden


def vocab_and_seq_len(info: dict) -> tuple[int, int]:
    """From ``Task.model_info()``, or from ``text_lm`` task parameters (``specrun plan``)."""
    if "vocab_size" in info:
        return int(info["vocab_size"]), int(info["seq_len"])
    vocab = int(info.get("bpe_vocab", 4096)) if info.get("tokenizer") == "bpe" else 259
    return vocab, int(info.get("seq_len", 256))


def estimate_parameters(params: dict, info: dict) -> int:
    """Exact parameter count. ``info`` is the task's model_info() or the text_lm task
    parameters (with ``tokenizer bpe`` the model's table is ``bpe_vocab`` rows either way)."""
    p = with_defaults(params)
    v, seq_len = vocab_and_seq_len(info)
    d, depth = int(p["width"]), int(p["depth"])
    seq = int(p["max_seq_len"]) or seq_len
    hidden = int(d * p["mlp_ratio"])
    n = v * d + seq * d + (0 if p["tie_embeddings"] else v * d)
    n += depth * _block(d, hidden) + d  # blocks + final norm
    if has_memory(p):
        m = p["memory"]
        kd, cells = int(m["key_dim"]), int(m["place_cells"])
        per = d + d * kd + d * d + cells * (kd + d)
        n += per * len(memory_layers(p))
    z = p["language_zone"]
    if z["depth"] > 0:
        e = int(z["experts"])
        he = max(1, hidden // e)
        n += int(z["depth"]) * (2 * d + 4 * d * d + d * e + e * 2 * d * he)
    n += int(p["association"]["depth"]) * _block(d, hidden)
    if p["ltm"]["dim"] > 0:
        md = int(p["ltm"]["dim"])
        n += d + 2 * d * md + 2 * d * d + d
    if p["act"]["enabled"]:
        n += 2 * d + 1  # the head; pondering reuses the last base block
    if p["limbic"]["enabled"]:
        n += d + 2 * d + 2 + 2 * d  # norm, appraisal (arousal, valence), gain and valence direction
    return n
