"""genbits' VAE vs pythae's ``VAE`` on the same MLP, the same binarized Fashion-MNIST batches, in one process.

    pip install --no-deps pythae && pip install pydantic    # pythae 0.1.2; its other deps are not needed here
    python benchmarks/vae.py [--seconds 60] [--chunk 20] [--threads 1] [--nll-n 100] [--nll-k 500]

Both models: encoder 784 → 512 → 512 (ReLU) → (μ, log σ²) of 16 latents, decoder 16 → 512 → 512 → 784 Bernoulli
logits, standard normal prior, Adam 1e-3, batch 128, dynamically binarized training images (genbits' data stream,
the same batches for both). Training alternates chunks of ``--chunk`` steps between the two until each has trained
``--seconds`` of wall time, so machine noise hits both; samples/s is the median over chunks, timing the training
step only (forward, loss, backward, Adam). Then:

- the ELBO each reached at that equal wall-clock, on the same 2,000 fixed-binarized test images (each with its own
  loss: genbits' ``elbo`` objective, pythae's ``loss``; both are the one-sample ELBO with the closed-form KL);
- the importance-sampled NLL of genbits' trained weights copied into pythae's model: genbits' estimator
  (``metrics/latent.py``) vs pythae's ``get_nll`` on the same ``--nll-n`` test images with K = ``--nll-k``.
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
from torch import Tensor, nn

from genbits.data import build_dataset
from genbits.data.base import Batch
from genbits.metrics.latent import importance_sampled
from genbits.models.vae import LOG_SCALE_BOUND, VAE, soft_clamp
from genbits.objectives.elbo import Elbo
from genbits.registry import MODELS
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


def ours(dataset) -> VAE:
    options = {"latent": LATENT, "width": WIDTH, "depth": 2, "likelihood": "bernoulli"}
    return MODELS.build("vae", options, event_shape=(1, 28, 28), num_classes=None, dataset=dataset)


def theirs() -> PythaeVAE:
    config = VAEConfig(input_dim=(1, 28, 28), latent_dim=LATENT, reconstruction_loss="bce")
    return PythaeVAE(config, encoder=Encoder(), decoder=Decoder())


def copy_weights(source: VAE, target: PythaeVAE) -> None:
    """genbits' trained weights into pythae's modules, layer by layer (same shapes, same order)."""
    ours_linear = [m for m in source.encoder.modules() if isinstance(m, nn.Linear)] + [source.posterior_head]
    ours_linear += [m for m in source.decoder.modules() if isinstance(m, nn.Linear)]
    theirs_linear = [m for m in target.encoder.modules() if isinstance(m, nn.Linear)]
    theirs_linear += [m for m in target.decoder.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for a, b in zip(ours_linear, theirs_linear, strict=True):
            b.weight.copy_(a.weight)
            b.bias.copy_(a.bias)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--chunk", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--nll-n", type=int, default=100)
    parser.add_argument("--nll-k", type=int, default=500)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train = build_dataset("fashion-mnist", {"binarize": True})
    test = build_dataset("fashion-mnist", {"binarize": True}, split="test").x[:2000]
    torch.manual_seed(0)
    models = {"genbits": ours(train), "pythae": theirs()}
    optimizers = {name: torch.optim.Adam(m.parameters(), lr=LR) for name, m in models.items()}
    streams = {name: BatchStream(train, BATCH, seed=1) for name in models}  # the same batches for both
    objective = Elbo()

    def loss(name: str, x: Tensor) -> Tensor:
        if name == "genbits":
            return objective(models[name], Batch(x)).per_player["model"]
        return models[name]({"data": x}).loss

    rates: dict[str, list[float]] = {name: [] for name in models}
    spent = dict.fromkeys(models, 0.0)
    steps = dict.fromkeys(models, 0)
    order = list(models)
    while min(spent.values()) < args.seconds:
        for name in order:
            if spent[name] >= args.seconds:
                continue
            batches = [next(streams[name]).x for _ in range(args.chunk)]
            start = time.perf_counter()
            for x in batches:
                optimizers[name].zero_grad(set_to_none=True)
                loss(name, x).backward()
                optimizers[name].step()
            elapsed = time.perf_counter() - start
            spent[name] += elapsed
            steps[name] += args.chunk
            rates[name].append(args.chunk * BATCH / elapsed)
        order.reverse()  # interleaved: neither always runs first

    torch.manual_seed(1)
    with torch.no_grad():
        elbo = {name: -loss(name, test).item() for name in models}
    print(f"{'':10s} {'samples/s (median)':>20s} {'steps':>7s} {'test ELBO (nats)':>18s}")
    for name in models:
        print(f"{name:10s} {statistics.median(rates[name]):20.0f} {steps[name]:7d} {elbo[name]:18.2f}")
    print(f"speed ratio genbits/pythae: {statistics.median(rates['genbits']) / statistics.median(rates['pythae']):.2f}")

    copy = theirs()
    copy_weights(models["genbits"], copy)
    x = test[: args.nll_n]
    torch.manual_seed(2)
    log_p, error = importance_sampled(models["genbits"], x, args.nll_k)
    torch.manual_seed(3)
    start = time.perf_counter()
    pythae_nll = -copy.get_nll(x, n_samples=args.nll_k, batch_size=min(args.nll_k, 500))  # it returns log p
    pythae_time = time.perf_counter() - start
    se = (error.square().sum().sqrt() / len(x)).item()
    print(f"IS NLL of genbits' weights, {len(x)} test images, K = {args.nll_k}:")
    print(f"  genbits importance_sampled: {-log_p.mean().item():.3f} ± {se:.3f} (Monte Carlo)")
    print(f"  pythae get_nll:             {pythae_nll:.3f} ({pythae_time:.1f} s)")


if __name__ == "__main__":
    main()
