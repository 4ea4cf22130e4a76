"""text_lm: reading, caching, packing, the deterministic batch map, synthetic corpus."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from specrun.components.api import Context
from specrun.components.lm import corpus, synthetic
from specrun.components.lm.data import IGNORE, Schedule, val_indices
from specrun.components.lm.task import build_task
from specrun.components.lm.tokenizer import ByteTokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DATA = Path(__file__).resolve().parents[1] / "data" / "lm"


def ctx(tmp_path, batch=2, seed=0, rank=0, world=1) -> Context:
    return Context(seed=seed, device="cpu", batch_size=batch, rank=rank, world_size=world,
                   cache_dir=str(tmp_path / "cache"))


def files(**kw) -> dict:
    return {"source": "files", "seq_len": 32, **kw}


def decode_row(task, ids) -> str:
    return task.tokenizer.decode(ids.tolist())


# ------------------------------------------------------------------ reading ---

def test_jsonl_text_field(tmp_path):
    task = build_task(files(train=str(DATA / "text.jsonl"), val=str(DATA / "text.jsonl"), seq_len=96),
                      ctx(tmp_path))
    assert task.model_info() == {"vocab_size": 259, "seq_len": 96, "pad_id": 256, "bos_id": 257, "eos_id": 258}
    assert len(task.train) == 8  # blank line skipped
    ids, targets = task.train.gather([0])
    assert ids[0, 0] == 257 and decode_row(task, ids[0]).startswith("The quick brown fox")
    # targets are the inputs shifted by one, padding never a target
    n = len("The quick brown fox jumps over the lazy dog.".encode()) + 2
    assert (targets[0, : n - 2] == ids[0, 1 : n - 1]).all()
    assert targets[0, n - 2] == 258 and (targets[0, n - 1 :] == IGNORE).all()
    # unicode round-trips through bytes
    texts = [decode_row(task, task.train.gather([j])[0][0]) for j in range(8)]
    assert "Unicode survives byte tokenisation: café, naïve, 東京." in texts


def test_prompt_response_pairs_and_response_only_loss(tmp_path):
    p = files(train=str(DATA / "pairs.jsonl"), val=str(DATA / "pairs.jsonl"), seq_len=80, separator=" A: ",
              loss_on="response")
    task = build_task(p, ctx(tmp_path))
    ids, targets = task.train.gather([0])
    text = decode_row(task, ids[0])
    assert text == "What is 2 + 3? A: 5"
    trained = [t for t in targets[0].tolist() if t != IGNORE]
    assert trained == [ord("5"), 258]  # the response and <eos>, not the prompt
    everything = build_task({**p, "loss_on": "all"}, ctx(tmp_path))
    assert (everything.train.gather([0])[1][0] != IGNORE).sum() == len("What is 2 + 3? A: 5") + 1


def test_plain_text_units(tmp_path):
    base = files(train=str(DATA / "plain.txt"), val=str(DATA / "plain.txt"), seq_len=64)
    assert len(build_task(base, ctx(tmp_path)).train) == 3
    assert len(build_task({**base, "text_unit": "line"}, ctx(tmp_path)).train) == 4
    assert len(build_task({**base, "text_unit": "file"}, ctx(tmp_path, batch=1)).train) == 1


def test_held_out_fraction_is_disjoint_and_stable(tmp_path):
    lines = [json.dumps({"text": f"document number {i} says {i * 7 % 13}"}) for i in range(400)]
    path = tmp_path / "many.jsonl"
    path.write_text("\n".join(lines))
    p = corpus.load_records({**build_task_defaults(), "source": "files", "train": str(path), "val": None,
                             "val_fraction": 0.1})
    train, val = p
    assert 20 <= len(val) <= 70 and len(train) + len(val) == 400
    assert not {t for _, t in train} & {t for _, t in val}
    # independent of order: reversed file, same split
    path.write_text("\n".join(reversed(lines)))
    train2, val2 = corpus.load_records({**build_task_defaults(), "source": "files", "train": str(path),
                                        "val": None, "val_fraction": 0.1})
    assert sorted(val2) == sorted(val)


def build_task_defaults() -> dict:
    from specrun.components.lm.task import with_defaults
    return with_defaults({})


def test_missing_file_and_bad_record_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        build_task(files(train=str(tmp_path / "nope.jsonl")), ctx(tmp_path))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"body": "no text field"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2"):
        build_task(files(train=str(bad), val=str(bad)), ctx(tmp_path))


# ------------------------------------------------------------------ caching ---

def test_cache_is_reused_and_keyed_by_content(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps({"text": f"sample {i}"}) for i in range(20)))
    p = files(train=str(data), val=str(data))
    first = build_task(p, ctx(tmp_path))
    assert not first.from_cache
    second = build_task(p, ctx(tmp_path))
    assert second.from_cache
    assert (first.batch(3)["input_ids"] == second.batch(3)["input_ids"]).all()
    # seq_len is applied at batch time: same cache entry
    assert build_task({**p, "seq_len": 16}, ctx(tmp_path)).from_cache
    # tokenisation settings change the key
    assert not build_task({**p, "min_tokens": 5}, ctx(tmp_path)).from_cache
    # new contents: new key, even with the same path
    time.sleep(0.01)
    data.write_text("\n".join(json.dumps({"text": f"changed {i}"}) for i in range(20)))
    third = build_task(p, ctx(tmp_path))
    assert not third.from_cache
    assert decode_row(third, third.train.gather([0])[0][0]).startswith("changed")
    entries = list((tmp_path / "cache" / "text_lm" / "data").iterdir())
    assert all(not e.name.startswith(".") for e in entries)  # no temp folders left behind
    assert all((e / "meta.json").exists() for e in entries)


# ------------------------------------------------------------ batch schedule ---

def test_micro_batch_is_a_pure_function_of_seed_rank_and_index(tmp_path):
    p = {"seq_len": 64, "synthetic": {"samples": 300, "val_samples": 20}}
    a = build_task(p, ctx(tmp_path, batch=4))
    b = build_task(p, ctx(tmp_path, batch=4))
    stream = a.train_batches(0)
    seq = [next(stream) for _ in range(200)]  # crosses epoch boundaries (75 per epoch)
    assert a.batches_per_epoch() == 75
    for i in (0, 1, 74, 75, 150, 199):
        resumed = next(b.train_batches(i))
        assert torch.equal(resumed["input_ids"], seq[i]["input_ids"])
        assert torch.equal(resumed["targets"], seq[i]["targets"])
    # each epoch is a permutation: every sample once
    sched = Schedule(300, 4, seed=0)
    seen = np.concatenate([sched.indices(i) for i in range(75)])
    assert sorted(seen.tolist()) == list(range(300))
    assert not np.array_equal(np.concatenate([sched.indices(i) for i in range(75, 150)]), seen)
    other_seed = build_task(p, ctx(tmp_path, batch=4, seed=1))
    assert not torch.equal(next(other_seed.train_batches(0))["input_ids"], seq[0]["input_ids"])


def test_ranks_take_disjoint_interleaved_shares():
    world, batch = 3, 4
    scheds = [Schedule(100, batch, seed=5, rank=r, world_size=world) for r in range(world)]
    assert scheds[0].per_epoch == 100 // 3 // 4
    for i in range(scheds[0].per_epoch):
        parts = [s.indices(i) for s in scheds]
        perm = scheds[0].permutation(0)
        for r, part in enumerate(parts):
            expected = perm[(i * batch + np.arange(batch)) * world + r]
            assert np.array_equal(part, expected)
    epoch = [np.concatenate([s.indices(i) for i in range(s.per_epoch)]) for s in scheds]
    assert not set(epoch[0]) & set(epoch[1]) and not set(epoch[1]) & set(epoch[2])


def test_val_batches_are_fixed_and_sharded(tmp_path):
    task = build_task({"seq_len": 64, "synthetic": {"samples": 100, "val_samples": 30}}, ctx(tmp_path, batch=4))
    once = [b["input_ids"] for b in task.val_batches(5)]
    again = [b["input_ids"] for b in task.val_batches(5)]
    assert len(once) == 5 and all(torch.equal(x, y) for x, y in zip(once, again))
    parts = [val_indices(30, 4, 2, r, 2) for r in range(2)]
    assert set(np.concatenate(parts[0])) == set(range(0, 8 * 2, 2))
    assert set(np.concatenate(parts[1])) == set(range(1, 8 * 2, 2))


def test_concat_packing_windows(tmp_path):
    task = build_task({"seq_len": 32, "packing": "concat", "synthetic": {"samples": 50, "val_samples": 10}},
                      ctx(tmp_path))
    tokens = np.asarray(task.train.split.tokens)
    assert len(task.train) == (len(tokens) - 1) // 32
    ids, targets = task.train.gather([2])
    assert np.array_equal(ids[0], tokens[64:96]) and np.array_equal(targets[0], tokens[65:97])


def test_set_params_changes_following_batches(tmp_path):
    task = build_task({"seq_len": 64, "synthetic": {"samples": 100, "val_samples": 10}}, ctx(tmp_path))
    stream = task.train_batches(0)
    assert next(stream)["input_ids"].shape == (2, 64)
    task.set_params({"seq_len": 32})  # a phase's overrides, over the spec's own settings
    assert next(stream)["input_ids"].shape == (2, 32)
    assert next(task.val_batches(1))["input_ids"].shape == (2, 32)
    assert task.params["synthetic"]["samples"] == 100
    # a nested override: arithmetic only, the rest of the synthetic settings kept
    task.set_params({"seq_len": 32, "synthetic": {"kinds": ["arith"]}})
    assert task.params["synthetic"] == {**synthetic.DEFAULTS, "samples": 100, "val_samples": 10, "kinds": ["arith"]}
    text = decode_row(task, next(stream)["input_ids"][0])
    assert text.startswith("What is")
    task.set_params({})  # back to the spec's settings
    assert next(stream)["input_ids"].shape == (2, 64)
    with pytest.raises(ValueError, match="tokenizer"):
        task.set_params({"tokenizer": "bpe"})
    with pytest.raises(ValueError, match="no parameter"):
        task.set_params({"seq_length": 3})


def test_batch_assembly_is_cheap(tmp_path):
    task = build_task({"seq_len": 512, "packing": "concat", "synthetic": {"samples": 3000, "val_samples": 10}},
                      ctx(tmp_path, batch=32))
    task.batch(0)
    started = time.perf_counter()
    for i in range(20):
        task.train.gather(task.schedule.indices(i))
    per_batch = (time.perf_counter() - started) / 20
    assert per_batch < 0.05, per_batch  # typically ~0.5 ms for 32 x 512 tokens


# ---------------------------------------------------------------- synthetic ---

def test_synthetic_is_deterministic_and_split_disjoint():
    a_train, a_val = synthetic.generate({"samples": 3000, "val_samples": 300})
    b_train, b_val = synthetic.generate({"samples": 3000, "val_samples": 300})
    assert a_train == b_train and a_val == b_val
    assert len(a_val) == 300 and not {p + r for p, r in a_train} & {p + r for p, r in a_val}
    c_train, _ = synthetic.generate({"samples": 3000, "val_samples": 300, "seed": 1})
    assert c_train != a_train
    assert all(p.endswith("A:") and r.startswith(" ") for p, r in a_train + a_val)


def test_synthetic_answers_are_right():
    train, _ = synthetic.generate({"samples": 2000, "val_samples": 10})
    checked = 0
    for prompt, response in train:
        if prompt.startswith("What is "):
            expr = prompt[len("What is "):-len("? A:")]
            assert eval(expr) == int(response)  # noqa: S307 - our own arithmetic strings
            checked += 1
        elif "Q: What is the capital of " in prompt:
            subject = prompt.split("Q: What is the capital of ")[1][:-len("? A:")]
            assert f"The capital of {subject} is{response}." in prompt
            checked += 1
        elif prompt.startswith("If a store has"):
            words = prompt.split()
            assert int(words[4]) - int(words[8].rstrip(",")) == int(response)
            checked += 1
    assert checked > 300
    kinds = synthetic.generate({"samples": 50, "val_samples": 5, "kinds": ["arith"]})[0]
    assert all(p.startswith("What is") for p, _ in kinds)


def test_byte_tokenizer_round_trip():
    tok = ByteTokenizer()
    text = "A: 42 — ok ✓"
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode([tok.bos_id, *tok.encode("hi"), tok.eos_id, tok.pad_id]) == "hi"


# ---------------------------------------------------------------------- bpe ---

def test_bpe_tokenizer_trains_once_and_caches(tmp_path):
    p = {"tokenizer": "bpe", "bpe_vocab": 300, "seq_len": 64, "synthetic": {"samples": 400, "val_samples": 20}}
    first = build_task(p, ctx(tmp_path))
    info = first.model_info()
    assert info["vocab_size"] == 300 and {info["pad_id"], info["bos_id"], info["eos_id"]} == {0, 1, 2}
    assert first.tokenizer.vocab_size <= 300
    assert first.tokenizer.decode(first.tokenizer.encode("What is 25 + 17? A: 42")) == "What is 25 + 17? A: 42"
    second = build_task(p, ctx(tmp_path))
    assert second.from_cache and second.tokenizer.fingerprint() == first.tokenizer.fingerprint()
    ids = second.batch(0)["input_ids"]
    assert int(ids.max()) < info["vocab_size"]
    # BPE shortens the text versus bytes
    byte_task = build_task({**p, "tokenizer": "byte"}, ctx(tmp_path))
    assert len(second.train.split.tokens) < 0.8 * len(byte_task.train.split.tokens)


def test_the_model_gets_the_vocabulary_asked_for_even_where_the_corpus_runs_out(tmp_path):
    """aura's 32,000: a BPE trained on a small corpus stops short; the model's table does not."""
    p = {"tokenizer": "bpe", "bpe_vocab": 5000, "seq_len": 32, "synthetic": {"samples": 200, "val_samples": 10}}
    task = build_task(p, ctx(tmp_path))
    assert task.tokenizer.vocab_size < 5000 and task.model_info()["vocab_size"] == 5000
    assert task.tokenizer.decode([*task.tokenizer.encode("A: 42"), 4999]) == "A: 42"  # a row past the BPE


@pytest.mark.parametrize("batch, world", [(3, 1), (2, 2), (8, 1)])
def test_all_validation_batches_cover_the_split_once(tmp_path, batch, world):
    """`validation { batches all }`: every rank the same count, together every sample, no batch spare."""
    spec = files(train=str(DATA / "text.jsonl"), val=str(DATA / "text.jsonl"), seq_len=96)
    seen = set()
    counts = []
    for rank in range(world):
        task = build_task(spec, ctx(tmp_path, batch=batch, rank=rank, world=world))
        counts.append(task.val_batch_count())
        for b in task.val_batches(counts[-1]):
            seen |= {decode_row(task, row) for row in b["input_ids"]}
    size = len(task.val)
    assert len(set(counts)) == 1 and (counts[0] - 1) * batch * world < size <= counts[0] * batch * world
    assert len(seen) == len({decode_row(task, task.val.gather([i])[0][0]) for i in range(size)})
