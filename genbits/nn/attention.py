"""Causal multi-head self-attention with an optional KV cache, QK layer-norm and an attention-entropy probe.

The probe serves the diagnostics (``train.diagnostics``): while ``observing`` is on, each forward pass also records
the entropy of every head's attention distribution, Ent(A_i) = −Σ_j A_ij log A_ij averaged over queries (and the
batch) — the quantity whose collapse Zhai et al. (2023) tie to transformer training instability. It is computed
under no_grad from the pre-dropout probabilities and draws no random numbers, so observing never changes training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

KV = tuple[Tensor, Tensor]  # keys and values so far: (B, heads, T_past, head_width) each


def attention_entropy(q: Tensor, k: Tensor, mask: Tensor | None) -> Tensor:
    """Per-head entropy (nats) of softmax(q kᵀ/√d) under a boolean ``mask`` (True: may attend), averaged over
    batch and queries: (heads,)."""
    scores = (q.float() @ k.float().transpose(-2, -1)) / q.shape[-1] ** 0.5  # (B, H, Tq, Tk)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    log_a = torch.log_softmax(scores, dim=-1)
    terms = torch.where(log_a.isfinite(), -log_a.exp() * log_a, torch.zeros_like(log_a))  # 0·log 0 = 0
    return terms.sum(-1).mean(dim=(0, 2))


def causal_mask(queries: int, keys: int, device: torch.device) -> Tensor:
    """Query i (the last ``queries`` of ``keys`` positions) attends to keys 0..keys−queries+i: (Tq, Tk) bool."""
    offset = keys - queries
    return torch.ones(queries, keys, dtype=torch.bool, device=device).tril(offset)


class CausalSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float, qk_norm: bool):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads, self.dropout = heads, dropout
        self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)
        head = width // heads
        self.q_norm = nn.LayerNorm(head) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(head) if qk_norm else nn.Identity()
        self.observing = False
        self.entropy: Tensor | None = None  # (heads,) from the last observed forward

    def forward(self, x: Tensor, past: KV | None = None) -> tuple[Tensor, KV]:
        """x (B, T, C) → (B, T, C) and the keys/values including these T positions (for a cache)."""
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.heads, -1).transpose(1, 2) for t in self.qkv(x).split(C, dim=2))  # (B, H, T, d)
        q, k = self.q_norm(q), self.k_norm(k)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        mask = None if k.shape[2] == T else causal_mask(T, k.shape[2], x.device)  # with a cache: offset causal
        if self.observing:
            with torch.no_grad():
                self.entropy = attention_entropy(q, k, mask if mask is not None else causal_mask(T, T, x.device))
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0, is_causal=mask is None and T > 1
        )
        return self.out(y.transpose(1, 2).reshape(B, T, C)), (k, v)
