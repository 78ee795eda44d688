"""The gradient field: per-player gradients, layer state moved once per step, fp16 loss scaling, NaN detection."""

import pytest
import torch
from torch import Tensor, nn

from genbits.config import OptimConfig
from genbits.data.base import Batch
from genbits.errors import ConfigError, NonFiniteLoss
from genbits.objectives.base import Losses
from genbits.optim.field import GradientField, Term
from genbits.optim.rules import Batches, GradientStep, lr_factor


class TwoPlayers(nn.Module):
    """A bilinear game: L_a = a·b·mean(x), L_b = −L_a (plus a BN layer whose statistics we watch)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(1, 1, bias=False)
        self.b = nn.Linear(1, 1, bias=False)
        self.norm = nn.BatchNorm1d(1)

    def players(self):
        return {"a": self.a, "b": self.b}


def game(model, batch):
    value = model.b(model.a(model.norm(batch.x))).mean() + model.a.weight.sum() * model.b.weight.sum()
    return Losses({"a": value, "b": -value})


def test_each_player_gets_the_gradient_of_its_own_loss():
    model = TwoPlayers().eval()  # BN on running statistics: the reference below sees the same function
    field = GradientField(model, game, model.players())
    batch = Batch(torch.randn(16, 1))
    grads, _ = field(batch)
    losses = game(model, batch).per_player
    (ref_a,) = torch.autograd.grad(losses["a"], model.a.weight, retain_graph=True)
    (ref_b,) = torch.autograd.grad(losses["b"], model.b.weight)
    torch.testing.assert_close(grads["a"][0], ref_a)
    torch.testing.assert_close(grads["b"][0], ref_b)
    assert not torch.allclose(ref_a, torch.autograd.grad(game(model, batch).per_player["b"], model.a.weight)[0])


def test_layer_state_moves_only_when_asked():
    model = TwoPlayers()
    field = GradientField(model, game, model.players())
    batch = Batch(torch.randn(16, 1) + 3)
    before = model.norm.running_mean.clone()
    field(batch, update_state=False)
    assert torch.equal(model.norm.running_mean, before)
    field(batch, update_state=True)
    assert not torch.equal(model.norm.running_mean, before)


def test_fp16_loss_scale_halves_on_overflow_and_gives_true_gradients():
    w = nn.Linear(1, 1, bias=False)
    nn.init.constant_(w.weight, 1.0)

    def big(model, batch):  # the gradient is 1e3: times 2**16 it overflows fp16's 65504
        return Losses({"model": (model(batch.x) * 1e3).to(torch.float16).float().sum()})

    field = GradientField(w, big, {"model": w}, precision="fp16")
    grads, _ = field(Batch(torch.ones(1, 1)))
    assert field.loss_scale < 2.0**16
    torch.testing.assert_close(grads["model"][0], torch.full((1, 1), 1e3))


def test_non_finite_loss_raises_before_any_update():
    w = nn.Linear(1, 1)
    field = GradientField(w, lambda m, b: Losses({"model": m(b.x).sum() * float("nan")}), {"model": w})
    rule = GradientStep({"model": w}, OptimConfig(), field)
    before = [p.clone() for p in w.parameters()]
    with pytest.raises(NonFiniteLoss, match="model"):
        rule.step(Batches(Batch(torch.ones(2, 1)), lambda: None))
    assert all(torch.equal(p, q) for p, q in zip(w.parameters(), before, strict=True))


@pytest.mark.parametrize("fused", [False, True])
def test_gd_rule_equals_a_hand_written_adam_step(fused):
    """Bit for bit, with torch's default Adam or (``optim.fused``) its fused kernel."""
    torch.manual_seed(0)
    w = nn.Linear(3, 1)
    ref = nn.Linear(3, 1)
    ref.load_state_dict(w.state_dict())
    x = torch.randn(8, 3)

    def loss(model, batch):
        return Losses({"model": (model(batch.x) ** 2).mean()})

    rule = GradientStep({"model": w}, OptimConfig(lr=0.1, fused=fused), GradientField(w, loss, {"model": w}))
    opt = torch.optim.Adam(ref.parameters(), lr=0.1, fused=fused or None)
    for _ in range(3):
        rule.step(Batches(Batch(x), lambda: None))
        opt.zero_grad()
        loss(ref, Batch(x)).per_player["model"].backward()
        opt.step()
    for p, q in zip(w.parameters(), ref.parameters(), strict=True):
        assert torch.equal(p, q)


