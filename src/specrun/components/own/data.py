"""The user's datasets as a specrun Task: a seeded, resumable sampler over a map-style
Dataset, or an IterableDataset read in order.

The data is named by a function or class (``task "data.py:digits" { size 2000 }``).
It is called with the spec's settings and, when it takes a ``split`` parameter,
once with ``split="train"`` and once with ``split="val"``; otherwise it returns
the training dataset, or ``(train, val)``, or ``{"train": ..., "val": ...}``.

Exact resume: micro-batch ``i`` of a map-style dataset is a pure function of
(seed, rank, i): epoch ``e = i // batches_per_epoch`` draws its own permutation
from a generator seeded by (seed, e), and the batch is a slice of it. A resumed
run starting at micro-batch ``i`` loads exactly the samples the uninterrupted run
loaded, whatever the DataLoader's workers. An IterableDataset is read from its
start and the first ``i`` batches are skipped, exact when the dataset is
deterministic.
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Mapping

import torch
from torch.utils.data import DataLoader, IterableDataset

from specrun.components.api import ComponentError, Context
from specrun.components.own import loader
from specrun.components.own.batches import as_batch

SIMPLE = (bool, int, float, str)


def _kind(ds, what: str) -> str:
    if isinstance(ds, IterableDataset):
        return "iterable"
    if hasattr(ds, "__getitem__") and hasattr(ds, "__len__"):
        return "map"
    if hasattr(ds, "__iter__"):
        return "iterable"
    raise ComponentError(f"{what} gave {type(ds).__name__}, not a dataset: return a torch Dataset "
                         "(__len__ and __getitem__) or an IterableDataset")


class _Endless:
    """Index batches from micro-batch ``start`` on, forever: the sampler a resumed run rebuilds."""

    def __init__(self, task: "DatasetTask", start: int):
        self.task, self.start = task, start

    def __iter__(self):
        for i in itertools.count(self.start):
            yield self.task.indices(i)


class DatasetTask:
    """A specrun Task over a training and an optional validation dataset."""

    base: str | None = None  # the user's folder: their frames are the ones shown on failure

    def __init__(self, ctx: Context, what: str):
        self.ctx, self.what = ctx, what
        loading = ctx.extras.get("dataloader") or {}
        self.workers = int(loading.get("workers", 0))
        self.pin = bool(loading.get("pin_memory", False)) and getattr(ctx.device, "type", "cpu") == "cuda"
        self.metric_names: tuple[str, ...] = ()
        self._iter = None
        self._perm: tuple[int, torch.Tensor] | None = None

    def use(self, train, val) -> None:
        if train is None:
            raise ComponentError(f"{self.what} gave no training data")
        self.train, self.val = train, val
        self.train_kind = _kind(self.train, self.what)
        self.val_kind = _kind(self.val, self.what) if self.val is not None else None
        self._perm = None
        if self.train_kind == "map":
            size = self._len(self.train, "training")
            per = self.ctx.batch_size * self.ctx.world_size
            if size < per:
                raise ComponentError(f"{self.what}: the training set has {size} samples, fewer than one batch "
                                     f"({per}); lower `batch` or give more data")
            self.per_epoch = size // per
        else:
            self.per_epoch = None

    def _len(self, ds, split: str) -> int:
        try:
            return len(ds)
        except Exception as exc:
            raise loader.failure(f"{self.what}: len() of the {split} set failed", exc, self.base) from exc

    # ---- what the engine asks --------------------------------------------------------------

    def model_info(self) -> dict:
        """Shapes the data announces: a `model_info` dict (or method) of the training set, and its
        public attributes of simple types (``num_classes = 10``)."""
        info = {}
        classes = [c for c in reversed(type(self.train).__mro__)
                   if not c.__module__.startswith(("torch", "builtins", "typing"))]
        for source in classes + [self.train]:
            for key, value in vars(source).items() if hasattr(source, "__dict__") else ():
                if not key.startswith("_") and isinstance(value, SIMPLE):
                    info[key] = value
        announced = getattr(self.train, "model_info", None)
        if callable(announced):
            announced = loader.call(f"{self.what}: model_info()", self.base, announced)
        if isinstance(announced, Mapping):
            info.update(announced)
        return info

    def set_params(self, params: dict) -> None:
        raise ComponentError(f"{self.what} cannot change its settings during a run")

    def batches_per_epoch(self) -> int | None:
        return self.per_epoch

    def _generator(self, *salt: int) -> torch.Generator:
        value = self.ctx.seed
        for s in salt:
            value = (value * 1_000_003 + s + 1) % (2**63 - 1)
        return torch.Generator().manual_seed(value)

    def indices(self, i: int) -> list[int]:
        """The sample indices of micro-batch ``i`` on this rank."""
        epoch, pos = divmod(i, self.per_epoch)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, torch.randperm(len(self.train), generator=self._generator(1, epoch)))
        size, rank = self.ctx.batch_size, self.ctx.rank
        lo = pos * size * self.ctx.world_size + rank * size
        return self._perm[1][lo:lo + size].tolist()

    def _loader(self, ds, **kwargs) -> DataLoader:
        return DataLoader(ds, num_workers=self.workers, pin_memory=self.pin,
                          generator=self._generator(2, kwargs.pop("salt", 0)), **kwargs)

    def _stream(self, batches, split: str):
        base = self.base
        it = iter(batches)
        while True:
            try:
                collated = next(it)
            except StopIteration:
                return
            except Exception as exc:
                raise loader.failure(f"{self.what}: loading a {split} batch failed", exc, base) from exc
            try:
                yield as_batch(collated, self.ctx.device, self.pin)
            except TypeError as exc:
                raise ComponentError(f"{self.what}: {exc}") from None

    def train_batches(self, start: int):
        self._close_iter()
        if self.train_kind == "map":
            self._iter = iter(self._loader(self.train, batch_sampler=_Endless(self, start), salt=start))
            return self._stream(self._iter, "training")
        return self._iterable_train(start)

    def _iterable_train(self, start: int):
        world, rank = self.ctx.world_size, self.ctx.rank

        def epochs():
            for epoch in itertools.count():
                self._iter = iter(self._loader(self.train, batch_size=self.ctx.batch_size, salt=epoch))
                empty = True
                for j, batch in enumerate(self._iter):
                    empty = False
                    if j % world == rank:
                        yield batch
                if empty:
                    raise ComponentError(f"{self.what}: the training set yielded no batch")

        return self._stream(itertools.islice(epochs(), start, None), "training")

    def _val_ranges(self) -> list[list[int]]:
        size, world, rank = self.ctx.batch_size, self.ctx.world_size, self.ctx.rank
        n = self._len(self.val, "validation")
        per = size * world
        count = math.ceil(n / per) if world == 1 else max(1, n // per)
        return [list(range(g * per + rank * size, min(n, g * per + rank * size + size))) for g in range(count)]

    def val_batch_count(self) -> int:
        self._need_val()
        if self.val_kind != "map":
            raise ComponentError(f"{self.what}: validation.batches all needs a validation set with a length")
        return len(self._val_ranges())

    def _need_val(self) -> None:
        if self.val is None:
            raise ComponentError(f"{self.what} gives no validation data but the spec validates: return "
                                 "(train, val), or take a `split` parameter, or drop the validation block")

    def val_batches(self, count: int):
        self._need_val()
        if self.val_kind == "map":
            ranges = [r for r in self._val_ranges() if r][:count]
            return self._stream(self._loader(self.val, batch_sampler=ranges), "validation")
        world, rank = self.ctx.world_size, self.ctx.rank
        mine = (b for j, b in enumerate(self._loader(self.val, batch_size=self.ctx.batch_size))
                if j % world == rank)
        return self._stream(itertools.islice(mine, count), "validation")

    def metrics(self, outputs: dict, batch: dict) -> dict:
        return {}  # the spec's `metrics` add theirs (specrun.components.own.metrics)

    def _close_iter(self) -> None:
        shutdown = getattr(self._iter, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        self._iter = None

    def close(self) -> None:
        self._close_iter()


class OwnTask(DatasetTask):
    """The user's data function or class (``task "data.py:blobs" { size 256 }``)."""

    def __init__(self, code: dict, params: dict, ctx: Context):
        super().__init__(ctx, f"task {code['reference']}")
        self.code, self.params, self.base = code, dict(params), code.get("base")
        self.fn = loader.import_code(code, self.what)
        self._build()

    def _build(self) -> None:
        try:
            takes = inspect.signature(self.fn).parameters
        except (TypeError, ValueError):
            takes = {}
        loader.check_settings(self.what, self.fn, self.params, supplied=("split",))
        if "split" in takes:
            train = loader.call(f"{self.what} (split train)", self.base, self.fn, split="train", **self.params)
            val = loader.call(f"{self.what} (split val)", self.base, self.fn, split="val", **self.params)
        else:
            train, val = self._splits(loader.call(self.what, self.base, self.fn, **self.params))
        self.use(train, val)

    def _splits(self, made):
        if isinstance(made, Mapping):
            unknown = set(made) - {"train", "val", "validation"}
            if "train" not in made or unknown:
                raise ComponentError(f"{self.what} returned a dict with keys {sorted(made)}; expected "
                                     "'train' and optionally 'val'")
            return made["train"], made.get("val", made.get("validation"))
        if isinstance(made, tuple) and len(made) == 2:  # (train, val); a list is a dataset of samples
            return made
        return made, None

    def set_params(self, params: dict) -> None:
        """A curriculum phase changed the data's settings: build the datasets again."""
        self.params.update(params)
        self._build()


def build_task(code: dict, params: dict, ctx: Context) -> OwnTask:
    return OwnTask(code, params, ctx)
