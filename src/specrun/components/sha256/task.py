"""Task ``sha256_trace``: predict the next SHA-256 compression state from the current one.

A sample is the trace of one random 512-bit message block over the phase's
``rounds`` rounds. Every round ``t`` is one transition::

    inputs[b, t]  = bits(a b c d e f g h) ++ bits(W_t) ++ bits(K_t)    320 bits
    targets[b, t] = bits(a' b' c' d' e' f' g' h')                      256 bits

(words least-significant bit first, see ``trace``). W_t and K_t are inputs
because the next state is not a function of the state alone: the round adds
the message-schedule word W_t (message-dependent) and the round constant K_t
(round-dependent) into both new words a' and e'. Without them the targets'
64 non-copied bits would be noise to the model.

Batch layout: ``inputs`` uint8 [B, R, 320], ``targets`` uint8 [B, R, 256],
both in {0, 1}. With ``transport shared_memory`` on a CPU device they are
zero-copy views of a shared-memory slot: a batch stays valid until two more
batches have been taken from the same iterator (then its slot is refilled).
Copy it (``.clone()``) to keep it longer. On another device the task copies
the batch there and recycles the slot at once.
"""

from __future__ import annotations

import torch

from specrun.components.sha256 import trace
from specrun.components.sha256.producers import SharedMemoryLoader, compute_batch

RECONFIGURABLE = ("rounds", "init_state")
FIXED = ("producers", "transport", "ring", "epoch_size")
DEFAULTS = {
    "rounds": 8,
    "producers": 2,
    "transport": "shared_memory",
    "ring": 0,
    "epoch_size": 0,
    "init_state": "iv",
}

_NONSHIFT = [0, 4]  # word indices of new a and new e


def _on_device(tensor: torch.Tensor, device) -> torch.Tensor:
    if torch.device(device).type == "cpu":
        return tensor
    return tensor.to(device)


