"""Lion and GaLore: one step against the definitions, bf16 state, projector, exact state round trip."""

from __future__ import annotations

import io
import json

import jsonschema
import pytest
import torch
from torch import nn

from specrun.components.api import Context
from specrun.components.optim import galore as G
from specrun.components.optim.galore import GaLoreAdamW
from specrun.components.optim.galore import build_optimizer as build_galore_adamw
from specrun.components.optim.lion import Lion
from specrun.components.optim.lion import build_optimizer as build_lion
from specrun.resources import resource_dir

CTX = Context(seed=0, device=torch.device("cpu"), batch_size=4)
CATALOG = resource_dir("schemas", "components") / "sha256.json"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_lion_one_step_matches_definition():
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(5, 3))
    m0 = torch.randn(5, 3)
    g = torch.randn(5, 3)
    lr, b1, b2, wd = 0.01, 0.9, 0.99, 0.1
    opt = Lion([p], lr=lr, betas=(b1, b2), weight_decay=wd)
    opt.state[p]["exp_avg"] = m0.clone()
    opt.state[p]["step"] = 3
    p0 = p.detach().clone()
    p.grad = g.clone()
    opt.step()
    update = torch.sign(b1 * m0 + (1 - b1) * g)
    assert torch.allclose(p.detach(), p0 - lr * (update + wd * p0), atol=1e-7)
    assert torch.allclose(opt.state[p]["exp_avg"], b2 * m0 + (1 - b2) * g, atol=1e-7)
    assert opt.state[p]["step"] == 4


def test_lion_first_step_is_sign_of_gradient():
    p = nn.Parameter(torch.zeros(4))
    p.grad = torch.tensor([0.5, -2.0, 1e-9, 0.0])
    Lion([p], lr=0.1).step()
    assert torch.equal(p.detach(), torch.tensor([-0.1, 0.1, -0.1, 0.0]))


def test_bf16_state_dtype():
    model = nn.Linear(8, 4)
    opt = build_lion({"lr": 1e-3, "betas": [0.9, 0.99], "weight_decay": 0.0, "state_dtype": "bf16"}, model, CTX)
    model(torch.randn(2, 8)).sum().backward()
    opt.step()
    for p in model.parameters():
        assert opt.state[p]["exp_avg"].dtype == torch.bfloat16
        assert p.dtype == torch.float32
    # m = (1 - beta2) * g after one step, rounded stochastically to one of its bf16 neighbours
    exact = (1 - 0.99) * model.weight.grad
    stored = opt.state[model.weight]["exp_avg"].float()
    bits = exact.view(torch.int32) & -65536
    below, above = bits.view(torch.float32), (bits + 65536).view(torch.float32)
    assert bool(((stored == below) | (stored == above)).all())
    # the momentum stays bf16 over further steps and through a state_dict round trip
    model(torch.randn(2, 8)).sum().backward()
    opt.step()
    opt.load_state_dict(opt.state_dict())
    assert all(opt.state[p]["exp_avg"].dtype == torch.bfloat16 for p in model.parameters())


def test_galore_projector_rank_and_orthonormality():
    torch.manual_seed(1)
    for shape in [(32, 12), (12, 32)]:
        g = torch.randn(*shape)
        proj, side = G.make_projector(g, 4)
        low = G.project(g, proj, side)
        if shape[0] >= shape[1]:
            assert side == G.RIGHT and proj.shape == (4, 12) and low.shape == (32, 4)
            assert torch.allclose(proj @ proj.t(), torch.eye(4), atol=1e-5)
        else:
            assert side == G.LEFT and proj.shape == (12, 4) and low.shape == (4, 32)
            assert torch.allclose(proj.t() @ proj, torch.eye(4), atol=1e-5)
        back = G.project_back(low, proj, side)
        assert back.shape == g.shape
        assert torch.linalg.matrix_rank(back) == 4
        # the rank-4 back projection is the best rank-4 approximation (Eckart-Young)
        u, s, vh = torch.linalg.svd(g, full_matrices=False)
        best = u[:, :4] @ torch.diag(s[:4]) @ vh[:4]
        assert torch.allclose(back, best, atol=1e-4)


