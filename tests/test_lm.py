"""The character-level language model: text data, the transformer and its attention, σReparam, sampling with a KV
cache, and the loop options it brought (gradient accumulation, weight-decay groups, torch.compile)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import assert_same_state, final_state
from torch import nn

import genbits.components  # noqa: F401  (fills the registries)
from genbits import load_config
from genbits.cli import main
from genbits.data import build_dataset
from genbits.data.text import FORTUNES, INSTALL, TextDataset
from genbits.errors import ConfigError, DatasetNotFound
from genbits.metrics.likelihood import bits_per_dim, perplexity
from genbits.models.transformer import TransformerLM, transformer
from genbits.nn.attention import attention_entropy, causal_mask
from genbits.nn.norms import SigmaReparam, sigma_reparam
from genbits.objectives.likelihood import MaximumLikelihood
from genbits.optim.field import GradientField
from genbits.optim.rules import decay_groups
from genbits.runs import load_run
from genbits.train import train
from genbits.train.stream import BatchStream, seeded_generator

PERIOD = "hello, world!\n"  # "l" is followed by "l", "o" or "d": greedy decoding needs the context


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A small periodic text in two files (a folder corpus), with a .dat index and a link that must be skipped."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a").write_text(PERIOD * 40, encoding="utf-8")
    (folder / "b").write_text(PERIOD * 20, encoding="utf-8")
    (folder / "a.dat").write_bytes(bytes(range(256)))  # binary: not UTF-8, so reading it would fail
    (folder / "a.u8").symlink_to(folder / "a")
    return folder


def text_config(path: Path, **train_options) -> dict:
    return {
        "data": {"name": "text", "path": str(path), "block_size": 16},
        "model": {"name": "transformer", "width": 32, "depth": 2, "heads": 2},
        "optim": {"lr": 3e-3},
        "train": {
            "steps": 3,
            "batch_size": 8,
            "log_every": 1,
            "sample_every": None,
            "checkpoint_every": 1,
            "ema_decay": 0.0,
            **train_options,
        },
    }


def tiny_lm(vocab: str = "abcdefgh", block: int = 12, **options) -> TransformerLM:
    torch.manual_seed(0)
    return TransformerLM(vocab, block, width=16, depth=2, heads=2, **options)


# ----------------------------------------------------------------------------------------------------
# Text data.


def test_text_splits_every_file_at_a_line_break_and_shares_one_vocabulary(corpus):
    train_split = build_dataset("text", {"path": str(corpus), "block_size": 16})
    test_split = build_dataset("text", {"path": str(corpus), "block_size": 16}, split="test")
    assert train_split.vocab == test_split.vocab == "".join(sorted(set(PERIOD)))
    decoded = train_split.decode(train_split.tokens)
    assert decoded == PERIOD * 36 + PERIOD * 18  # the last 10% of each file (4 and 2 lines) is held out
    assert test_split.decode(test_split.tokens) == PERIOD * 4 + PERIOD * 2
    assert len(train_split) == len(train_split.tokens) - 15
    blocks = train_split.get(torch.tensor([0, 5]))
    assert blocks.x.dtype == torch.int64 and blocks.x.shape == (2, 16)
    assert train_split.decode(blocks.x[1]) == decoded[5:21]  # contiguous blocks
    assert torch.equal(test_split.x.flatten(), test_split.tokens[: test_split.x.numel()])  # non-overlapping


def test_fortunes_corpus_skips_indexes_and_links():
    if not Path(FORTUNES).is_dir():
        pytest.skip(f"the fortunes corpus is not installed ({INSTALL})")
    data = build_dataset("text", {"block_size": 64})
    assert 1_500_000 < len(data.tokens) < 3_000_000 and 60 < len(data.vocab) < 200
    assert "%" in data.vocab and "\x00" not in data.vocab


@pytest.mark.parametrize(
    "make, options, error, message",
    [
        (lambda d: None, {"path": "/nonexistent/corpus"}, DatasetNotFound, "no file or folder /nonexistent/corpus"),
        (lambda d: (d / "e.txt").write_text(""), {"path": "e.txt"}, DatasetNotFound, "is empty"),
        (lambda d: (d / "e").mkdir(), {"path": "e"}, DatasetNotFound, "no text file in"),
        (lambda d: (d / "x.txt").write_bytes(b"ok \xff\xfe"), {"path": "x.txt"}, ConfigError, "not UTF-8 text"),
        (lambda d: (d / "s.txt").write_text("short"), {"path": "s.txt", "block_size": 6}, ConfigError, "larger than"),
    ],
)
def test_bad_corpora_are_one_line_errors(tmp_path, make, options, error, message):
    make(tmp_path)
    if not options["path"].startswith("/"):
        options = {**options, "path": str(tmp_path / options["path"])}
    with pytest.raises(error, match=message) as caught:
        build_dataset("text", options)
    assert "\n" not in str(caught.value)


def test_fortunes_missing_says_how_to_install(monkeypatch):
    monkeypatch.setattr("genbits.data.text.Path.is_dir", lambda self: False)
    monkeypatch.setattr("genbits.data.text.Path.is_file", lambda self: False)
    with pytest.raises(DatasetNotFound, match=INSTALL):
        build_dataset("text", {})


# ----------------------------------------------------------------------------------------------------
# Attention and the transformer.


def test_attention_entropy_of_uniform_attention_is_log_n_and_matches_a_hand_computation():
    T, d = 5, 4
    zeros = torch.zeros(1, 2, T, d)  # q = 0: query i attends uniformly to its i + 1 keys
    expected = sum(math.log(i + 1) for i in range(T)) / T
    torch.testing.assert_close(attention_entropy(zeros, zeros, causal_mask(T, T, "cpu")), torch.full((2,), expected))
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(3, 2, T, d, generator=g), torch.randn(3, 2, T, d, generator=g)
    hand = torch.zeros(2)
    for b in range(3):
        for h in range(2):
            for i in range(T):
                s = [float(q[b, h, i] @ k[b, h, j]) / math.sqrt(d) for j in range(i + 1)]
                p = [math.exp(v) / sum(math.exp(w) for w in s) for v in s]
                hand[h] += -sum(pi * math.log(pi) for pi in p) / (3 * T)
    torch.testing.assert_close(attention_entropy(q, k, causal_mask(T, T, "cpu")), hand)


@pytest.mark.parametrize("options", [{}, {"norm_position": "post", "qk_norm": True}, {"weights": "sigma-reparam"}])
def test_logits_depend_only_on_earlier_tokens_by_autograd(options):
    model = tiny_lm(**options).eval()
    tokens = torch.randint(0, 8, (2, 12), generator=torch.Generator().manual_seed(1))
    embedded = model.token(tokens).detach().requires_grad_(True)
    model.token.register_forward_hook(lambda module, args, out: embedded)
    logits, _ = model(tokens)
    for i in (0, 5, 11):
        (grad,) = torch.autograd.grad(logits[:, i].sum(), embedded, retain_graph=True)
        reached = grad.abs().sum(dim=(0, 2)) > 0
        assert reached[: i + 1].all() and not reached[i + 1 :].any(), (i, reached)


@pytest.mark.parametrize("options", [{}, {"norm_position": "post", "qk_norm": True}])
def test_kv_cache_logits_equal_full_recomputation(options):
    model = tiny_lm(**options).eval()
    tokens = torch.randint(0, 9, (3, 12), generator=torch.Generator().manual_seed(2))
    full, _ = model(tokens)
    logits, cache = model(tokens[:, :4])  # a prompt, then one token at a time
    steps = [logits]
    for t in range(4, 12):
        logits, cache = model(tokens[:, t : t + 1], cache)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_log_prob_is_normalized_over_every_block():
    """Exact enumeration: Σ over all 3³ blocks of p(x) = 1 (the first character is predicted too)."""
    model = TransformerLM("abc", 3, width=8, depth=1, heads=2)
    blocks = torch.cartesian_prod(*[torch.arange(3)] * 3)
    assert float(model.log_prob(blocks).detach().exp().sum()) == pytest.approx(1.0, abs=1e-5)


def test_sampling_options_are_checked_and_top_k_top_p_restrict_the_support():
    model = tiny_lm().eval()
    with pytest.raises(ConfigError, match="characters not in the model's vocabulary: 'xz'"):
        model.sample(1, prompt="axz")
    for bad, match in [({"top_k": 0}, "top_k"), ({"top_p": 1.5}, "top_p"), ({"length": 0}, "length")]:
        with pytest.raises(ConfigError, match=match):
            model.sample(1, **bad)
    out = model.sample(2, generator=torch.Generator().manual_seed(0), prompt="abc", length=30)
    assert out.shape == (2, 33) and model.decode(out[0]).startswith("abc")  # past block_size: the window restarts
    logits = model(model.inputs(out[:1, :12]))[0][0, -1]
    from genbits.models.transformer import Picker

    picks = {int(Picker(1.0, 2, None, torch.Generator().manual_seed(s))(logits[None])) for s in range(40)}
    assert picks <= set(logits.topk(2).indices.tolist())
    probs = logits.softmax(-1)
    ordered = probs.sort(descending=True)
    nucleus = set(ordered.indices[: int((ordered.values.cumsum(0) < 0.5).sum()) + 1].tolist())
    picks = {int(Picker(1.0, None, 0.5, torch.Generator().manual_seed(s))(logits[None])) for s in range(40)}
    assert picks <= nucleus


# ----------------------------------------------------------------------------------------------------
# σReparam.


def test_sigma_reparam_starts_at_w_and_converges_to_gamma_times_a_unit_spectral_norm():
    torch.manual_seed(0)
    layer = sigma_reparam(nn.Linear(12, 7))
    raw = layer.parametrizations.weight.original
    reparam = layer.parametrizations.weight[0]
    assert float(reparam.gamma.detach()) == pytest.approx(
        float(torch.linalg.svdvals(raw.detach())[0]), rel=1e-4
    )  # γ = σ(W_init)
    torch.testing.assert_close(layer.weight, raw, rtol=1e-4, atol=1e-6)  # Ŵ = W at init
    with torch.no_grad():
        raw.mul_(3.0).add_(torch.randn_like(raw))
        reparam.gamma.fill_(0.7)
    for _ in range(200):  # one power iteration per training-mode forward
        layer.weight  # noqa: B018
    assert float(torch.linalg.svdvals(layer.weight.detach())[0]) == pytest.approx(0.7, rel=1e-5)
    one = SigmaReparam(raw.detach(), gamma="one")
    assert float(one.gamma.detach()) == 1.0


def test_sigma_reparam_gradient_flows_through_sigma():
    """Autograd's gradient equals the hand derivative of γ·W/σ with σ = uᵀWv (u, v held fixed, as in the paper)."""
    torch.manual_seed(1)
    weight = torch.randn(5, 4, requires_grad=True)
    reparam = SigmaReparam(weight.detach()).eval()
    g_out = torch.randn(5, 4)
    (weight_hat := reparam(weight)).backward(g_out)
    u = reparam.u
    v = torch.nn.functional.normalize(weight.detach().T @ u, dim=0)
    sigma, gamma = float(u @ weight.detach() @ v), float(reparam.gamma.detach())
    hand = gamma / sigma * g_out - gamma / sigma**2 * (g_out * weight.detach()).sum() * torch.outer(u, v)
    torch.testing.assert_close(weight.grad, hand)
    assert float(reparam.gamma.grad) == pytest.approx(float((g_out * weight_hat.detach()).sum()) / gamma, rel=1e-5)


