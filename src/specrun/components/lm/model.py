"""Model family ``causal_lm``: a pre-norm GPT with optional brain-inspired modules.

Base: token + learned position embeddings, ``depth`` pre-norm blocks from
``specrun.components.nn`` (SDPA attention, RMSNorm, GELU MLP), final norm,
tied or untied output head, optional soft-capping of the output logits (``softcap``) and
of the attention scores before their softmax (``attn_softcap``, Gemma 2 style; savant: 50).

Options (see ``memory.py`` for the modules and ``size.py`` for defaults):

- ``memory``         hippocampal place cells + episodic replay after chosen
                     blocks; runs only while the switch ``memory.enable`` is on
                     (``set_switch``), off at start unless ``start_on``.
- ``language_zone``  MoE-lite blocks after the base stack, active from stage 2.
- ``association``    plain blocks after the language zone, active at stage 3.
- ``ltm``            Titans-style long-term memory + memory-as-gate after a
                     base block (``after_layer``, default the last).
- ``act``            per-token halting: tokens ponder through the last base block
                     up to ``t_max`` passes, each halting on its own head's q;
                     with the diversity regulariser.
- ``limbic``         emotional modulation after the embeddings; neutral (the
                     identity) while the switch ``limbic.modulate`` is off.

Staged training (aura): ``set_params({"stage": n})``. Every module exists from
construction, so the optimizer owns its parameters from step 0; a module a
stage has not reached is skipped in ``forward`` and gets no gradient (its
``.grad`` stays None, which AdamW and Muon skip). The zone's and association
blocks' output projections start at zero, so a stage change starts from the
function the model already computes. Stage and switch state travel in the
state_dict (``_extra_state``).

Initialisation is a pure function of ``ctx.seed`` and the parameters, and each
module group draws from its own seed, so a model with a switched-off memory
computes bit-for-bit what the same model without memory computes.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from specrun.components.lm.memory import HaltingHead, HippocampalMemory, LimbicSystem, LongTermMemory, ZoneBlock
from specrun.components.lm.size import estimate_parameters, has_memory, memory_layers, with_defaults
from specrun.components.nn import Block, SelfAttention, Stack, init_weights, softcap

SWITCHES = ("memory.enable", "limbic.modulate")
#: parameters that may change during a run through set_params
RUNTIME = ("stage", "softcap", "attn_softcap", "dropout")


def _seeded(seed: int, fn) -> None:
    """Run an initialiser on its own seed, leaving the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fn()


def _zero_biases(module: nn.Module) -> None:
    for name, p in module.named_parameters():
        if name.endswith("bias"):
            nn.init.zeros_(p)


