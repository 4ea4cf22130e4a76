"""causal_lm: shapes, softcaps, checkpointing, memory switch, LTM, ACT halting, limbic, stages, size."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from specrun.components.api import Context
from specrun.components.lm.memory import LongTermMemory
from specrun.components.lm.model import build_model
from specrun.components.lm.size import estimate_parameters
from specrun.components.nn import SelfAttention, capped_attention

pytestmark = pytest.mark.usefixtures("one_torch_thread")

INFO = {"vocab_size": 259, "seq_len": 32, "pad_id": 256, "bos_id": 257, "eos_id": 258}
SMALL = {"width": 32, "depth": 2, "heads": 2}
CTX = Context(seed=0, device="cpu", batch_size=2)


def model(**kw):
    return build_model({**SMALL, **kw}, INFO, CTX)


def batch(b=2, t=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 256, (b, t + 1), generator=g)
    return {"input_ids": ids[:, :-1], "targets": ids[:, 1:]}


def test_forward_shapes_and_parameter_count():
    m = model()
    out = m(batch())
    assert out["logits"].shape == (2, 32, 259)
    assert set(out) == {"logits"}
    assert m.num_parameters() == sum(p.numel() for p in m.parameters())
    assert m(batch(t=7))["logits"].shape == (2, 7, 259)
    with pytest.raises(ValueError, match="max_seq_len"):
        m(batch(t=33))


def test_untied_head_and_tied_share_storage():
    tied, untied = model(), model(tie_embeddings=False)
    assert untied.num_parameters() == tied.num_parameters() + 259 * 32
    assert untied.head is not None and tied.head is None


FULL = {
    "memory": {"place_cells": 16, "replay_buffer": 64, "retrieve": 4, "start_on": True, "layers": [0, -1]},
    "language_zone": {"depth": 1, "experts": 3},
    "association": {"depth": 1},
    "ltm": {"dim": 8},
    "act": {"enabled": True},
    "limbic": {"enabled": True, "start_on": True},
    "attn_softcap": 20.0,
}


@pytest.mark.parametrize("extra", [
    {}, {"tie_embeddings": False}, FULL, {"memory": {"replay_buffer": 10}}, {"memory": {"place_cells": 5}},
    {"ltm": {"dim": 4}, "act": {"enabled": True}, "mlp_ratio": 3.0, "max_seq_len": 64},
])
def test_estimate_parameters_is_exact(extra):
    params = {**SMALL, **extra}
    m = build_model(params, INFO, CTX)  # the constructor asserts it too
    assert estimate_parameters(params, INFO) == sum(p.numel() for p in m.parameters())


def test_size_module_imports_without_torch():
    code = ("import sys; from specrun.components.lm.size import estimate_parameters; "
            "print(estimate_parameters({'width': 768, 'depth': 12, 'heads': 12}, "
            "{'vocab_size': 32000, 'seq_len': 512})); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    src = Path(__file__).resolve().parents[2] / "src"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": str(src)})
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) > 100_000_000


def test_softcap_bounds_logits():
    m = model(softcap=2.0)
    with torch.no_grad():
        m.tok_emb.weight.mul_(50)  # push raw logits far past the cap
        logits = m(batch())["logits"]
    assert logits.abs().max() <= 2.0
    assert logits.abs().max() > 1.9


def test_gradient_checkpointing_gives_equal_grads():
    torch.manual_seed(0)
    a, b = model(**FULL), model(**FULL)
    b.load_state_dict(a.state_dict())
    a.train(), b.train()
    b.set_gradient_checkpointing(True)
    assert b.supports_gradient_checkpointing
    data = batch()
    grads = []
    for m in (a, b):
        state = {k: v.clone() for k, v in m.state_dict().items() if isinstance(v, torch.Tensor)}
        out = m(data)
        loss = torch.nn.functional.cross_entropy(out["logits"].flatten(0, 1), data["targets"].flatten())
        (loss + out["aux_loss"]).backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None})
        m.load_state_dict(state, strict=False)
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-6, msg=name)


def test_memory_switched_off_is_identical_to_no_memory():
    plain = model()
    mem = model(memory={"place_cells": 16, "replay_buffer": 64})
    assert not mem.memory_on
    plain.eval(), mem.eval()
    data = batch()
    with torch.no_grad():
        assert torch.equal(plain(data)["logits"], mem(data)["logits"])
    mem.set_switch("memory.enable", True)
    with torch.no_grad():
        for mod in mem.memory.values():
            torch.nn.init.normal_(mod.out.weight, std=0.1)  # zero at init: make it visible
        assert not torch.equal(plain(data)["logits"], mem(data)["logits"])
    with pytest.raises(ValueError, match="no switch"):
        mem.set_switch("memory.enabled", True)


def test_memory_writes_ring_buffer_in_training_only():
    m = model(memory={"replay_buffer": 10, "writes_per_sequence": 3, "retrieve": 4, "start_on": True})
    mod = next(iter(m.memory.values()))
    m.eval()
    with torch.no_grad():
        m(batch())
    assert int(mod.replay_count) == 0
    m.train()
    m(batch(seed=1))  # 2 sequences x 3 writes
    assert int(mod.replay_count) == 6 and int(mod.replay_ptr) == 6
    m(batch(seed=2))
    assert int(mod.replay_count) == 10 and int(mod.replay_ptr) == 2  # wrapped
    name = next(iter(m.memory.keys()))
    assert {f"memory.{name}.replay_{k}" for k in ("keys", "values", "count", "ptr")} <= set(m.state_dict())
    out = m(batch(seed=3))["logits"]
    out.sum().backward()
    assert mod.query.weight.grad is not None  # the read is differentiable through the query


def test_memory_read_is_causal():
    m = model(memory={"place_cells": 16, "replay_buffer": 32, "start_on": True, "retrieve": 4})
    with torch.no_grad():
        for mod in m.memory.values():
            torch.nn.init.normal_(mod.out.weight, std=0.1)
    m.train()
    for s in range(3):
        m(batch(seed=10 + s))  # fill the buffer
    m.eval()
    data = batch()
    changed = {k: v.clone() for k, v in data.items()}
    changed["input_ids"][:, 20:] = (changed["input_ids"][:, 20:] + 1) % 256
    with torch.no_grad():
        a, b = m(data)["logits"], m(changed)["logits"]
    torch.testing.assert_close(a[:, :20], b[:, :20])
    assert not torch.allclose(a[:, 20:], b[:, 20:])


def reference_ltm(ltm: LongTermMemory, c: torch.Tensor) -> torch.Tensor:
    """The document's loop, token by token."""
    memory = ltm.memory_state.expand(c.shape[0], -1, -1).clone()
    out = []
    for t in range(c.shape[1]):
        memory = ltm.decay * memory + (1 - ltm.decay) * c[:, t:t + 1, :]
        out.append(memory)
    return torch.cat(out, dim=1)


