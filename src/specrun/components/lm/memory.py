"""Optional modules of ``causal_lm``: hippocampal memory, Titans LTM + MAG, ACT head, MoE-lite.

HippocampalMemory (aura)
    A pre-normed hidden state ``x = norm(h)`` is projected to a query
    ``q = W_q x`` (``key_dim``). Two readouts, summed, then ``W_o`` (zero at
    init, so switching the memory on does not jolt the model) added to ``h``:

    - place cells: ``place_cells`` learned centres ``P`` and values ``V``;
      ``q`` is softly assigned to its ``active_cells`` most similar centres
      (softmax over the top-k similarities, zero elsewhere); readout ``a @ V``.
    - episodic replay: a ring buffer of ``replay_buffer`` (key, value) pairs,
      key = ``q`` and value = ``x`` of earlier training tokens, detached.
      Each query retrieves its ``retrieve`` best-matching stored keys (exact
      search over the whole buffer, chunked to bound memory) and attends over
      them plus a null slot (score 0, value 0), so an empty or unhelpful
      buffer reads as zero. After the read, a training forward writes
      ``writes_per_sequence`` evenly spaced tokens of every sequence. Reading
      before writing means a sequence never retrieves its own (future) tokens,
      so the model stays causal.

    The buffer is a module buffer, in the state_dict when ``persist_buffer``
    (exact resume; 100k x 768 fp32 values are ~300 MB per memory layer). The
    module runs only while switched on (``memory.enable``); off, it costs
    nothing and the model computes exactly what it would without it.

LongTermMemory + MAG (cognate, the document's fixed code, vectorised)
    ``c = W_c norm(h)``; the local memory starts from the global
    ``memory_state`` [1, 1, dim] expanded to the batch and follows
    ``m_t = decay * m_{t-1} + (1 - decay) * c_t``. Unrolled,
    ``m_t = decay^(t+1) m_0 + sum_{s<=t} (1-decay) decay^(t-s) c_s``: one
    [T, T] lower-triangular matrix product instead of a Python loop over
    tokens (exact, no ``decay^-s`` overflow). In training the global state
    becomes the batch mean of the final local memory, detached (under DDP the
    mean over every rank's batch, all-reduced, so ranks agree). Each sample's
    output depends only on that sample and the global state: batch-independent.
    Memory-as-gate: ``h + g * u`` with ``u = W_u m`` (zero at init) and
    ``g = sigmoid(W_g [norm(h); u])``.

HaltingHead (cognate ACT) and halting
    ``q = sigmoid(w . norm(h) + b)`` per token. The model (``model.py``) ponders:
    after the base stack each token's state goes through the last base block
    again, up to ``t_max`` passes in all (TRM's recursion: no new weights); a
    token halts at the first pass whose ``q >= threshold`` (or at ``t_max``), and
    its state is frozen from then on, so tokens take different numbers of steps.
    Halting reads only a token's own state, and attention stays causal, so the
    model stays a causal LM. ``halting false`` is the document's fallback: every
    token takes ``t_max`` passes. With targets present, on ``q`` at each token's
    halting pass::

        correct   = argmax(logits) == target            (no gradient)
        bce       = BCE(q, correct)     over real targets: q learns "this token is settled"
        entropy   = mean binary entropy of q over real targets
        q_var     = ((q - q.mean(dim=1, keepdim=True)) ** 2).mean()
        diversity = clamp(target_variance - q_var, min=0)
        aux_loss  = weight * (bce - entropy_weight * entropy) + diversity_weight * diversity

    The entropy bonus keeps q off 0/1 (where BCE saturates); the diversity term
    is the document's step 5 fix. Metrics: ``act_variance`` (q_var), ``act_mean``,
    ``act_steps`` (mean passes a token took).

LimbicSystem (aura's NaturalBrain, after the embeddings)
    Each token appraises its prefix: ``(a, v) = W norm(x)`` averaged over the
    positions up to it (a causal running mean), ``arousal = sigmoid(a)``,
    ``valence = tanh(v)``; the hidden state becomes
    ``x * (1 + (arousal - 0.5) * g) + valence * u`` (``g``, ``u`` learned,
    zero at init). While the switch ``limbic.modulate`` is off the state is the
    document's neutral one, arousal 0.5 and valence 0.0, under which the module
    is exactly the identity: the document's limbic warmup.

MoELite (aura's language zone)
    ``experts`` small GELU MLPs (hidden = width*mlp_ratio/experts, so the zone
    block costs one dense MLP), a linear router, top-k gates renormalised by
    softmax, and the Switch-Transformer balance loss ``E * sum_i f_i P_i``.
    Experts are computed densely and masked: simple, compile-friendly.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from specrun.components.nn import MLP, RMSNorm, SelfAttention


class HippocampalMemory(nn.Module):
    def __init__(self, width: int, key_dim: int, place_cells: int, active_cells: int,
                 replay_buffer: int, retrieve: int, writes_per_sequence: int,
                 persist_buffer: bool = True):
        super().__init__()
        self.key_dim = key_dim
        self.active_cells = min(active_cells, place_cells) if place_cells else 0
        self.retrieve = min(retrieve, replay_buffer) if replay_buffer else 0
        self.writes_per_sequence = writes_per_sequence
        self.capacity = replay_buffer
        self.norm = RMSNorm(width)
        self.query = nn.Linear(width, key_dim, bias=False)
        self.out = nn.Linear(width, width, bias=False)
        if place_cells:
            self.place_centres = nn.Parameter(torch.randn(place_cells, key_dim) / math.sqrt(key_dim))
            self.place_values = nn.Parameter(torch.zeros(place_cells, width))
        if replay_buffer:
            self.register_buffer("replay_keys", torch.zeros(replay_buffer, key_dim), persistent=persist_buffer)
            self.register_buffer("replay_values", torch.zeros(replay_buffer, width), persistent=persist_buffer)
            self.register_buffer("replay_count", torch.zeros((), dtype=torch.long), persistent=persist_buffer)
            self.register_buffer("replay_ptr", torch.zeros((), dtype=torch.long), persistent=persist_buffer)
        self.search_chunk = 1 << 25  # query x slot scores per chunk of the exact search (128 MB fp32)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = self.norm(h)
        q = self.query(x)
        read = None
        if self.active_cells:
            sims = q @ self.place_centres.t().to(q.dtype) / math.sqrt(self.key_dim)
            vals, idx = sims.topk(self.active_cells, dim=-1)
            assign = torch.zeros_like(sims).scatter(-1, idx, torch.softmax(vals.float(), -1).to(sims.dtype))
            read = assign @ self.place_values.to(assign.dtype)
        if self.retrieve:
            episodic = self._recall(q)
            read = episodic if read is None else read + episodic
            if self.training:
                self._write(q.detach(), x.detach())
        return h + self.out(read)

    def _recall(self, q: torch.Tensor) -> torch.Tensor:
        b, t, k = q.shape
        flat = q.reshape(b * t, k)
        keys, values = self.replay_keys, self.replay_values
        invalid = torch.arange(self.capacity, device=q.device) >= self.replay_count
        with torch.no_grad():
            rows = max(1, self.search_chunk // self.capacity)
            found = []
            for lo in range(0, b * t, rows):
                s = (flat[lo:lo + rows].to(keys.dtype) @ keys.t()).float()
                found.append(s.masked_fill_(invalid, float("-inf")).topk(self.retrieve, dim=-1).indices)
            idx = torch.cat(found)  # [b*t, r]
        got_k = keys[idx].to(q.dtype)  # [b*t, r, k]
        got_v = values[idx].to(q.dtype)  # [b*t, r, width]
        scores = torch.einsum("nk,nrk->nr", flat, got_k).float() / math.sqrt(self.key_dim)
        scores = scores.masked_fill(invalid[idx], float("-inf"))
        scores = torch.cat([scores, scores.new_zeros(b * t, 1)], dim=-1)  # null slot
        w = torch.softmax(scores, dim=-1)[:, :-1].to(q.dtype)
        return torch.einsum("nr,nrd->nd", w, got_v).reshape(b, t, -1)

    @torch.no_grad()
    def _write(self, q: torch.Tensor, x: torch.Tensor) -> None:
        b, t, _ = q.shape
        per = max(1, min(self.writes_per_sequence, t))
        pos = torch.div((torch.arange(per, device=q.device) + 1) * t, per, rounding_mode="floor") - 1
        keys = q[:, pos].reshape(b * per, -1)
        vals = x[:, pos].reshape(b * per, -1)
        n = keys.shape[0]
        if n > self.capacity:
            keys, vals, n = keys[-self.capacity:], vals[-self.capacity:], self.capacity
        slots = (self.replay_ptr + torch.arange(n, device=q.device)) % self.capacity
        self.replay_keys.index_copy_(0, slots, keys.to(self.replay_keys.dtype))
        self.replay_values.index_copy_(0, slots, vals.to(self.replay_values.dtype))
        self.replay_ptr.copy_((self.replay_ptr + n) % self.capacity)
        self.replay_count.copy_(torch.clamp(self.replay_count + n, max=self.capacity))


class LongTermMemory(nn.Module):
    def __init__(self, width: int, dim: int, decay: float):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ltm decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.norm = RMSNorm(width)
        self.compress = nn.Linear(width, dim, bias=False)
        self.expand = nn.Linear(dim, width, bias=False)
        self.gate = nn.Linear(2 * width, width)
        self.register_buffer("memory_state", torch.zeros(1, 1, dim))

    def recurrence(self, c: torch.Tensor, m0: torch.Tensor) -> torch.Tensor:
        """All local memories m_1..m_T [B, T, dim] from inputs c [B, T, dim] and m_0 [1, 1, dim]."""
        t = c.shape[1]
        pos = torch.arange(t, device=c.device, dtype=torch.float32)
        lag = pos[:, None] - pos[None, :]
        log_decay = math.log(self.decay) if self.decay > 0 else float("-inf")
        weights = torch.where(lag >= 0, (1 - self.decay) * torch.exp(lag.clamp(min=0) * log_decay),
                              torch.zeros((), device=c.device))
        carry = torch.exp((pos + 1) * log_decay)[:, None]  # decay^(t+1)
        return torch.einsum("ts,bsd->btd", weights.to(c.dtype), c) + carry.to(c.dtype) * m0.to(c.dtype)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = self.norm(h)
        c = self.compress(x)
        m0 = self.memory_state.clone()
        m = self.recurrence(c, m0)
        if self.training:
            with torch.no_grad():
                state = m[:, -1:].float().mean(dim=0, keepdim=True)
                if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                    dist.all_reduce(state)  # the mean over the global batch: one state on every rank
                    state /= dist.get_world_size()
                self.memory_state.copy_(state)
        u = self.expand(m)
        g = torch.sigmoid(self.gate(torch.cat([x, u], dim=-1)))
        return h + g * u


class HaltingHead(nn.Module):
    def __init__(self, width: int, weight: float, entropy_weight: float,
                 target_variance: float, diversity_weight: float):
        super().__init__()
        self.norm = RMSNorm(width)
        self.proj = nn.Linear(width, 1)
        self.weight, self.entropy_weight = weight, entropy_weight
        self.target_variance, self.diversity_weight = target_variance, diversity_weight

    def logit(self, h: torch.Tensor) -> torch.Tensor:
        """The halting logit of each token's state, [B, T, 1] in fp32."""
        return self.proj(self.norm(h)).float()

    def forward(self, z: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor | None,
                steps: torch.Tensor | None = None):
        """Loss and metrics from ``z``, each token's halting logit at the pass it halted."""
        q = torch.sigmoid(z)
        q_var = ((q - q.mean(dim=1, keepdim=True)) ** 2).mean()
        metrics = {"act_variance": q_var.detach(), "act_mean": q.mean().detach()}
        if steps is not None:
            metrics["act_steps"] = steps.float().mean().detach()
        if targets is None:
            return None, metrics
        diversity = torch.clamp(self.target_variance - q_var, min=0.0)
        valid = (targets != -100).float()
        n = valid.sum().clamp(min=1.0)
        with torch.no_grad():
            correct = (logits.argmax(-1) == targets).float()
        bce = (F.binary_cross_entropy_with_logits(z.squeeze(-1), correct, reduction="none") * valid).sum() / n
        qs = q.squeeze(-1).clamp(1e-6, 1 - 1e-6)
        entropy = (-(qs * qs.log() + (1 - qs) * (1 - qs).log()) * valid).sum() / n
        aux = self.weight * (bce - self.entropy_weight * entropy) + self.diversity_weight * diversity
        metrics["act_diversity_loss"] = diversity.detach()
        return aux, metrics


