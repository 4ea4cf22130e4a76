"""causal_lm's document features: attention-score soft-capping (savant), ACT halting
(cognate) and the limbic system with its warmup switch (aura)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from specrun.components.api import Context
from specrun.components.lm.model import build_model
from specrun.components.nn import SelfAttention, capped_attention

INFO = {"vocab_size": 259, "seq_len": 32, "pad_id": 256, "bos_id": 257, "eos_id": 258}
SMALL = {"width": 32, "depth": 2, "heads": 2}
CTX = Context(seed=0, device="cpu", batch_size=2)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def model(**kw):
    return build_model({**SMALL, **kw}, INFO, CTX)


def batch(b=2, t=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 256, (b, t + 1), generator=g)
    return {"input_ids": ids[:, :-1], "targets": ids[:, 1:]}


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