def test_ltm_vectorised_recurrence_matches_the_loop():
    ltm = LongTermMemory(16, 8, decay=0.9)
    ltm.memory_state.normal_()
    c = torch.randn(3, 50, 8)
    torch.testing.assert_close(ltm.recurrence(c, ltm.memory_state.clone()), reference_ltm(ltm, c),
                               rtol=1e-5, atol=1e-5)


def test_ltm_is_batch_independent_and_its_state_is_saved():
    m = model(ltm={"dim": 8})
    with torch.no_grad():
        m.ltm.expand.weight.normal_(std=0.1)
        m.ltm.memory_state.normal_()
    m.train()
    x0 = batch(b=1, seed=0)
    others = [batch(b=3, seed=1), batch(b=3, seed=2)]
    start = m.ltm.memory_state.clone()
    results = []
    for other in others:
        m.ltm.memory_state.copy_(start)
        mixed = {k: torch.cat([x0[k], other[k]]) for k in x0}
        results.append(m(mixed)["logits"][0])
    torch.testing.assert_close(results[0], results[1])
    # training updates the global state (batch mean), detached; eval does not
    assert not torch.equal(m.ltm.memory_state, start)
    assert not m.ltm.memory_state.requires_grad
    assert m.ltm.memory_state.shape == (1, 1, 8)
    assert "ltm.memory_state" in m.state_dict()
    m.eval()
    before = m.ltm.memory_state.clone()
    with torch.no_grad():
        m(x0)
    assert torch.equal(before, m.ltm.memory_state)


