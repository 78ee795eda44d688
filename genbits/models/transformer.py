"""A decoder-only transformer language model over characters (GPT-2 layout, after nanoGPT's ``model.py``).

log p(x) = Σ_t log p(x_t | x_<t) for a block x of ``block_size`` characters: the input is a start token followed
by x_0..x_{T−2}, so the first character is predicted too and ``log_prob`` is the exact likelihood of the whole
block (a ``Density``: the maximum-likelihood objective trains it, in nats per block; bits/char = nats / (T ln 2)).

Swappable bits are constructor arguments: pre-LN (default) or post-LN blocks (Vaswani et al. 2017's original
layout, where instability shows), QK layer-norm, weight tying of the output layer to the token embedding, dropout,
and a weight parametrization on every linear layer (``weights``: σReparam of Zhai et al. 2023 or spectral norm; with
tying the output layer is the embedding matrix and keeps it plain). The vocabulary is a buffer, so it travels in
every checkpoint and a loaded run encodes prompts and decodes samples with the characters it was trained on.

Sampling draws one character at a time with a KV cache: each new token attends to the cached keys and values instead
of recomputing the prefix. Past the context (``block_size`` positions) the window restarts from the start token and
the latest half-context of characters, a prefix like the random block starts training saw.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genbits.errors import ConfigError
from genbits.models.base import check_how, device_of, refuse_condition, temperature
from genbits.nn.attention import KV, CausalSelfAttention
from genbits.nn.norms import WEIGHT_NORMS
from genbits.registry import MODELS

Weights = Literal["plain", "sigma-reparam", "sigma-reparam-one", "spectral"]


class MLP(nn.Sequential):
    def __init__(self, width: int, dropout: float):
        super().__init__(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width), nn.Dropout(dropout))


class Block(nn.Module):
    """Attention and MLP with residual connections; pre-LN: x + f(LN(x)); post-LN: LN(x + f(x))."""

    def __init__(self, width: int, heads: int, dropout: float, post_ln: bool, qk_norm: bool):
        super().__init__()
        self.post_ln = post_ln
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attention = CausalSelfAttention(width, heads, dropout, qk_norm)
        self.drop = nn.Dropout(dropout)
        self.mlp = MLP(width, dropout)

    def forward(self, x: Tensor, past: KV | None = None) -> tuple[Tensor, KV]:
        if self.post_ln:
            a, present = self.attention(x, past)
            x = self.norm1(x + self.drop(a))
            return self.norm2(x + self.mlp(x)), present
        a, present = self.attention(self.norm1(x), past)
        x = x + self.drop(a)
        return x + self.mlp(self.norm2(x)), present


class TransformerLM(nn.Module):
    SAMPLING_OPTIONS = ("temperature", "top_k", "top_p", "prompt", "length")

    def __init__(
        self,
        vocab: str,
        block_size: int,
        width: int = 128,
        depth: int = 4,
        heads: int = 4,
        dropout: float = 0.0,
        norm_position: Literal["pre", "post"] = "pre",
        qk_norm: bool = False,
        weights: Weights = "plain",
        tie_weights: bool = True,
    ):
        super().__init__()
        self.block_size, self.start = block_size, len(vocab)
        self.register_buffer("vocab", torch.tensor([ord(c) for c in vocab], dtype=torch.int64))
        self.token = nn.Embedding(len(vocab) + 1, width)  # the last row is the start token
        self.position = nn.Embedding(block_size, width)
        self.drop = nn.Dropout(dropout)
        post = norm_position == "post"
        self.blocks = nn.ModuleList(Block(width, heads, dropout, post, qk_norm) for _ in range(depth))
        self.norm = nn.Identity() if post else nn.LayerNorm(width)  # post-LN blocks already end in a norm
        self.head = nn.Linear(width, len(vocab) + 1, bias=False)
        self._init_weights(depth)
        if tie_weights:
            self.head.weight = self.token.weight
        if weights != "plain":
            for module in list(self.modules()):
                if isinstance(module, nn.Linear) and not (tie_weights and module is self.head):
                    WEIGHT_NORMS[weights](module)

    def _init_weights(self, depth: int) -> None:
        """GPT-2's: N(0, 0.02²), residual output layers scaled by 1/√(2·depth), zero biases."""
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.ndim >= 2:
                residual = name.endswith(("attention.out.weight", "mlp.2.weight"))
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * depth) if residual else 0.02)

    def _load_from_state_dict(self, state: dict[str, Any], prefix: str, *args: Any) -> None:
        """Refuse a checkpoint trained on other characters (the corpus under the run changed) in one line, before
        any weight is touched: its token ids would mean other characters, or not fit at all."""
        stored = state.get(prefix + "vocab")
        if stored is not None and not torch.equal(stored.cpu(), self.vocab.cpu()):
            old, new = (set(map(chr, v.tolist())) for v in (stored, self.vocab))
            changed = [f"{what} {''.join(sorted(c))!r}" for what, c in (("new", new - old), ("gone", old - new)) if c]
            raise ConfigError(
                f"data: the corpus has {len(new)} distinct characters, this run was trained on {len(old)} "
                f"({', '.join(changed)}); point data.path at the text it was trained on, or start a new --run-dir"
            )
        super()._load_from_state_dict(state, prefix, *args)

    @property
    def observing(self) -> bool:
        """Record attention entropies in forward passes (the diagnostics turn it on for logged steps)."""
        return self.blocks[0].attention.observing

    @observing.setter
    def observing(self, on: bool) -> None:
        for block in self.blocks:
            block.attention.observing = on

    def observations(self) -> dict[str, float]:
        """Attention entropy (nats) of the last observed forward pass, per layer (mean over heads) and head."""
        out = {}
        for i, block in enumerate(self.blocks):
            entropy = block.attention.entropy
            if entropy is not None:
                out[f"attention_entropy/layer{i}"] = float(entropy.mean())
                out |= {f"attention_entropy/layer{i}/head{h}": float(e) for h, e in enumerate(entropy.tolist())}
        return out

    def forward(self, tokens: Tensor, cache: list[KV] | None = None) -> tuple[Tensor, list[KV]]:
        """Logits over the vocabulary for the next character at each position: (B, T) → (B, T, V), and the KV
        cache of every layer including these positions (``cache``: the layers' keys and values so far)."""
        offset = 0 if cache is None else cache[0][0].shape[2]
        positions = torch.arange(offset, offset + tokens.shape[1], device=tokens.device)
        x = self.drop(self.token(tokens) + self.position(positions))  # (B, T, C)
        present = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, None if cache is None else cache[i])
            present.append(kv)
        return self.head(self.norm(x))[..., : self.start], present

    def inputs(self, x: Tensor) -> Tensor:
        """The start token followed by all but the last character: (B, T)."""
        return torch.cat([torch.full_like(x[:, :1], self.start), x[:, :-1]], dim=1)

    def log_prob(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """log p(x) of blocks of character ids (B, T), in nats: (B,)."""
        refuse_condition("transformer", y)
        logits, _ = self(self.inputs(x))
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # autocast's half logits in fp32
        return -F.cross_entropy(logits.transpose(1, 2), x, reduction="none").sum(1)

    def encode(self, text: str) -> Tensor:
        index = {chr(int(c)): i for i, c in enumerate(self.vocab)}
        unknown = sorted({c for c in text if c not in index})
        if unknown:
            raise ConfigError(f"--prompt: characters not in the model's vocabulary: {''.join(unknown)!r}")
        return torch.tensor([index[c] for c in text], dtype=torch.int64, device=device_of(self))

    def decode(self, tokens: Tensor) -> str:
        """Character ids (T,) → text."""
        return "".join(chr(int(c)) for c in self.vocab[tokens.cpu()])

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None, generator: torch.Generator | None = None, **how: Any) -> Tensor:
        """n texts (n, P + length) of character ids: the prompt (P characters) and ``length`` new ones (default
        block_size). ``temperature`` divides the logits; ``top_k`` keeps the k likeliest characters, ``top_p`` the
        smallest set holding probability p (Holtzman et al. 2020); top_k=1 is greedy decoding."""
        check_how("transformer", how, self.SAMPLING_OPTIONS)
        refuse_condition("transformer", y)
        pick = Picker(temperature(how), how.get("top_k"), how.get("top_p"), generator)
        length = how.get("length", self.block_size)
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ConfigError(f"sampling option length must be an integer >= 1, got {length!r}")
        text = self.encode(how.get("prompt", "")).expand(n, -1)
        logits, cache = self.restart(text, self.block_size - 1)
        for i in range(length):
            text = torch.cat([text, pick(logits[:, -1])], dim=1)
            if i == length - 1:
                break
            if cache[0][0].shape[2] < self.block_size:
                logits, cache = self(text[:, -1:], cache)
            else:  # the context is full: restart from the latest half-context
                logits, cache = self.restart(text, self.block_size // 2)
        return text

    def restart(self, text: Tensor, keep: int) -> tuple[Tensor, list[KV]]:
        """Logits and a fresh cache for the start token followed by the last ``keep`` characters of ``text``."""
        recent = text[:, max(0, text.shape[1] - keep) :]
        return self(torch.cat([torch.full((len(text), 1), self.start, device=text.device), recent], dim=1))


class Picker:
    """Draws the next token from last-position logits (B, V) with temperature, top-k and top-p."""

    def __init__(self, temp: float, top_k: Any, top_p: Any, generator: torch.Generator | None):
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ConfigError(f"sampling option top_k must be an integer >= 1, got {top_k!r}")
        if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
            raise ConfigError(f"sampling option top_p must be a number in (0, 1], got {top_p!r}")
        self.temp, self.top_k, self.top_p, self.generator = temp, top_k, top_p, generator

    def __call__(self, logits: Tensor) -> Tensor:
        logits = logits.float() / self.temp
        if self.top_k is not None and self.top_k < logits.shape[-1]:
            kth = logits.topk(self.top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if self.top_p is not None:
            ordered, order = logits.sort(dim=-1, descending=True)
            before = ordered.softmax(-1).cumsum(-1) - ordered.softmax(-1)  # mass of the likelier tokens
            drop = torch.zeros_like(before, dtype=torch.bool).scatter(-1, order, before >= self.top_p)
            logits = logits.masked_fill(drop, float("-inf"))
        probs = logits.softmax(-1).cpu()
        return torch.multinomial(probs, 1, generator=self.generator).to(logits.device)  # (B, 1)


@MODELS.register("transformer")
def transformer(
    dataset: Any,
    num_classes: int | None = None,
    width: int = 128,
    depth: int = 4,
    heads: int = 4,
    dropout: float = 0.0,
    norm_position: Literal["pre", "post"] = "pre",
    qk_norm: bool = False,
    weights: Weights = "plain",
    tie_weights: bool = True,
) -> TransformerLM:
    """A character-level transformer LM on a text dataset (its vocabulary and block_size)."""
    if not hasattr(dataset, "vocab"):
        raise ValueError(f"the transformer models text; data {type(dataset).__name__} is not a text dataset")
    if num_classes is not None:
        raise ValueError("the transformer is unconditional; the dataset has class labels")
    if width < 1 or depth < 1 or heads < 1 or width % heads:
        raise ValueError(f"width, depth and heads must be >= 1 with width divisible by heads, got {width}, {heads}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    return TransformerLM(
        dataset.vocab, dataset.block_size, width, depth, heads, dropout, norm_position, qk_norm, weights, tie_weights
    )
