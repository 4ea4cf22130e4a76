"""Task ``text_lm``: next-token prediction on text files or the synthetic corpus.

Batches are ``{"input_ids": [B,T] long, "targets": [B,T] long}`` with -100 on
targets that do not count. See ``corpus.py`` (reading, caching) and ``data.py``
(packing, the deterministic batch map).

No DataLoader: cutting a micro-batch from the memory-mapped token array is a
few dozen numpy slices (about 0.5 ms for 32 x 512 tokens, see
``tests/components/test_lm_data.py``), far below a GPU step, so worker
processes would only add start-up time and shared-memory traffic. On CUDA the
host tensors are pinned and copied with ``non_blocking=True``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F

from specrun.components.lm import corpus, synthetic
from specrun.components.lm.data import IGNORE, Packed, Schedule, val_indices

DEFAULTS = {
    "source": "synthetic",
    "train": None,
    "val": None,
    "val_fraction": 0.05,
    "format": "auto",
    "text_field": "text",
    "prompt_field": "prompt",
    "response_field": "response",
    "separator": "\n",
    "text_unit": "paragraph",
    "loss_on": "all",
    "min_tokens": 0,
    "tokenizer": "byte",
    "bpe_vocab": 4096,
    "seq_len": 256,
    "packing": "pad",
    "temperature": 0.0,
    "top_k": 0,
    "synthetic": dict(synthetic.DEFAULTS),
}

#: parameters a curriculum may not change mid-run (the model's vocabulary hangs on them)
FIXED = ("tokenizer", "bpe_vocab")


def with_defaults(params: dict) -> dict:
    out = copy.deepcopy(DEFAULTS)
    for k, v in (params or {}).items():
        if k == "synthetic":
            out["synthetic"] = {**out["synthetic"], **(v or {})}
        else:
            out[k] = v
    return out


class TextLMTask:
    metric_names = ("token_accuracy", "perplexity")

    def __init__(self, params: dict, ctx):
        self.ctx = ctx
        self.params = with_defaults(params)
        self.base_params = copy.deepcopy(self.params)
        self.root = Path(ctx.cache_dir) / "text_lm"
        self.device = torch.device(ctx.device) if ctx.device is not None else torch.device("cpu")
        self.default_prompts = list(synthetic.SAMPLE_PROMPTS)
        records = corpus.Records(self.params)  # read only if a cache entry is missing
        self.tokenizer = corpus.build_tokenizer(self.params, self.root, records, ctx.note)
        self.from_cache = False
        self._load(records)

    # ------------------------------------------------------------ data ---

    def _load(self, records=None) -> None:
        p = self.params
        records = records or corpus.Records(p)
        splits, self.from_cache = corpus.load_or_build(p, self.tokenizer, self.root, records, self.ctx.note)
        seq_len = int(p["seq_len"])
        pad = self.tokenizer.pad_id
        self.train = Packed(splits["train"], seq_len, p["packing"], pad)
        self.val = Packed(splits["val"], seq_len, p["packing"], pad)
        self.schedule = Schedule(len(self.train), self.ctx.batch_size, self.ctx.seed,
                                 self.ctx.rank, self.ctx.world_size)
        self._val_cache: dict[int, list[dict]] = {}
        self._version = getattr(self, "_version", 0) + 1

    def model_info(self) -> dict:
        """The model's vocabulary is ``bpe_vocab`` under ``tokenizer bpe``, the size a
        document names (aura: 32,000): a BPE trained on a small corpus can stop short of it,
        and the rows past its last token are never fed in. ``specrun plan`` counts the same."""
        t = self.tokenizer
        vocab = max(t.vocab_size, int(self.params["bpe_vocab"])) if t.name == "bpe" else t.vocab_size
        return {"vocab_size": vocab, "seq_len": int(self.params["seq_len"]),
                "pad_id": t.pad_id, "bos_id": t.bos_id, "eos_id": t.eos_id}

    def set_params(self, params: dict) -> None:
        """Curriculum: ``params`` are the phases' overrides, applied over the spec's own settings."""
        new = copy.deepcopy(self.base_params)
        for k, v in (params or {}).items():
            if k not in new:
                raise ValueError(f"task text_lm has no parameter {k!r}")
            new[k] = {**new[k], **v} if isinstance(new[k], dict) and isinstance(v, dict) else v
        for k in FIXED:
            if new[k] != self.params[k]:
                raise ValueError(f"task text_lm: {k} cannot change during a run "
                                 f"({self.params[k]!r} -> {new[k]!r})")
        if new == self.params:
            return
        old = self.params
        self.params = new
        data_changed = any(new[k] != old[k] for k in ("seq_len", "packing", *corpus.DATA_KEYS))
        if data_changed:
            self._load()

    def _to_device(self, ids, targets) -> dict:
        x, y = torch.from_numpy(ids), torch.from_numpy(targets)
        if self.device.type == "cuda":
            x, y = x.pin_memory(), y.pin_memory()
        return {"input_ids": x.to(self.device, non_blocking=True),
                "targets": y.to(self.device, non_blocking=True)}

    def batch(self, i: int) -> dict:
        """Training micro-batch ``i`` (host-side work only until the copy)."""
        return self._to_device(*self.train.gather(self.schedule.indices(i)))

    def train_batches(self, start: int) -> Iterator[dict]:
        i = start
        while True:
            yield self.batch(i)
            i += 1

    def val_batches(self, count: int) -> Iterator[dict]:
        # The gathered host arrays are kept; each batch goes to the device only while it is
        # evaluated, so `batches all` on a large split costs host memory, not device memory.
        if count not in self._val_cache:
            idx = val_indices(len(self.val), self.ctx.batch_size, count, self.ctx.rank, self.ctx.world_size)
            self._val_cache[count] = [self.val.gather(ix) for ix in idx]
        return (self._to_device(*arrays) for arrays in self._val_cache[count])

    def val_batch_count(self) -> int:
        """Batches that cover the validation split once (every rank the same number)."""
        per_rank = -(-len(self.val) // self.ctx.world_size)
        return max(1, -(-per_rank // self.ctx.batch_size))

    def batches_per_epoch(self) -> int:
        return self.schedule.per_epoch

    # --------------------------------------------------------- metrics ---

    def metrics(self, outputs: dict, batch: dict) -> dict:
        with torch.no_grad():
            logits = outputs["logits"].detach()
            targets = batch["targets"]
            valid = targets != IGNORE
            n = valid.sum().clamp(min=1)
            correct = (logits.argmax(-1) == targets) & valid
            ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                                 ignore_index=IGNORE, reduction="sum")
            return {"token_accuracy": correct.sum().float() / n, "perplexity": torch.exp(ce / n)}

    # ------------------------------------------------------ generation ---

    @torch.no_grad()
    def generate(self, model, prompts: list[str] | None, max_new_tokens: int) -> list[str]:
        """Continue each prompt (greedy at ``temperature 0``, else sampled), up to <eos>."""
        prompts = self.default_prompts if prompts is None else prompts
        tok = self.tokenizer
        temperature = float(self.params["temperature"])
        top_k = int(self.params["top_k"])
        seq_len = int(self.params["seq_len"])
        try:
            device = next(model.parameters()).device
        except StopIteration:
            device = self.device
        gen = torch.Generator(device="cpu").manual_seed(self.ctx.seed)
        was_training = model.training
        model.eval()
        results = []
        try:
            for prompt in prompts:
                ids = [tok.bos_id] + tok.encode(prompt).tolist()
                new: list[int] = []
                for _ in range(max_new_tokens):
                    x = torch.tensor([(ids + new)[-seq_len:]], dtype=torch.long, device=device)
                    logits = model({"input_ids": x})["logits"][0, -1].float().cpu()
                    if temperature <= 0:
                        nxt = int(logits.argmax())
                    else:
                        logits = logits / temperature
                        if top_k > 0:
                            kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
                            logits = logits.masked_fill(logits < kth, float("-inf"))
                        nxt = int(torch.multinomial(torch.softmax(logits, -1), 1, generator=gen))
                    if nxt in (tok.eos_id, tok.pad_id):
                        break
                    new.append(nxt)
                results.append(tok.decode(new))
        finally:
            model.train(was_training)
        return results

    def close(self) -> None:
        self._val_cache.clear()


def build_task(params: dict, ctx) -> TextLMTask:
    return TextLMTask(params, ctx)