def test_galore_applies_to_large_matrices_only_and_refreshes():
    model = nn.Sequential(nn.Linear(16, 24), nn.LayerNorm(24), nn.Linear(24, 3))
    opt = Lion(G.decay_groups(model, 0.0), lr=1e-3, galore={"rank": 4, "update_every": 3, "scale": 0.5})
    x = torch.randn(8, 16)
    projs = []
    for _ in range(4):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
        projs.append(opt.state[model[0].weight]["galore_proj"].clone())
    big = opt.state[model[0].weight]
    assert big["galore_proj"].shape == (4, 16) and big["exp_avg"].shape == (24, 4)  # [24, 16]: right side
    assert "galore_proj" not in opt.state[model[2].weight]  # min side 3 <= rank: unprojected
    assert "galore_proj" not in opt.state[model[1].weight]  # 1-D
    assert torch.equal(projs[0], projs[1]) and torch.equal(projs[1], projs[2])  # steps 0, 1, 2
    assert not torch.equal(projs[2], projs[3])  # refreshed at step 3


def _projected_names(build, galore: dict, notes: list | None = None) -> set[str]:
    """Names of the sparse_logic_transformer weights whose optimizer state went low-rank."""
    from specrun.components.sha256.model import build_model

    torch.manual_seed(0)
    model = build_model({"width": 16, "depth": 1, "heads": 2}, {}, CTX)
    ctx = Context(seed=0, device=torch.device("cpu"), batch_size=2,
                  log=notes.append if notes is not None else None)
    opt = build({"lr": 1e-3, "galore": galore}, model, ctx)
    model({"inputs": torch.randint(0, 2, (2, 1, 320), dtype=torch.uint8)})["logits"].sum().backward()
    opt.step()
    return {n for n, p in model.named_parameters() if "galore_proj" in opt.state[p]}


@pytest.mark.parametrize("build", [build_lion, build_galore_adamw])
def test_galore_targets_attention_and_mlp_weights_by_default(build):
    """The reference's choice: attention and MLP weights; embeddings, the position table and
    the head (all larger than rank 4 here) are updated unprojected unless named."""
    blocks = {"stack.blocks.0.attn.qkv.weight", "stack.blocks.0.attn.out.weight",
              "stack.blocks.0.mlp.up.weight", "stack.blocks.0.mlp.down.weight"}
    assert _projected_names(build, {"rank": 4}) == blocks
    asked = _projected_names(build, {"rank": 4, "targets": ["attn", "mlp", "embed", "head"]})
    assert asked == blocks | {"embed.weight", "head.weight"}
    notes: list[str] = []
    assert _projected_names(build, {"rank": 4, "targets": ["atn"]}, notes) == set()
    assert notes == ["galore: no 2-D weight's name contains any of targets ['atn']; nothing is projected"]


def test_galore_lion_update_is_scaled_back_projection():
    torch.manual_seed(2)
    p = nn.Parameter(torch.randn(10, 6))
    g = torch.randn(10, 6)
    p0 = p.detach().clone()
    p.grad = g.clone()
    opt = Lion([p], lr=0.01, betas=(0.9, 0.99), galore={"rank": 2, "update_every": 5, "scale": 0.25})
    opt.step()
    proj, side = G.make_projector(g, 2)
    expected = p0 - 0.01 * 0.25 * G.project_back(torch.sign(G.project(g, proj, side)), proj, side)
    assert torch.allclose(p.detach(), expected, atol=1e-6)


def test_galore_adamw_without_projection_matches_torch_adamw():
    torch.manual_seed(3)
    a, b = nn.Linear(6, 5), nn.Linear(6, 5)
    b.load_state_dict(a.state_dict())
    ours = GaLoreAdamW(a.parameters(), lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1,
                       galore={"rank": 64, "update_every": 10, "scale": 1.0})  # rank >= sides: off
    ref = torch.optim.AdamW(b.parameters(), lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
    x = torch.randn(7, 6)
    for _ in range(5):
        for model, opt in ((a, ours), (b, ref)):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6)