def test_ltm_state_update_is_batch_mean_of_final_memory():
    ltm = LongTermMemory(16, 8, decay=0.8)
    ltm.train()
    h = torch.randn(4, 10, 16)
    c = ltm.compress(ltm.norm(h))
    expected = reference_ltm(ltm, c)[:, -1:].mean(dim=0, keepdim=True)
    ltm(h)
    torch.testing.assert_close(ltm.memory_state, expected.detach(), rtol=1e-5, atol=1e-6)


def test_act_variance_metric_and_diversity_loss():
    m = model(act={"enabled": True, "weight": 0.0, "entropy_weight": 0.0, "target_variance": 0.1,
                   "diversity_weight": 1.0})
    out = m(batch())
    x = m.stack.norm
    # recompute q from the head on the same features
    with torch.no_grad():
        feats = {}
        hook = x.register_forward_hook(lambda mod, i, o: feats.setdefault("h", o))
        m(batch())
        hook.remove()
        q = torch.sigmoid(m.act.proj(m.act.norm(feats["h"])).float())
    q_var = ((q - q.mean(dim=1, keepdim=True)) ** 2).mean()
    torch.testing.assert_close(out["metrics"]["act_variance"], q_var)
    torch.testing.assert_close(out["aux_loss"], torch.clamp(0.1 - q_var, min=0.0))
    assert not out["metrics"]["act_variance"].requires_grad
    assert out["aux_loss"].requires_grad and out["metrics"]["act_variance"].dim() == 0
    # generation batches have no targets: metrics but no aux loss
    gen = m({"input_ids": batch()["input_ids"]})
    assert "aux_loss" not in gen and "act_variance" in gen["metrics"]


def test_act_full_aux_loss_formula():
    a = {"enabled": True, "weight": 0.3, "entropy_weight": 0.05, "target_variance": 0.1, "diversity_weight": 0.01}
    m = model(act=a)
    data = {k: v.clone() for k, v in batch().items()}
    data["targets"][:, -5:] = -100
    feats = {}
    hook = m.stack.norm.register_forward_hook(lambda mod, i, o: feats.setdefault("h", o))
    out = m(data)
    hook.remove()
    z = m.act.proj(m.act.norm(feats["h"])).float().squeeze(-1)
    q = torch.sigmoid(z)
    valid = data["targets"] != -100
    correct = (out["logits"].argmax(-1) == data["targets"]).float()
    bce = torch.nn.functional.binary_cross_entropy(q[valid], correct[valid])
    ent = -(q * q.log() + (1 - q) * (1 - q).log())[valid].mean()
    q_var = ((q - q.mean(dim=1, keepdim=True)) ** 2).mean()
    expected = 0.3 * (bce - 0.05 * ent) + 0.01 * torch.clamp(0.1 - q_var, min=0)
    torch.testing.assert_close(out["aux_loss"], expected, rtol=1e-5, atol=1e-6)


def test_stages_gate_modules_and_gradients():
    m = model(stage=1, language_zone={"depth": 1}, association={"depth": 1})
    data = batch()
    out = m(data)
    assert "aux_loss" not in out
    out["logits"].sum().backward()
    assert all(p.grad is None for p in m.zone.parameters())
    assert all(p.grad is None for p in m.association.parameters())
    m.zero_grad()
    m.set_params({"stage": 2})
    with torch.no_grad():
        before = m(data)["logits"]  # zero-initialised output projections: same function
    out = m(data)
    torch.testing.assert_close(out["logits"], before)
    (out["logits"].sum() + out["aux_loss"]).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.zone.parameters())
    assert all(p.grad is None for p in m.association.parameters())
    assert "zone_balance" in out["metrics"]
    m.set_params({"stage": 3})
    m(data)["logits"].sum().backward()
    assert any(p.grad is not None for p in m.association.parameters())
    with pytest.raises(ValueError, match="width cannot change"):
        m.set_params({"width": 64})
    with pytest.raises(ValueError, match="stage"):
        m.set_params({"stage": 4})


def test_stage_and_switch_travel_in_the_state_dict():
    m = model(stage=1, memory={"place_cells": 4})
    m.set_params({"stage": 2})
    m.set_switch("memory.enable", True)
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    fresh = model(stage=1, memory={"place_cells": 4})
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert fresh.stage == 2 and fresh.memory_on


