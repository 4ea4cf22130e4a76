"""Hugging Face offline: a tiny causal LM from a local config or save_pretrained folder,
text from local json/csv/text files with a local tokenizer. Nothing is downloaded: the
network is cut for the whole run."""

from __future__ import annotations

import json
import socket

import pytest

from tests.engine.conftest import csv_rows, make_run, run_inproc

WORDS = "the cat sat on a mat and the dog ran to the red ball while birds sang".split()


def _project(folder, n_docs: int = 60):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[UNK]", "[EOS]"] + sorted(set(WORDS)))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="[EOS]").save_pretrained(folder / "tok")
    docs = [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(12)) for i in range(n_docs)]
    (folder / "train.jsonl").write_text("".join(json.dumps({"body": d}) + "\n" for d in docs))
    (folder / "val.csv").write_text("body\n" + "\n".join(docs[:10]) + "\n")
    (folder / "more.txt").write_text("\n".join(docs) + "\n")
    GPT2Config(vocab_size=len(vocab), n_positions=32, n_embd=16, n_layer=1, n_head=2).to_json_file(
        folder / "config.json")


SPEC = """
spec hf_tiny
seed 0
task hf_text { train "train.jsonl"; val "val.csv"; text_field body; tokenizer "tok"; seq_len 16 }
model hf_causal_lm { path "config.json" }
loss cross_entropy
metrics [perplexity, accuracy]
optimizer adamw { lr 3e-3 }
batch 4
max_steps 12
validation { every 6 steps; batches 2 }
checkpoint { every 6 steps; resume latest }
"""


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a Hugging Face component tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_tiny_causal_lm_from_a_config_trains_offline(tmp_path, monkeypatch, no_network):
    _project(tmp_path)
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "hf.train"
    spec.write_text(SPEC)
    outcome = run_inproc(spec, tmp_path / "run")
    assert outcome.status == "finished", outcome.message
    columns, rows = csv_rows(tmp_path / "run" / "metrics.csv")
    assert "val.perplexity" in columns and "train.accuracy" in columns
    losses = [float(r["train.loss"]) for r in rows if r["train.loss"]]
    assert losses[-1] < losses[0]


def test_save_pretrained_folder_loads_its_weights_and_text_files(tmp_path, monkeypatch, no_network):
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config

    _project(tmp_path)
    config = GPT2Config.from_json_file(tmp_path / "config.json")
    saved = AutoModelForCausalLM.from_config(config)
    saved.save_pretrained(tmp_path / "pretrained")  # safetensors
    monkeypatch.chdir(tmp_path)
    text = SPEC.replace('path "config.json"', 'path "pretrained"').replace(
        'train "train.jsonl"; val "val.csv"; text_field body', 'train "more.txt"')
    run = make_run(tmp_path, text.replace("validation { every 6 steps; batches 2 }", ""), "hf.train")
    try:
        mine = run.model.state_dict()
        for name, value in saved.state_dict().items():
            assert torch.equal(mine[name], value), name
        assert run.task.model_info()["vocab_size"] == config.vocab_size
    finally:
        run.task.close()


def test_paths_stay_inside_the_specs_folder(tmp_path, monkeypatch):
    _project(tmp_path)
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "hf.train"
    spec.write_text(SPEC.replace('tokenizer "tok"', 'tokenizer "../tok"'))
    outcome = run_inproc(spec, tmp_path / "run")
    assert outcome.status == "failed" and "must stay inside the spec's folder" in outcome.message