def test_every_linear_layer_gets_sigma_reparam_and_the_tied_head_stays_the_embedding():
    model = tiny_lm(weights="sigma-reparam")
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert all(hasattr(m, "parametrizations") for m in linears if m is not model.head)
    assert model.head.weight is model.token.weight
    untied = tiny_lm(weights="sigma-reparam", tie_weights=False)
    assert hasattr(untied.head, "parametrizations")


# ----------------------------------------------------------------------------------------------------
# Units.


def test_bits_per_char_and_perplexity_conversions():
    assert bits_per_dim(10 * math.log(2) * 3, 10) == pytest.approx(3.0)
    assert perplexity(10 * math.log(5), 10) == pytest.approx(5.0)
    uniform = torch.tensor([16 * math.log(8)])
    torch.testing.assert_close(perplexity(uniform, 16), torch.tensor([8.0]))
    model = TransformerLM("ab", 4, width=8, depth=1, heads=1)
    x = torch.tensor([[0, 1, 1, 0]])
    losses = MaximumLikelihood(chars=4)(model, type("B", (), {"x": x, "y": None})())
    nats = float(-model.log_prob(x).detach())
    assert float(losses.metrics["bits_per_char"]) == pytest.approx(nats / (4 * math.log(2)))


# ----------------------------------------------------------------------------------------------------
# Training: the greedy sample, resume, diagnostics, the CLI.