class Sha256TraceTask:
    metric_names = ("bit_accuracy", "nonshift_accuracy", "state_accuracy")

    def __init__(self, params: dict, ctx):
        self.params = {**DEFAULTS, **params}
        self.ctx = ctx
        self.device = torch.device(ctx.device) if ctx.device is not None else torch.device("cpu")
        self.batch_size = int(ctx.batch_size)
        self.seed, self.rank = int(ctx.seed), int(ctx.rank)
        self.transport = self.params["transport"]
        self._iter_token = 0
        self._next_index = 0  # inline / device: next micro-batch the live iterator yields
        self.loader: SharedMemoryLoader | None = None
        if self.transport == "shared_memory":
            self.loader = SharedMemoryLoader(
                seed=self.seed, rank=self.rank, batch_size=self.batch_size,
                params=self._data_params(), producers=int(self.params["producers"]),
                ring=int(self.params["ring"]) or None,
            )
            ctx.note(f"sha256_trace: {self.params['producers']} producer processes, "
                     f"ring of {self.loader.ring} shared-memory slots")
        elif self.transport not in ("device", "inline"):
            raise ValueError(f"unknown transport {self.transport!r}")

    # -- Task protocol ----------------------------------------------------------------------

    def _data_params(self) -> dict:
        return {k: self.params[k] for k in RECONFIGURABLE}

    def model_info(self) -> dict:
        return {
            "input_bits": trace.INPUT_BITS,
            "state_bits": trace.STATE_BITS,
            "input_words": trace.INPUT_WORDS,
            "state_words": trace.STATE_WORDS,
            "word_bits": trace.WORD_BITS,
            "rounds": int(self.params["rounds"]),
        }

    def set_params(self, params: dict) -> None:
        for key in FIXED:
            if key in params and params[key] != self.params[key]:
                raise ValueError(f"sha256_trace: '{key}' cannot change during a run "
                                 f"({self.params[key]!r} -> {params[key]!r})")
        new = {**self.params, **{k: params[k] for k in RECONFIGURABLE if k in params}}
        if not 1 <= int(new["rounds"]) <= 64:
            raise ValueError(f"sha256_trace: rounds must be in 1..64, got {new['rounds']}")
        changed = any(new[k] != self.params[k] for k in RECONFIGURABLE)
        self.params = new
        if changed and self.loader is not None and self.loader.started:
            # Restart the producers at the next index the live iterator will yield: every
            # batch still in flight or buffered under the old params is dropped.
            self.loader.restart(self.loader.next_yield, self._data_params())

    def train_batches(self, start: int):
        """Batches ``start, start+1, ...``; a new call supersedes the previous iterator."""
        self._iter_token += 1
        token = self._iter_token
        start = int(start)
        if self.loader is not None:
            self.loader.restart(start, self._data_params())
            return self._shm_stream(token)
        self._next_index = start
        return self._local_stream(token)

    def _check_token(self, token: int) -> None:
        if token != self._iter_token:
            raise RuntimeError("sha256_trace: this iterator was superseded by a later train_batches() call")

    def _shm_stream(self, token: int):
        loader = self.loader
        cpu = self.device.type == "cpu"
        while True:
            self._check_token(token)
            slot = loader.next_slot()
            x, y = loader.arrays(slot)
            if cpu:
                batch = {"inputs": torch.from_numpy(x), "targets": torch.from_numpy(y)}
            else:
                batch = {"inputs": torch.from_numpy(x).to(self.device),
                         "targets": torch.from_numpy(y).to(self.device)}
                del x, y
                loader.release_held()  # copied: the slot may be refilled right away
            yield batch

    def _local_stream(self, token: int):
        while True:
            self._check_token(token)
            index = self._next_index
            self._next_index += 1
            yield self._make(index, trace.TRAIN_STREAM)

    def _make(self, index: int, stream: int) -> dict:
        rounds = int(self.params["rounds"])
        if self.transport == "device":
            block, init = trace.random_blocks(self.seed, self.rank, index, self.batch_size, stream,
                                              random_init=self.params["init_state"] == "random")
            block_t = torch.from_numpy(block.astype("int64")).to(self.device)
            init_t = None if init is None else torch.from_numpy(init.astype("int64")).to(self.device)
            x, y = trace.make_batch_torch(block_t, rounds, init_t)
            return {"inputs": x, "targets": y}
        x = torch.empty((self.batch_size, rounds, trace.INPUT_BITS), dtype=torch.uint8)
        y = torch.empty((self.batch_size, rounds, trace.STATE_BITS), dtype=torch.uint8)
        compute_batch(self.seed, self.rank, index, self.batch_size, self._data_params(),
                      x.numpy(), y.numpy(), stream)
        return {"inputs": _on_device(x, self.device), "targets": _on_device(y, self.device)}

    def val_batches(self, count: int):
        """``count`` fixed batches from a separate seed stream, generated in-process."""
        for i in range(int(count)):
            yield self._make(i, trace.VAL_STREAM)

    def batches_per_epoch(self) -> int | None:
        size = int(self.params.get("epoch_size") or 0)
        if size <= 0:
            return None
        return max(1, size // self.batch_size)

    def metrics(self, outputs: dict, batch: dict) -> dict:
        with torch.no_grad():
            logits = outputs["logits"]
            correct = (logits > 0) == batch["targets"].to(torch.bool)
            words = correct.reshape(*correct.shape[:-1], trace.STATE_WORDS, trace.WORD_BITS)
            return {
                "bit_accuracy": correct.float().mean(),
                "nonshift_accuracy": words[..., _NONSHIFT, :].float().mean(),
                "state_accuracy": correct.all(dim=-1).float().mean(),
            }

    def close(self) -> None:
        self._iter_token += 1
        if self.loader is not None:
            self.loader.close()


def build_task(params: dict, ctx) -> Sha256TraceTask:
    return Sha256TraceTask(params, ctx)