class LimbicSystem(nn.Module):
    NEUTRAL = (0.5, 0.0)  # the document's warmup state: arousal 0.5, valence 0.0

    def __init__(self, width: int):
        super().__init__()
        self.norm = RMSNorm(width)
        self.appraise = nn.Linear(width, 2)
        self.gain = nn.Parameter(torch.zeros(width))
        self.valence_dir = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor, modulate: bool) -> tuple[torch.Tensor, dict]:
        if not modulate:
            # neutral: x * (1 + (0.5 - 0.5) * g) + 0.0 * u is x itself
            return x, {}
        av = self.appraise(self.norm(x)).float()  # [B, T, 2]
        count = torch.arange(1, x.shape[1] + 1, device=x.device, dtype=av.dtype)[None, :, None]
        av = av.cumsum(dim=1) / count  # each token appraises its prefix: causal
        arousal = torch.sigmoid(av[..., :1])
        valence = torch.tanh(av[..., 1:])
        out = x * (1 + (arousal - self.NEUTRAL[0]).to(x.dtype) * self.gain) + valence.to(x.dtype) * self.valence_dir
        return out, {"limbic_arousal": arousal.mean().detach(), "limbic_valence": valence.mean().detach()}


class MoELite(nn.Module):
    def __init__(self, width: int, hidden: int, experts: int, top_k: int, dropout: float = 0.0):
        super().__init__()
        self.top_k = min(top_k, experts)
        self.router = nn.Linear(width, experts, bias=False)
        self.experts = nn.ModuleList(MLP(width, hidden, dropout) for _ in range(experts))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.router(x).float()
        probs = torch.softmax(logits, dim=-1)
        vals, idx = logits.topk(self.top_k, dim=-1)
        gates = torch.zeros_like(logits).scatter(-1, idx, torch.softmax(vals, dim=-1))
        out = sum(gates[..., e:e + 1].to(x.dtype) * expert(x) for e, expert in enumerate(self.experts))
        e = len(self.experts)
        frac = F.one_hot(idx[..., 0], e).float().mean(dim=tuple(range(idx.dim() - 1)))
        balance = e * (frac * probs.mean(dim=tuple(range(probs.dim() - 1)))).sum()
        return out, balance


class ZoneBlock(nn.Module):
    """Pre-norm block whose feed-forward is a MoELite: x + attn(norm x); x + moe(norm x)."""

    def __init__(self, width: int, heads: int, hidden: int, experts: int, top_k: int, dropout: float,
                 attn_softcap: float = 0.0):
        super().__init__()
        self.norm1 = RMSNorm(width)
        self.attn = SelfAttention(width, heads, dropout, softcap=attn_softcap)
        self.norm2 = RMSNorm(width)
        self.moe = MoELite(width, hidden, experts, top_k, dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x + self.attn(self.norm1(x))
        y, balance = self.moe(self.norm2(x))
        return x + y, balance