@pytest.mark.slow  # 150 training steps: ~10 s on an idle machine, 167 s measured under this session's load
def test_greedy_sample_of_a_model_trained_on_a_periodic_text_reproduces_it(corpus, tmp_path, capsys):
    config = load_config(
        text_config(corpus, steps=150, log_every=50, checkpoint_every=150),
        ["optim.lr=0.01", "model.width=32"],
    )
    train(config, tmp_path / "run", progress=False)
    run = load_run(tmp_path / "run")
    out = run.model.sample(1, prompt="he", top_k=1, length=len(PERIOD))  # within the context of 16 characters
    assert run.model.decode(out[0]) == ("he" + PERIOD[2:] + PERIOD)[: 2 + len(PERIOD)]
    assert run.metrics[-1]["bits_per_char"] < 1.0  # uniform: log2(10) = 3.3; a block's first character is a guess
    assert main(["sample", str(tmp_path / "run"), "--prompt", "wor", "-n", "12", "--top-k", "1"]) == 0
    assert capsys.readouterr().out == ("wor" + PERIOD[10:] + PERIOD)[:15] + "\n"


def test_text_runs_evaluate_report_and_refuse_bad_prompts_in_one_line(corpus, tmp_path, capsys):
    train(load_config(text_config(corpus, steps=1, diagnostics=True)), tmp_path / "lm", progress=False)
    last = load_run(tmp_path / "lm").metrics[-1]
    assert {f"attention_entropy/layer{i}/head{h}" for i in range(2) for h in range(2)} <= last.keys()
    assert all(0 < last[f"attention_entropy/layer{i}"] <= math.log(16) for i in range(2))
    assert main(["sample", str(tmp_path / "lm"), "-n", "30", "--out", str(tmp_path / "s.txt")]) == 0
    assert len((tmp_path / "s.txt").read_text()) == 30
    assert main(["eval", str(tmp_path / "lm")]) == 0
    assert "bits_per_char" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "lm")]) == 0
    assert "attention entropy" in (tmp_path / "lm" / "report.html").read_text()
    assert main(["sample", str(tmp_path / "lm"), "--prompt", "Hello"]) != 0
    assert "characters not in the model's vocabulary: 'H'" in capsys.readouterr().err
    flow = {"data": "ring", "model": {"name": "flow", "layers": 1}, "train": {"steps": 1, "sample_every": None}}
    train(load_config(flow), tmp_path / "flow", progress=False)
    assert main(["sample", str(tmp_path / "flow"), "--prompt", "hi"]) != 0
    err = capsys.readouterr().err.strip()
    assert "sampling option 'prompt' is not understood by" in err and "\n" not in err