def test_init_is_a_pure_function_of_seed():
    torch.manual_seed(123)
    a = model(**FULL)
    torch.manual_seed(456)
    b = model(**FULL)
    for (n, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        if isinstance(x, torch.Tensor):
            assert torch.equal(x, y), n
    c = build_model({**SMALL, **FULL}, INFO, Context(seed=1, device="cpu", batch_size=2))
    assert not torch.equal(a.tok_emb.weight, c.tok_emb.weight)


def test_dropout_and_softcap_are_runtime_params():
    m = model(dropout=0.1)
    m.set_params({"dropout": 0.0, "softcap": 5.0})
    assert all(mod.p == 0.0 for mod in m.modules() if isinstance(mod, torch.nn.Dropout))
    m.train()
    data = batch()
    torch.testing.assert_close(m(data)["logits"], m(data)["logits"])
    assert m(data)["logits"].abs().max() <= 5.0


def test_bf16_weights_and_autocast_run_every_module():
    m = model(**FULL, tie_embeddings=False)
    m.train()
    data = batch(t=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(data)
        (out["logits"].float().sum() + out["aux_loss"]).backward()
    m.zero_grad()
    m.to(torch.bfloat16)  # savant: weights and buffers in bf16
    out = m(data)
    (out["logits"].float().sum() + out["aux_loss"]).backward()
    assert out["logits"].dtype == torch.bfloat16
    assert torch.isfinite(out["logits"].float()).all()


@pytest.mark.slow
def test_compiles_without_graph_breaks_and_matches_eager():
    import torch._dynamo as dynamo

    dynamo.reset()
    dynamo.utils.counters.clear()
    m, ref = model(**FULL), model(**FULL)
    ref.load_state_dict(m.state_dict())
    compiled = torch.compile(m, backend="aot_eager")  # graph capture + functionalisation, no codegen
    for s in range(2):
        data = batch(seed=s)
        out, want = compiled(data), ref(data)
        (out["logits"].sum() + out["aux_loss"]).backward()
        (want["logits"].sum() + want["aux_loss"]).backward()
        torch.testing.assert_close(out["logits"], want["logits"])
    torch.testing.assert_close(m.ltm.memory_state, ref.ltm.memory_state)
    assert not dynamo.utils.counters["graph_break"]


# ---- the documents' features: attention softcap (savant), ACT halting (cognate), limbic warmup (aura)

def qkv(seed=0, t=6, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 3, t, 8, generator=g) * scale for _ in range(3)]


# ---- attention softcap -----------------------------------------------------------------------

def test_a_cap_far_above_the_scores_is_plain_attention():
    q, k, v = qkv()
    for causal in (True, False):
        torch.testing.assert_close(capped_attention(q, k, v, 1e9, causal=causal),
                                   F.scaled_dot_product_attention(q, k, v, is_causal=causal),
                                   rtol=1e-5, atol=1e-6)
    mask = torch.rand(6, 6, generator=torch.Generator().manual_seed(1)) > 0.3
    mask[:, 0] = True  # every query attends somewhere
    torch.testing.assert_close(capped_attention(q, k, v, 1e9, mask=mask),
                               F.scaled_dot_product_attention(q, k, v, attn_mask=mask), rtol=1e-5, atol=1e-6)


def test_scores_are_capped_before_the_softmax():
    q, k, v = qkv(scale=6.0)  # scores far past the cap
    cap = 2.0
    scores = q @ k.transpose(-2, -1) / 8 ** 0.5
    capped = cap * torch.tanh(scores / cap)
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    expected = torch.softmax(capped.masked_fill(~causal, float("-inf")), -1) @ v
    torch.testing.assert_close(capped_attention(q, k, v, cap, causal=True), expected, rtol=1e-5, atol=1e-6)
    # the attention weights of a capped score can be at most e^(2 cap) apart
    probs = torch.softmax(capped, -1)
    assert (probs.max(-1).values / probs.min(-1).values).max() <= torch.exp(torch.tensor(2 * cap)) * 1.0001


def test_attn_softcap_changes_every_attention_and_is_a_runtime_param():
    data = batch()
    plain, capped = model(), model(attn_softcap=0.05)
    with torch.no_grad():
        assert not torch.allclose(plain(data)["logits"], capped(data)["logits"])
        capped.set_params({"attn_softcap": 0.0})
        torch.testing.assert_close(plain(data)["logits"], capped(data)["logits"], rtol=1e-5, atol=1e-5)
    staged = model(attn_softcap=50.0, language_zone={"depth": 1}, association={"depth": 1})
    caps = [m.softcap for m in staged.modules() if isinstance(m, SelfAttention)]
    assert len(caps) == 4 and set(caps) == {50.0}  # base blocks, the zone and the association


def test_attn_softcap_stays_causal():
    m = model(attn_softcap=1.0)
    data = batch()
    other = {k: v.clone() for k, v in data.items()}
    other["input_ids"][:, 20:] = (other["input_ids"][:, 20:] + 1) % 256
    with torch.no_grad():
        torch.testing.assert_close(m(data)["logits"][:, :20], m(other)["logits"][:, :20])


# ---- ACT halting -----------------------------------------------------------------------------

def _act(**kw):
    return {"enabled": True, **kw}


def test_tokens_halt_after_different_numbers_of_passes():
    m = model(act=_act(t_max=4))
    with torch.no_grad():
        m.act.proj.weight.normal_(0, 2.0)  # q far from 0.5, and different per token
        out = m(batch())
    steps = out["metrics"]["act_steps"]
    assert 1.0 < float(steps) < 4.0  # some tokens halted at pass 1, some pondered on


def test_halting_at_the_first_pass_is_the_single_pass_model():
    data = batch()
    with torch.no_grad():
        once = model(act=_act(t_max=1))(data)
        early = model(act=_act(t_max=3, threshold=1e-9))(data)  # every q >= 1e-9: halts at pass 1
    torch.testing.assert_close(once["logits"], early["logits"])
    assert float(early["metrics"]["act_steps"]) == 1.0


def test_no_halting_is_the_fixed_t_max_fallback():
    data = batch()
    with torch.no_grad():
        fixed = model(act=_act(t_max=3, halting=False))(data)
        never = model(act=_act(t_max=3, threshold=1.0))(data)  # q < 1 always: nobody halts early
        once = model(act=_act(t_max=1))(data)
    assert float(fixed["metrics"]["act_steps"]) == 3.0
    torch.testing.assert_close(fixed["logits"], never["logits"])
    assert not torch.allclose(fixed["logits"], once["logits"])  # the extra passes compute


def test_halting_keeps_the_model_causal_and_trains():
    m = model(act=_act(t_max=3))
    with torch.no_grad():
        m.act.proj.weight.normal_(0, 2.0)
    data = batch()
    other = {k: v.clone() for k, v in data.items()}
    other["input_ids"][:, 16:] = (other["input_ids"][:, 16:] + 7) % 256
    with torch.no_grad():
        torch.testing.assert_close(m(data)["logits"][:, :16], m(other)["logits"][:, :16])
    out = m(data)
    (F.cross_entropy(out["logits"].reshape(-1, 259), data["targets"].reshape(-1)) + out["aux_loss"]).backward()
    assert m.act.proj.weight.grad is not None and m.stack.blocks[-1].attn.qkv.weight.grad.abs().sum() > 0


# ---- limbic system ---------------------------------------------------------------------------

def test_limbic_warmup_is_the_neutral_state():
    data = batch()
    bare = model()
    limbic = model(limbic={"enabled": True})
    with torch.no_grad():
        limbic.limbic.gain.fill_(0.5)
        limbic.limbic.valence_dir.normal_()
        # switched off (the default before its gate holds): arousal 0.5, valence 0 is the identity
        torch.testing.assert_close(limbic(data)["logits"], bare(data)["logits"])
        limbic.set_switch("limbic.modulate", True)
        on = limbic(data)
    assert not torch.allclose(on["logits"], bare(data)["logits"])
    assert set(on["metrics"]) >= {"limbic_arousal", "limbic_valence"}
    assert limbic.get_extra_state()["limbic_on"] is True


def test_limbic_modulation_is_causal():
    m = model(limbic={"enabled": True, "start_on": True})
    with torch.no_grad():
        m.limbic.gain.fill_(1.0)
        m.limbic.valence_dir.normal_()
    data = batch()
    other = {k: v.clone() for k, v in data.items()}
    other["input_ids"][:, 10:] = (other["input_ids"][:, 10:] + 3) % 256
    with torch.no_grad():
        torch.testing.assert_close(m(data)["logits"][:, :10], m(other)["logits"][:, :10])