def test_galore_adamw_projected_steps_match_the_definition():
    """Two steps with the projection on: AdamW's moments live in the rank-2 space of the first
    gradient's projector (refreshed every 5 steps), the update is projected back and scaled."""
    torch.manual_seed(5)
    p = nn.Parameter(torch.randn(10, 6))
    grads = [torch.randn(10, 6), torch.randn(10, 6)]
    lr, (b1, b2), eps, wd, scale = 0.01, (0.9, 0.99), 1e-8, 0.1, 0.25
    opt = GaLoreAdamW([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd,
                      galore={"rank": 2, "update_every": 5, "scale": scale})
    expected = p.detach().clone()
    proj, side = G.make_projector(grads[0], 2)
    m = v = torch.zeros_like(G.project(grads[0], proj, side))  # [10, 2]: m >= n projects on the right
    for t, g in enumerate(grads, 1):
        p.grad = g.clone()
        opt.step()
        r = G.project(g, proj, side)
        m, v = b1 * m + (1 - b1) * r, b2 * v + (1 - b2) * r * r
        update = (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + eps)
        expected = expected * (1 - lr * wd) - lr * scale * G.project_back(update, proj, side)
        assert torch.allclose(p.detach(), expected, atol=1e-6), t
    assert opt.state[p]["exp_avg"].shape == (10, 2)  # the moments are low-rank: the projection was on


def _net():
    torch.manual_seed(4)
    return nn.Sequential(nn.Linear(12, 20), nn.GELU(), nn.Linear(20, 16), nn.LayerNorm(16), nn.Linear(16, 2))


def _train(model, opt, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(9, 12, generator=gen)
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()


@pytest.mark.parametrize("build, params", [
    (build_lion, {"lr": 1e-3, "betas": [0.9, 0.99], "weight_decay": 0.1, "state_dtype": "bf16",
                  "galore": {"rank": 3, "update_every": 2, "scale": 0.25}}),
    (build_lion, {"lr": 1e-3, "betas": [0.9, 0.99], "weight_decay": 0.0, "state_dtype": "fp32"}),
    (build_galore_adamw, {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01,
                          "state_dtype": "bf16", "galore": {"rank": 3, "update_every": 2, "scale": 0.25}}),
])
def test_state_dict_round_trip_is_bit_exact(build, params):
    model = _net()
    opt = build(params, model, CTX)
    _train(model, opt, 3, seed=0)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)  # the engine never unpickles arbitrary objects

    resumed = _net()
    resumed.load_state_dict(saved["model"])
    opt2 = build(params, resumed, CTX)
    opt2.load_state_dict(saved["opt"])
    for p, q in zip(model.parameters(), resumed.parameters()):
        for key, value in opt.state[p].items():
            other = opt2.state[q][key]
            if torch.is_tensor(value):
                assert other.dtype == value.dtype and torch.equal(other, value), key
            else:
                assert other == value, key
    _train(model, opt, 5, seed=1)  # crosses projector refreshes
    _train(resumed, opt2, 5, seed=1)
    for p, q in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


def test_set_params_reconfigures():
    model = nn.Linear(3, 3)
    opt = build_lion({"lr": 1e-3, "betas": [0.9, 0.99], "weight_decay": 0.1, "state_dtype": "fp32"}, model, CTX)
    opt.set_params({"lr": 5e-4, "betas": [0.8, 0.9]})
    assert all(g["lr"] == 5e-4 and g["betas"] == (0.8, 0.9) for g in opt.param_groups)


def test_catalog_entries_are_valid_schemas_with_defaults():
    entries = json.loads(CATALOG.read_text())
    names = {(e["kind"], e["name"]) for e in entries}
    assert names == {("task", "sha256_trace"), ("model", "sparse_logic_transformer"),
                     ("optimizer", "lion"), ("optimizer", "galore_adamw")}
    for entry in entries:
        schema = entry["params"]
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["additionalProperties"] is False
        defaults = {}
        for name, prop in schema["properties"].items():
            if name == "galore" and entry["name"] == "lion":
                assert "default" not in prop  # absent: no projection
                continue
            assert "default" in prop, (entry["name"], name)
            defaults[name] = prop["default"]
        jsonschema.validate(defaults, schema)
    lion = next(e for e in entries if e["name"] == "lion")["params"]
    jsonschema.validate({"galore": {"rank": 128, "update_every": 200, "scale": 0.25}}, lion)
    assert lion["properties"]["galore"]["properties"]["targets"]["default"] == ["attn", "mlp"]
    for bad in ({"lr": 0}, {"betas": [0.9, 1.0]}, {"galore": {"rank": 0}}, {"galore": {"rnak": 4}},
                {"galore": {"targets": []}}, {"galore": {"targets": "attn"}}, {"galore": {"targets": [""]}},
                {"state_dtype": "fp16"}, {"weight_decay": -1}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, lion)


def test_catalog_resolves_implementations():
    from specrun.spec.catalog import lookup

    for kind, name in (("task", "sha256_trace"), ("model", "sparse_logic_transformer"),
                       ("optimizer", "lion"), ("optimizer", "galore_adamw")):
        entry = lookup(kind, name)
        assert entry is not None, (kind, name)
        assert callable(entry.load())
    assert lookup("task", "sha256_trace").metrics == ("bit_accuracy", "nonshift_accuracy", "state_accuracy")