def test_text_runs_resume_exactly(corpus, tmp_path):
    config = text_config(corpus, steps=4)
    config["model"]["dropout"] = 0.1  # the resumed run must also continue the dropout stream
    train(load_config(config), tmp_path / "straight", progress=False)
    train(load_config(config, ["train.steps=2"]), tmp_path / "resumed", progress=False)
    train(load_config(config), tmp_path / "resumed", progress=False)
    assert_same_state(final_state(tmp_path / "straight"), final_state(tmp_path / "resumed"))


def test_text_batches_are_slices_of_the_concatenated_epoch_orders_across_epoch_boundaries():
    """Batch k is positions kB..(k+1)B of the epochs' shuffled orders laid end to end, also where it spans two."""
    data = TextDataset(torch.arange(40) % 7, "abcdefg", 4, "train")  # 37 blocks: batches of 8 straddle epochs
    stream = BatchStream(data, 8, seed=3)
    orders = torch.cat([torch.randperm(len(data), generator=seeded_generator(3, e, 1)) for e in range(4)])
    for k in range(12):
        assert torch.equal(next(stream).x, data.get(orders[8 * k : 8 * (k + 1)]).x), k


@pytest.mark.parametrize("change", ["new character", "same number of characters"])
def test_a_changed_corpus_under_a_run_is_a_one_line_error_and_nothing_is_lost(corpus, tmp_path, capsys, change):
    """Resume, sample and eval of a run whose corpus now has other characters refuse in one line, run untouched."""
    config = load_config(text_config(corpus, steps=2))
    train(config, tmp_path / "lm", progress=False)
    before = {p: p.read_bytes() for p in (tmp_path / "lm").rglob("*") if p.is_file()}
    edit = PERIOD.replace("!", "?") if change == "same number of characters" else PERIOD + "Q"
    for name in ("a", "b"):
        (corpus / name).write_text(edit * 20, encoding="utf-8")
    with pytest.raises(ConfigError, match="trained on 11 .*start a new --run-dir"):
        train(load_config(config.to_dict(), ["train.steps=4"]), tmp_path / "lm", progress=False)
    for command in (["sample", str(tmp_path / "lm"), "-n", "5"], ["eval", str(tmp_path / "lm")]):
        assert main(command) != 0
        err = capsys.readouterr().err.strip()
        assert "this run was trained on 11 (" in err and "\n" not in err, err
    assert {p: p.read_bytes() for p in (tmp_path / "lm").rglob("*") if p.is_file()} == before