class CausalLM(nn.Module):
    supports_gradient_checkpointing = True

    def __init__(self, params: dict, info: dict, seed: int = 0):
        super().__init__()
        p = with_defaults(params)
        self.params = p
        d, depth, heads = int(p["width"]), int(p["depth"]), int(p["heads"])
        self.vocab_size = int(info["vocab_size"])
        self.max_seq_len = int(p["max_seq_len"]) or int(info["seq_len"])
        self.softcap = float(p["softcap"])
        self.stage = int(p["stage"])
        hidden = int(d * p["mlp_ratio"])

        self.tok_emb = nn.Embedding(self.vocab_size, d)
        self.pos_emb = nn.Embedding(self.max_seq_len, d)
        self.drop = nn.Dropout(p["dropout"])
        attn_cap = float(p["attn_softcap"])
        self.stack = Stack(d, depth, heads, p["mlp_ratio"], p["dropout"], attn_softcap=attn_cap)
        self.head = None if p["tie_embeddings"] else nn.Linear(d, self.vocab_size, bias=False)

        def init_base():
            init_weights(self, depth)  # only base modules exist yet

        _seeded(seed, init_base)

        self.memory = nn.ModuleDict()
        self.memory_on = bool(p["memory"]["start_on"])
        if has_memory(p):
            m = p["memory"]
            for i in memory_layers(p):
                self.memory[str(i)] = HippocampalMemory(
                    d, int(m["key_dim"]), int(m["place_cells"]), int(m["active_cells"]),
                    int(m["replay_buffer"]), int(m["retrieve"]), int(m["writes_per_sequence"]),
                    bool(m["persist_buffer"]))

            def init_memory():
                init_weights(self.memory, depth)
                for mod in self.memory.values():
                    nn.init.zeros_(mod.out.weight)
                    if mod.active_cells:
                        nn.init.normal_(mod.place_centres, std=mod.key_dim ** -0.5)
                        nn.init.normal_(mod.place_values, std=0.02)

            _seeded(seed + 1, init_memory)

        z = p["language_zone"]
        self.zone = nn.ModuleList(
            ZoneBlock(d, heads, max(1, hidden // int(z["experts"])), int(z["experts"]), int(z["top_k"]),
                      p["dropout"], attn_cap)
            for _ in range(int(z["depth"])))
        self.zone_balance_weight = float(z["balance_weight"])
        self.association = nn.ModuleList(
            Block(d, heads, p["mlp_ratio"], p["dropout"], attn_softcap=attn_cap)
            for _ in range(int(p["association"]["depth"])))

        def init_stages():
            for blocks in (self.zone, self.association):
                init_weights(blocks, depth)
                for name, prm in blocks.named_parameters():
                    if name.endswith(("out.weight", "down.weight")):
                        nn.init.zeros_(prm)

        _seeded(seed + 2, init_stages)

        self.ltm = None
        self.ltm_layer = None
        if p["ltm"]["dim"] > 0:
            self.ltm = LongTermMemory(d, int(p["ltm"]["dim"]), float(p["ltm"]["decay"]))
            layer = int(p["ltm"]["after_layer"])
            self.ltm_layer = layer if layer >= 0 else depth + layer
            if not 0 <= self.ltm_layer < depth:
                raise ValueError(f"model causal_lm: ltm after_layer {layer} is outside 0..{depth - 1}")

            def init_ltm():
                init_weights(self.ltm, depth)
                nn.init.zeros_(self.ltm.expand.weight)
                _zero_biases(self.ltm)

            _seeded(seed + 3, init_ltm)

        self.act = None
        if p["act"]["enabled"]:
            a = p["act"]
            self.act = HaltingHead(d, float(a["weight"]), float(a["entropy_weight"]),
                                   float(a["target_variance"]), float(a["diversity_weight"]))
            _seeded(seed + 4, lambda: (init_weights(self.act, depth), _zero_biases(self.act)))
        self.act_t_max = int(p["act"]["t_max"])
        self.act_threshold = float(p["act"]["threshold"])
        self.act_halting = bool(p["act"]["halting"])

        self.limbic = None
        self.limbic_on = bool(p["limbic"]["start_on"])
        if p["limbic"]["enabled"]:
            self.limbic = LimbicSystem(d)
            _seeded(seed + 5, lambda: (init_weights(self.limbic, depth), _zero_biases(self.limbic)))

        # parameters the mugrokfast optimizer keeps on AdamW although they are 2-D
        self.no_muon = {n for n, _ in self.named_parameters()
                        if n.startswith(("tok_emb.", "pos_emb.", "head.")) or ".place_" in n
                        or n.startswith(("act.proj", "limbic."))}
        # for an engine that wraps the model in DDP: stage-gated and switched-off modules
        # leave parameters unused; per-rank replay buffers must not be overwritten by rank 0's
        self.ddp_options = {
            "find_unused_parameters": bool(len(self.memory) or len(self.zone) or len(self.association)
                                           or self.limbic is not None),
            "broadcast_buffers": not any(m.retrieve for m in self.memory.values()),
        }
        expected = estimate_parameters(params, info)
        actual = sum(t.numel() for t in self.parameters())
        assert actual == expected, f"size.py is out of step with model.py: {expected} != {actual}"

    # ---------------------------------------------------------- engine API ---

    def set_gradient_checkpointing(self, on: bool) -> None:
        self.stack.gradient_checkpointing = bool(on)

    def set_switch(self, name: str, on: bool) -> None:
        if name not in SWITCHES:
            raise ValueError(f"model causal_lm has no switch {name!r}; it has {list(SWITCHES)}")
        if name == "limbic.modulate":
            self.limbic_on = bool(on)
        else:
            self.memory_on = bool(on)

    def set_params(self, params: dict) -> None:
        current = self.params
        for key, value in params.items():
            if key in RUNTIME:
                continue
            old = current.get(key)
            if isinstance(old, dict) and isinstance(value, dict):
                changed = [k for k, v in value.items() if old.get(k) != v]
            else:
                changed = [key] if old != value else []
            if changed:
                raise ValueError(f"model causal_lm: {key} cannot change during a run "
                                 f"(only {', '.join(RUNTIME)} can)")
        if "stage" in params:
            stage = int(params["stage"])
            if stage not in (1, 2, 3):
                raise ValueError(f"model causal_lm: stage must be 1, 2 or 3, got {stage}")
            self.stage = stage
        if "softcap" in params:
            self.softcap = float(params["softcap"])
        if "attn_softcap" in params:
            for mod in self.modules():
                if isinstance(mod, SelfAttention):
                    mod.softcap = float(params["attn_softcap"])
        if "dropout" in params:
            rate = float(params["dropout"])
            for mod in self.modules():
                if isinstance(mod, nn.Dropout):
                    mod.p = rate
                elif hasattr(mod, "dropout") and isinstance(mod.dropout, float):
                    mod.dropout = rate
        self.params = {**current, **{k: params[k] for k in RUNTIME if k in params}}

    def get_extra_state(self):
        return {"stage": self.stage, "memory_on": self.memory_on, "limbic_on": self.limbic_on}

    def set_extra_state(self, state) -> None:
        self.stage = int(state["stage"])
        self.memory_on = bool(state["memory_on"])
        self.limbic_on = bool(state.get("limbic_on", self.limbic_on))  # older checkpoints lack it

    def num_parameters(self) -> int:
        return sum(t.numel() for t in self.parameters())

    # ------------------------------------------------------------- forward ---

    def _run(self, block, x):
        if self.stack.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, x, use_reentrant=False)
        return block(x)

    def forward(self, batch: dict) -> dict:
        ids = batch["input_ids"]
        t = ids.shape[1]
        if t > self.max_seq_len:
            raise ValueError(f"model causal_lm: sequence of {t} tokens exceeds max_seq_len {self.max_seq_len}")
        x = self.drop(self.tok_emb(ids) + self.pos_emb.weight[:t])
        metrics = {}
        if self.limbic is not None:
            x, limbic_metrics = self.limbic(x, self.limbic_on)
            metrics.update(limbic_metrics)
        for i, block in enumerate(self.stack.blocks):
            x = self._run(block, x)
            if self.memory_on and str(i) in self.memory:
                x = self.memory[str(i)](x)
            if self.ltm is not None and i == self.ltm_layer:
                x = self.ltm(x)
        aux = None
        halting = None
        if self.act is not None:
            x, halting = self._ponder(x)
        if self.stage >= 2 and len(self.zone):
            balances = []
            for block in self.zone:
                x, balance = self._run(block, x)
                balances.append(balance)
            balance = torch.stack(balances).mean()
            metrics["zone_balance"] = balance.detach()
            aux = self.zone_balance_weight * balance
        if self.stage >= 3:
            for block in self.association:
                x = self._run(block, x)
        x = self.stack.norm(x)
        weight = self.tok_emb.weight if self.head is None else self.head.weight
        logits = softcap(nn.functional.linear(x, weight), self.softcap)
        out = {"logits": logits}
        if halting is not None:
            act_aux, act_metrics = self.act(halting[0], logits, batch.get("targets"), halting[1])
            metrics.update(act_metrics)
            if act_aux is not None:
                aux = act_aux if aux is None else aux + act_aux
        if aux is not None:
            out["aux_loss"] = aux
        if metrics:
            out["metrics"] = metrics
        return out


    def _ponder(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """ACT: up to ``t_max`` passes through the last base block, each token halting on its own.

        Pass 1 is the base stack itself. A running token whose q reaches the threshold
        halts; the rest go through the block again, halted tokens keep their state (the
        block still reads them as context, causally). Returns the final states and, per
        token, (halting logit at the pass it halted [B, T, 1], passes taken [B, T]).
        """
        block = self.stack.blocks[-1]
        running = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        steps = torch.zeros(x.shape[:2], device=x.device)
        halt_z = None
        for t in range(1, self.act_t_max + 1):
            z = self.act.logit(x)
            if t == self.act_t_max:
                stop = running
            elif self.act_halting:
                stop = running & (torch.sigmoid(z[..., 0]) >= self.act_threshold)
            else:  # the document's fallback: a fixed t_max passes for every token
                stop = torch.zeros_like(running)
            halt_z = z if halt_z is None else torch.where(stop[..., None], z, halt_z)
            steps = steps + running.float()
            running = running & ~stop
            if t < self.act_t_max:
                x = torch.where(running[..., None], self._run(block, x), x)
        return x, (halt_z, steps)


def build_model(params: dict, info: dict, ctx) -> CausalLM:
    return CausalLM(params, info, seed=int(getattr(ctx, "seed", 0)))