def test_fused_is_refused_where_torch_has_no_fused_kernel():
    w = nn.Linear(1, 1)
    field = GradientField(w, lambda m, b: Losses({"model": m(b.x).sum()}), {"model": w})
    with pytest.raises(ConfigError, match="optim.fused: torch fuses adam and adamw only"):
        GradientStep({"model": w}, OptimConfig(optimizer="sgd", fused=True), field)


def test_lr_schedule_warmup_then_cosine():
    cfg = OptimConfig(warmup_steps=10, schedule="cosine", final_lr_ratio=0.1)
    assert lr_factor(cfg, 0, 110) == pytest.approx(0.1)
    assert lr_factor(cfg, 9, 110) == pytest.approx(1.0)
    assert lr_factor(cfg, 60, 110) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(cfg, 110, 110) == pytest.approx(0.1)
    assert lr_factor(OptimConfig(), 500, 10) == 1.0


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_penalties_under_mixed_precision_match_fp32(precision):
    """R1 inside the objective (a gradient in the loss) and ODE-GAN's regularizer (a double backward through the
    field) under autocast: every player's gradient and penalty gradient points where fp32's does."""
    from genbits.config import load_config
    from genbits.optim.games import gradient_norm_penalty
    from genbits.train.parts import build_parts

    config = load_config("gan-ring", ["objective={name: gan, r1: 1.0}", "train.batch_size=256"])
    parts = build_parts(config)
    batch = parts.dataset.sample(256, torch.Generator().manual_seed(0))
    values = {}
    for p in ("fp32", precision):
        field = GradientField(parts.model, parts.objective, parts.model.players(), precision=p)
        torch.manual_seed(1)  # the same latent draw
        values[p] = field.evaluate(batch, penalty=gradient_norm_penalty(0.07))
    for kind in ("grads", "penalty_grads"):
        reference, mixed = getattr(values["fp32"], kind), getattr(values[precision], kind)
        assert reference.keys() == mixed.keys() and reference
        for name in reference:
            a, b = (torch.cat([g.flatten() for g in gs]) for gs in (reference[name], mixed[name]))
            assert torch.isfinite(b).all()
            assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.99, (kind, name)
            assert (b.norm() / a.norm() - 1).abs() < 0.05, (kind, name)


def penalized_game(model, batch):
    """L_a = mean(a(x)²)·b, L_b = −L_a: ∇_a L_a is a batch mean, so ‖∇_a L_a‖² is not one (a shard's differs)."""
    value = model.a(batch.x).pow(2).mean() * model.b.weight.sum()
    return Losses({"a": value, "b": -value})


def norm_of_a_gradient(grad_of):
    g = grad_of("a", "a")
    return {"b": [Term(2.0, g, g)]}


def penalized_field(x: Tensor):
    """The field of the penalized game, with its penalty gradients, at fixed weights on the batch x."""
    torch.manual_seed(0)
    model = TwoPlayers()
    return GradientField(model, penalized_game, model.players()).evaluate(Batch(x), penalty=norm_of_a_gradient)


def shard_field(rank: int, world: int, init_file: str, x: Tensor, out: str) -> None:
    """One process of a gloo group: the field on this process's shard of x, saved by rank 0."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    value = penalized_field(x[rank::world])
    if rank == 0:
        torch.save({"grads": value.grads, "penalty_grads": value.penalty_grads}, out)
    torch.distributed.destroy_process_group()


def test_penalty_gradients_under_ddp_are_the_full_batch_ones(tmp_path):
    """2 gloo processes with half the batch each give the penalty gradient of the whole batch's ‖∇_a L_a‖² (the
    stop-gradient vectors are averaged before the vector–Jacobian product), not the mean of per-shard penalties."""
    x = torch.linspace(-2, 3, 8).pow(2).view(8, 1)  # shards with different second moments
    out = tmp_path / "ddp.pt"
    torch.multiprocessing.spawn(shard_field, args=(2, str(tmp_path / "init"), x, str(out)), nprocs=2)
    ddp, one = torch.load(out, weights_only=True), penalized_field(x)
    for kind in ("grads", "penalty_grads"):
        for name, grads in getattr(one, kind).items():
            torch.testing.assert_close(ddp[kind][name], grads, msg=f"{kind} of {name}")
    # the per-shard estimate (what averaging whole penalty gradients gives) differs here: the test tells them apart
    biased = sum(penalized_field(x[i::2]).penalty_grads["b"][0] for i in (0, 1)) / 2
    assert not torch.allclose(biased, one.penalty_grads["b"][0], rtol=1e-2)
