"""genbits' VAE vs pythae's ``VAE`` on the same nets (an MLP and pythae's MNIST ResNet) and the same binarized
Fashion-MNIST batches, paired and interleaved in one process.

    pip install --no-deps pythae && pip install pydantic    # pythae 0.1.2; its other deps are not needed here
    python benchmarks/vae.py [--arch mlp resnet] [--seconds 45] [--chunk 20] [--threads 1]
                             [--nll-n 100] [--nll-k 500] [--nll-repeats 4]

Nets. ``mlp``: encoder 784 → 512 → 512 (ReLU) → (μ, log σ) of 16 latents, decoder 16 → 512 → 512 → 784 Bernoulli
logits (genbits' registered ``vae`` with ``arch=mlp``; pythae gets the same layers). ``resnet``: pythae's own
``Encoder_ResNet_VAE_MNIST`` / ``Decoder_ResNet_AE_MNIST`` (three strided convs, two residual blocks, 16 latents;
transposed convs back), and in genbits' ``VAE`` the same layers written out below (its posterior head is one
linear layer for (μ, log σ), theirs two; the decoder ends in logits, theirs in a sigmoid: the parameter counts are
printed and equal). Both: standard normal prior, Adam 1e-3 as torch's fused kernel on both sides (genbits'
``optim.fused``), batch 128, dynamically binarized training images (genbits' data stream, the same batches for
both).

genbits trains as its loop does, through its ``gd`` rule on a ``GradientField`` with the stream's batches (per-
example noise included); pythae through its ``forward(...).loss``, ``backward``, Adam. Training alternates chunks of
``--chunk`` steps between the two until each has trained ``--seconds`` of wall time, so machine noise hits both;
samples/s is the median over chunks, timing the training steps only. Then:

- the ELBO each reached at that equal wall-clock, on the same 2,000 fixed-binarized test images (each with its own
  loss: genbits' ``elbo`` objective, pythae's ``loss``; both are the one-sample ELBO with the closed-form KL);
- (``mlp``) the importance-sampled NLL of genbits' trained weights copied into pythae's model: genbits' estimator
  (``metrics/latent.py``) vs pythae's ``get_nll`` on the same ``--nll-n`` test images with K = ``--nll-k``,
  ``--nll-repeats`` times with fresh importance samples.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from pythae.models import VAE as PythaeVAE
from pythae.models import VAEConfig
from pythae.models.base.base_utils import ModelOutput
from pythae.models.nn import BaseDecoder, BaseEncoder
from pythae.models.nn.benchmarks.mnist import Decoder_ResNet_AE_MNIST, Encoder_ResNet_VAE_MNIST
from torch import Tensor, nn

from genbits import load_config
from genbits.data import build_dataset
from genbits.data.base import Batch
from genbits.metrics.latent import importance_sampled
from genbits.models.vae import LOG_SCALE_BOUND, VAE, soft_clamp
from genbits.nn.likelihoods import build_likelihood
from genbits.objectives.elbo import Elbo
from genbits.optim.field import GradientField
from genbits.optim.rules import Batches
from genbits.registry import MODELS, RULES
from genbits.train.stream import BatchStream

LATENT, WIDTH, BATCH, LR = 16, 512, 128, 1e-3


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes, sizes[1:], strict=False):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class Encoder(BaseEncoder):
    """pythae's encoder: the same layers as genbits' (flatten → 2 × (linear → ReLU) → head), log σ² out."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), mlp([784, WIDTH, WIDTH]), nn.ReLU())
        self.head = nn.Linear(WIDTH, 2 * LATENT)

    def forward(self, x: Tensor) -> ModelOutput:
        loc, log_scale = self.head(self.body(x)).chunk(2, -1)
        return ModelOutput(embedding=loc, log_covariance=2 * soft_clamp(log_scale, LOG_SCALE_BOUND))


class Decoder(BaseDecoder):
    """pythae's decoder: the same layers; pythae's Bernoulli loss takes probabilities, so a sigmoid ends it."""

    def __init__(self):
        super().__init__()
        self.net = mlp([LATENT, WIDTH, WIDTH, 784])

    def forward(self, z: Tensor) -> ModelOutput:
        return ModelOutput(reconstruction=torch.sigmoid(self.net(z)).reshape(-1, 1, 28, 28))


