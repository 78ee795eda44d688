"""What genbits' language-model machinery costs: its training step against a plain PyTorch loop, and KV-cached
sampling against recomputing the whole context for every new character.

    python benchmarks/lm.py [--width 96] [--depth 3] [--block 64] [--batch 32] [--steps 60] [--chunk 5]
                            [--threads 2] [--tokens 256] [--no-compile]

Table 1, the training step (target ≥ 0.95× the plain loop's tokens/s). genbits' ``gd`` rule on a ``GradientField``
(as the loop steps it: objective → autograd.grad → AdamW with decay groups) against a nanoGPT-style loop over a deep
copy of the same transformer: ``loss = -model.log_prob(x).mean(); loss.backward(); opt.step(); zero_grad``,
AdamW with the same parameter groups, the same pre-drawn batches. They alternate in chunks of ``chunk`` steps, the
order flipping every round; the ratio is the median of same-round ratios. The largest parameter difference at the end
checks the work is the same: both differentiate the same loss (nats per block; nanoGPT's per-character mean would
differ only by the factor T, which Adam's update ignores up to its ε), so it is float rounding or zero. Peak memory is
CUDA's ``max_memory_allocated`` on a GPU (not measured on CPU). The table has a row without and a row with
``train.compile``'s ``model.compile()`` on both sides (minutes of compilation first, on the first chunk of each
side, which is left out of the timing); ``--no-compile`` skips the second, and where torch.compile fails on the
machine its row says why.

Table 2, sampling ``tokens`` characters greedily (target ≥ 5×): ``model.sample`` (one new position per step against
the KV cache) against the reference that runs the model over the whole window (start token + up to block−1
characters) for every character. With greedy decoding both must produce the same text (checked).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

import genbits.components  # noqa: F401  (fills the registries)
from genbits.config import load_config
from genbits.data.base import Batch
from genbits.data.text import TextDataset
from genbits.models.transformer import TransformerLM
from genbits.objectives.likelihood import MaximumLikelihood
from genbits.optim.field import GradientField
from genbits.optim.rules import Batches, decay_groups, make_optimizer
from genbits.registry import RULES


def corpus(block: int) -> TextDataset:
    generator = torch.Generator().manual_seed(0)
    return TextDataset(
        torch.randint(0, 64, (200_000,), generator=generator), "".join(map(chr, range(64, 128))), block, "b"
    )


def train_steps(args: argparse.Namespace, compiled: bool) -> dict[str, float]:
    data = corpus(args.block)
    generator = torch.Generator().manual_seed(1)
    batches = [data.get(torch.randint(0, len(data), (args.batch,), generator=generator)) for _ in range(args.steps)]
    torch.manual_seed(0)
    model = TransformerLM(data.vocab, args.block, args.width, args.depth, heads=4)
    plain = copy.deepcopy(model)
    if compiled:
        model.compile()
        plain.compile()
    config = load_config({"optim": {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.1, "decay": "matrices"}})
    field = GradientField(model, MaximumLikelihood(chars=args.block), {"model": model})
    rule = RULES.build("gd", {}, players={"model": model}, optim=config.optim, field=field)
    settings = config.optim.for_player("model")
    opt = make_optimizer(decay_groups(plain, list(plain.parameters()), "matrices"), settings)

    def genbits_chunk(batch_list: list[Batch]) -> None:
        for batch in batch_list:
            rule.step(Batches(batch, lambda b=batch: b))

    def plain_chunk(batch_list: list[Batch]) -> None:
        for batch in batch_list:
            loss = -plain.log_prob(batch.x).mean()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    genbits_chunk(batches[: args.chunk])  # warm-up (and compilation) of both sides, untimed
    plain_chunk(batches[: args.chunk])
    ratios, times = [], {"genbits": [], "plain": []}
    for r, start in enumerate(range(args.chunk, args.steps, args.chunk)):
        chunk = batches[start : start + args.chunk]
        order = [("genbits", genbits_chunk), ("plain", plain_chunk)]
        timing = {}
        for name, run in order if r % 2 == 0 else order[::-1]:
            t = time.perf_counter()
            run(chunk)
            timing[name] = (time.perf_counter() - t) / len(chunk)
            times[name].append(timing[name])
        ratios.append(timing["plain"] / timing["genbits"])
    drift = max(
        float((a - b).detach().abs().max()) for a, b in zip(model.parameters(), plain.parameters(), strict=True)
    )
    tokens = args.batch * args.block
    return {
        "genbits tokens/s": tokens / statistics.median(times["genbits"]),
        "plain tokens/s": tokens / statistics.median(times["plain"]),
        "genbits/plain (median of rounds)": statistics.median(ratios),
        "max abs Δθ": drift,
    }


@torch.no_grad()
def recompute_sample(model: TransformerLM, length: int) -> torch.Tensor:
    """Greedy decoding that runs the model over the whole window for every new character (no cache)."""
    text = torch.zeros(1, 0, dtype=torch.int64)
    for _ in range(length):
        window = torch.cat([torch.full((1, 1), model.start), text[:, -(model.block_size - 1) :]], 1)
        logits, _ = model(window)
        text = torch.cat([text, logits[:, -1].argmax(-1, keepdim=True)], 1)
    return text


def sampling(args: argparse.Namespace) -> dict[str, float]:
    torch.manual_seed(0)
    model = TransformerLM(corpus(args.block).vocab, args.block, args.width, args.depth, heads=4).eval()
    length = min(args.tokens, args.block - 1)  # within one window the two decoders must agree exactly
    same = torch.equal(model.sample(1, top_k=1, length=length), recompute_sample(model, length))
    times = {"cache": [], "recompute": []}
    for r in range(3):
        order = [("cache", lambda: model.sample(1, top_k=1, length=args.tokens)), ("recompute", None)]
        for name, run in order if r % 2 == 0 else order[::-1]:
            t = time.perf_counter()
            run() if run else recompute_sample(model, args.tokens)
            times[name].append(time.perf_counter() - t)
    cache, recompute = statistics.median(times["cache"]), statistics.median(times["recompute"])
    return {"KV cache s": cache, "recompute s": recompute, "speed-up": recompute / cache, "same greedy text": same}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--width", type=int, default=96)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--block", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--chunk", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile row (minutes of compiling)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = {"eager": train_steps(args, compiled=False)}
    if not args.no_compile:
        try:
            rows["torch.compile"] = train_steps(args, compiled=True)
        except Exception as e:  # inductor needs a working C++ toolchain; say why instead of a traceback
            print(f"torch.compile failed on this machine: {type(e).__name__}: {str(e).splitlines()[0]}\n")
    keys = list(rows["eager"])
    print("| training step | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{row[k]:.4g}" for k in keys) + " |")
    print(f"\n| sampling {args.tokens} characters | value |\n|---|---|")
    for k, v in sampling(args).items():
        print(f"| {k} | {v if isinstance(v, bool) else f'{v:.4g}'} |")


if __name__ == "__main__":
    main()
