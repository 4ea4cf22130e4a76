"""The contract between the engine and the components a spec names.

The engine is generic: it knows nothing of SHA-256, text or grids. Everything
domain-specific arrives through four small interfaces, built by the factories
that the catalog (``specrun.spec.catalog``) points at.

Factories (the ``impl`` of a catalog entry is ``"module:function"``):

- task:      ``build_task(params: dict, ctx: Context) -> Task``
- model:     ``build_model(params: dict, info: dict, ctx: Context) -> torch.nn.Module``
             ``info`` is ``Task.model_info()``; the module's ``forward(batch)``
             returns a dict ``Outputs`` (below).
- loss:      ``build_loss(params: dict, ctx: Context) -> Callable[[Outputs, Batch], Tensor]``
- optimizer: ``build_optimizer(params: dict, model: nn.Module, ctx: Context) -> torch.optim.Optimizer``

``params`` are the settings of the spec's block with defaults filled in,
already checked against the entry's JSON Schema: a factory may trust them.

A Batch is a dict of tensors already on ``ctx.device``.

Outputs is a dict with at least ``"logits"``; optionally ``"aux_loss"`` (a
scalar tensor the engine adds to the loss, e.g. an ACT diversity term) and
``"metrics"`` (a dict of scalar tensors the engine logs, e.g. ``act_variance``).

Metric values are returned as 0-d tensors, not floats: converting to a Python
number forces a device sync, and the engine decides when to pay for that.

This module imports nothing heavy so that ``specrun validate`` stays torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol


@dataclass
class Context:
    """What a component may know about the run it is part of."""

    seed: int
    device: Any  # torch.device; typed loosely to keep this module torch-free
    batch_size: int  # micro-batch size per process
    rank: int = 0
    world_size: int = 1
    cache_dir: str = ".specrun-cache"  # where tokenised data and the like may be kept
    run_dir: str | None = None
    log: Any = None  # callable(str) for one-line console notes; None means silent
    extras: dict = field(default_factory=dict)

    def note(self, message: str) -> None:
        if self.log is not None:
            self.log(message)


class Task(Protocol):
    """A source of batches, and the judge of what the model made of them."""

    #: names of the metrics ``metrics()`` returns, e.g. ("accuracy", "bit_accuracy")
    metric_names: tuple[str, ...]

    def model_info(self) -> dict:
        """Shapes the model needs: e.g. {"vocab_size": 259, "seq_len": 128}."""

    def set_params(self, params: dict) -> None:
        """Curriculum change: merged task parameters of every axis's current phase.

        Batches produced after this call must reflect the new parameters; none
        of the old difficulty may be served afterwards.
        """

    def train_batches(self, start: int) -> Iterator[dict]:
        """Endless stream of training micro-batches beginning at micro-batch ``start``.

        Micro-batch ``i`` must be a pure function of (seed, rank, i, params) so
        that a resumed run sees exactly the batches the uninterrupted run saw.
        """

    def val_batches(self, count: int) -> Iterator[dict]:
        """The same ``count`` validation batches every time it is called."""

    # Optional: ``val_batch_count() -> int``, the batches that cover this rank's share of a
    # finite validation split once (what `validation { batches all }` asks for).

    def batches_per_epoch(self) -> int | None:
        """Micro-batches in one epoch of the training split (None: no epochs)."""

    def metrics(self, outputs: dict, batch: dict) -> dict:
        """0-d tensors, one per name in ``metric_names``."""

    def close(self) -> None:
        """Release workers, shared memory, files. Called exactly once, also on error."""


class Generates(Protocol):
    """Optional: tasks that can turn prompts into text samples for the log."""

    def generate(self, model: Any, prompts: list[str], max_new_tokens: int) -> list[str]: ...


class Reconfigurable(Protocol):
    """Optional, for models and optimizers a curriculum phase may re-parameterise."""

    def set_params(self, params: dict) -> None: ...


class TimeSwitched(Protocol):
    """Optional, for models with features a gate switches on (``enable when step > 5000``).

    The engine calls ``set_switch(name, on)`` whenever the gate's value changes.
    """

    def set_switch(self, name: str, on: bool) -> None: ...


class ComponentError(RuntimeError):
    """A component failed in a way its author can fix: the user's forward or dataset raising,
    a batch of the wrong shape, a setting the code does not take. The message says what and
    where (the user's own frames, specrun's left out); the run shows it without a traceback."""