class ResBlock(nn.Module):
    """pythae's residual block: x + conv1×1(ReLU(conv3×3(ReLU(x))))."""

    def __init__(self, channels: int = 128, inner: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(), nn.Conv2d(channels, inner, 3, padding=1), nn.ReLU(), nn.Conv2d(inner, channels, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def resnet_encoder() -> nn.Module:
    """pythae's Encoder_ResNet_VAE_MNIST up to its heads: 28 → 14 → 7 → 4, (128, 4, 4) flattened."""
    encoder = nn.Sequential(
        nn.Conv2d(1, 64, 4, 2, padding=1),
        nn.Conv2d(64, 128, 4, 2, padding=1),
        nn.Conv2d(128, 128, 3, 2, padding=1),
        ResBlock(),
        ResBlock(),
        nn.Flatten(),
    )
    encoder.out_features = 128 * 4 * 4
    return encoder


class ResNetDecoder(nn.Module):
    """pythae's Decoder_ResNet_AE_MNIST without its final sigmoid: (B, 1, 1, 28, 28) Bernoulli logits."""

    def __init__(self):
        super().__init__()
        self.project = nn.Linear(LATENT, 128 * 4 * 4)
        self.net = nn.Sequential(
            nn.ConvTranspose2d(128, 128, 3, 2, padding=1),
            ResBlock(),
            ResBlock(),
            nn.ReLU(),
            nn.ConvTranspose2d(128, 64, 3, 2, padding=1, output_padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(64, 1, 3, 2, padding=1, output_padding=1),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(self.project(z).view(-1, 128, 4, 4)).unsqueeze(1)


def ours(arch: str, dataset) -> VAE:
    if arch == "resnet":
        likelihood = build_likelihood("bernoulli", dataset.levels, 1, None)
        return VAE(resnet_encoder(), ResNetDecoder(), likelihood, LATENT, (1, 28, 28))
    options = {"latent": LATENT, "width": WIDTH, "depth": 2, "likelihood": "bernoulli"}
    return MODELS.build("vae", options, event_shape=(1, 28, 28), num_classes=None, dataset=dataset)


def theirs(arch: str) -> PythaeVAE:
    config = VAEConfig(input_dim=(1, 28, 28), latent_dim=LATENT, reconstruction_loss="bce")
    if arch == "resnet":
        return PythaeVAE(config, encoder=Encoder_ResNet_VAE_MNIST(config), decoder=Decoder_ResNet_AE_MNIST(config))
    return PythaeVAE(config, encoder=Encoder(), decoder=Decoder())


def parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def copy_weights(source: VAE, target: PythaeVAE) -> None:
    """genbits' trained MLP weights into pythae's modules, layer by layer (same shapes, same order)."""
    ours_linear = [m for m in source.encoder.modules() if isinstance(m, nn.Linear)] + [source.posterior_head]
    ours_linear += [m for m in source.decoder.modules() if isinstance(m, nn.Linear)]
    theirs_linear = [m for m in target.encoder.modules() if isinstance(m, nn.Linear)]
    theirs_linear += [m for m in target.decoder.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for a, b in zip(ours_linear, theirs_linear, strict=True):
            b.weight.copy_(a.weight)
            b.bias.copy_(a.bias)


class Genbits:
    """genbits' VAE stepped as the loop steps it: the ``gd`` rule on a GradientField."""

    def __init__(self, arch: str, data):
        self.model = ours(arch, data).train()
        self.objective = Elbo()
        field = GradientField(self.model, self.objective, {"model": self.model})
        optim = load_config({"optim": {"optimizer": "adam", "lr": LR, "fused": True}}).optim
        self.rule = RULES.build("gd", {}, players={"model": self.model}, optim=optim, field=field)

    def step(self, batch: Batch) -> None:
        self.rule.step(Batches(batch, lambda: batch))

    def loss(self, x: Tensor) -> Tensor:
        return self.objective(self.model, Batch(x)).per_player["model"]


class Pythae:
    """pythae's VAE with its own loss and a plain Adam step."""

    def __init__(self, arch: str):
        self.model = theirs(arch).train()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=LR, fused=True)

    def step(self, batch: Batch) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.loss(batch.x).backward()
        self.optimizer.step()

    def loss(self, x: Tensor) -> Tensor:
        return self.model({"data": x}).loss


def compare(arch: str, args: argparse.Namespace, train, test: Tensor) -> VAE:
    """Train both for ``--seconds`` each, interleaved; their speeds and test ELBOs."""
    torch.manual_seed(0)
    arms = {"genbits": Genbits(arch, train), "pythae": Pythae(arch)}
    streams = {name: BatchStream(train, BATCH, seed=1) for name in arms}  # the same batches for both
    rates: dict[str, list[float]] = {name: [] for name in arms}
    spent = dict.fromkeys(arms, 0.0)
    steps = dict.fromkeys(arms, 0)
    order = list(arms)
    while min(spent.values()) < args.seconds:
        for name in order:
            if spent[name] >= args.seconds:
                continue
            batches = [next(streams[name]) for _ in range(args.chunk)]
            start = time.perf_counter()
            for batch in batches:
                arms[name].step(batch)
            elapsed = time.perf_counter() - start
            spent[name] += elapsed
            steps[name] += args.chunk
            rates[name].append(args.chunk * BATCH / elapsed)
        order.reverse()  # interleaved: neither always runs first
    torch.manual_seed(1)
    with torch.no_grad():
        elbo = {name: -arm.loss(test).item() for name, arm in arms.items()}
    print(
        f"\n{arch}: {parameters(arms['genbits'].model):,} parameters in genbits', "
        f"{parameters(arms['pythae'].model):,} in pythae's"
    )
    print(f"{'':10s} {'samples/s (median)':>20s} {'steps':>7s} {'test ELBO (nats)':>18s}")
    for name in arms:
        print(f"{name:10s} {statistics.median(rates[name]):20.0f} {steps[name]:7d} {elbo[name]:18.2f}")
    ratio = statistics.median(rates["genbits"]) / statistics.median(rates["pythae"])
    print(f"speed ratio genbits/pythae: {ratio:.2f}")
    return arms["genbits"].model


def nll_on_the_same_weights(model: VAE, test: Tensor, args: argparse.Namespace) -> None:
    """genbits' importance-sampled NLL of its trained MLP vs pythae's ``get_nll`` on a copy of the same weights,
    ``--nll-repeats`` times with fresh importance samples: two unbiased-in-the-limit estimators of the same number
    differ by their Monte Carlo noise, which one pair of estimates cannot tell from a bias."""
    copy = theirs("mlp")
    copy_weights(model, copy)
    x = test[: args.nll_n]
    print(f"IS NLL of genbits' mlp weights, {len(x)} test images, K = {args.nll_k}:")
    ours_nll, theirs_nll = [], []
    for repeat in range(args.nll_repeats):
        torch.manual_seed(2 + 2 * repeat)
        log_p, error = importance_sampled(model, x, args.nll_k)
        torch.manual_seed(3 + 2 * repeat)
        start = time.perf_counter()
        theirs_nll.append(-copy.get_nll(x, n_samples=args.nll_k, batch_size=min(args.nll_k, 500)))  # log p
        pythae_time = time.perf_counter() - start
        ours_nll.append(-log_p.mean().item())
        se = (error.square().sum().sqrt() / len(x)).item()
        print(
            f"  repeat {repeat}: genbits importance_sampled {ours_nll[-1]:.3f} ± {se:.3f} (Monte Carlo), "
            f"pythae get_nll {theirs_nll[-1]:.3f} ({pythae_time:.1f} s)"
        )
    spread = statistics.stdev(ours_nll + theirs_nll) if len(ours_nll) > 1 else float("nan")
    print(
        f"  mean over repeats: genbits {statistics.mean(ours_nll):.3f}, pythae {statistics.mean(theirs_nll):.3f} "
        f"(spread of all estimates {spread:.3f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="+", choices=["mlp", "resnet"], default=["mlp", "resnet"])
    parser.add_argument("--seconds", type=float, default=45.0)
    parser.add_argument("--chunk", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--nll-n", type=int, default=100)
    parser.add_argument("--nll-k", type=int, default=500)
    parser.add_argument("--nll-repeats", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train = build_dataset("fashion-mnist", {"binarize": True})
    test = build_dataset("fashion-mnist", {"binarize": True}, split="test").x[:2000]
    for arch in args.arch:
        trained = compare(arch, args, train, test)
        if arch == "mlp" and args.nll_n > 0:
            nll_on_the_same_weights(trained, test, args)


if __name__ == "__main__":
    main()