# ----------------------------------------------------------------------------------------------------
# Loop options.


def field_gradient(model: nn.Module, batch, accumulate: int) -> list[torch.Tensor]:
    field = GradientField(model, MaximumLikelihood(chars=12), {"model": model}, accumulate=accumulate)
    grads, losses = field(batch)
    return [*grads["model"], losses.per_player["model"]]


def test_gradient_accumulation_equals_the_large_batch():
    model = tiny_lm().double()
    data = TextDataset(torch.randint(0, 8, (400,), generator=torch.Generator().manual_seed(3)), "abcdefgh", 12, "t")
    batch = data.get(torch.arange(0, 300, 30))  # 10 blocks: micro-batches of 3, 3, 2, 2
    whole, accumulated = field_gradient(model, batch, 1), field_gradient(model, batch, 4)
    for a, b in zip(whole, accumulated, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    with pytest.raises(ConfigError, match="train.accumulate"):
        field_gradient(model, batch[:2], 4)


def test_weight_decay_only_on_weight_matrices():
    model = tiny_lm(weights="sigma-reparam")
    params = list(model.parameters())
    decayed, kept = decay_groups(model, params, "matrices")
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in decayed["params"]} == {
        n for n, p in model.named_parameters() if n.endswith("original") and p.ndim == 2
    }
    assert kept["weight_decay"] == 0.0 and any("gamma" in names[id(p)] for p in kept["params"])
    assert any(names[id(p)] == "token.weight" for p in kept["params"])  # the embedding (and tied head)
    assert len(decayed["params"]) + len(kept["params"]) == len(params)
    assert decay_groups(model, params, "all") == [{"params": params}]


def test_adamw_with_decay_groups_leaves_norms_undecayed(corpus, tmp_path):
    options = ["optim.optimizer=adamw", "optim.weight_decay=0.5", "optim.decay=matrices", "optim.lr=1e-12"]
    train(load_config(text_config(corpus, steps=2), options), tmp_path, progress=False)
    state = final_state(tmp_path)["model"]
    assert torch.equal(state["blocks.0.norm1.weight"], torch.ones(32))  # a tiny lr: any change would be decay
    assert not torch.equal(state["blocks.0.mlp.0.weight"], tiny_lm().blocks[0].mlp[0].weight)


def compile_works() -> bool:
    try:
        torch.compile(lambda x: x + 1)(torch.zeros(1))
    except Exception:
        return False
    return True


@pytest.mark.slow
def test_compiled_model_matches_eager_and_trains(corpus, tmp_path):
    if not compile_works():
        pytest.skip("torch.compile does not work here (no C++ compiler?)")
    model = tiny_lm()
    x = torch.randint(0, 8, (4, 12), generator=torch.Generator().manual_seed(0))
    eager = model.log_prob(x)
    (eager_grads := torch.autograd.grad(eager.sum(), list(model.parameters())))
    model.compile()
    compiled = model.log_prob(x)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
    for a, b in zip(torch.autograd.grad(compiled.sum(), list(model.parameters())), eager_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    result = train(load_config(text_config(corpus, steps=2, compile=True)), tmp_path, progress=False)
    assert result.step == 2 and math.isfinite(result.last["loss"])
    assert final_state(tmp_path)["model"].keys() == tiny_state_keys(corpus)  # checkpoints keep plain names


def tiny_state_keys(corpus: Path) -> set[str]:
    from genbits.train.parts import build_parts

    return set(build_parts(load_config(text_config(corpus))).model.state_dict())


@pytest.mark.slow
def test_two_processes_match_one_for_the_language_model(corpus, tmp_path):
    import yaml

    config = text_config(corpus, steps=4, batch_size=8)
    config["optim"] = {"optimizer": "sgd", "lr": 0.1}  # Adam would normalize the rounding noise of zero gradients
    (tmp_path / "lm.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    for prefix, name in ((launch, "ddp"), ([sys.executable], "one")):
        done = subprocess.run(
            [*prefix, "-m", "genbits", "train", str(tmp_path / "lm.yaml"), "--run-dir", str(tmp_path / name)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    a, b = final_state(tmp_path / "ddp")["model"], final_state(tmp_path / "one")["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


def test_the_transformer_refuses_non_text_data():
    with pytest.raises(ValueError, match="not a text dataset"):
        transformer(build_dataset("ring", {}))
