"""Holes in the aggregate posterior of a VAE: prior regions the encoder never uses, whose samples decode badly.

With a diagonal-Gaussian posterior per example, the aggregate posterior q(z) = (1/N) Σ_n q(z | x_n) need not fill
the prior p(z): the ELBO pays only KL(q(z | x) ‖ p(z)) per example, so the mixture can leave regions of high prior
density nearly empty (Hoffman & Johnson 2016, "ELBO surgery"; Rezende & Viola 2018). Prior samples from there were
never trained to decode to data. More expressive posteriors (flows) or priors that follow the aggregate posterior
(a flow prior; the VampPrior, Tomczak & Welling 2018) should leave fewer holes.

Measured on a 2-D latent, per variant and seed: the prior mass where q(z) < 1% (and 10%) of p(z), by Monte Carlo
over prior samples with its binomial standard error (q from 2,000 training images, exact per-example densities,
through the flow's inverse for the flow posterior); the shipped Fashion-MNIST classifier's confidence (max softmax)
on the decoded means of prior samples inside the holes (q < 10% of p) vs outside, and each group's FID against the
training images (the classifier's features; equal group sizes, since FID's bias grows as n shrinks).

The hierarchical VAE (NVAE-style, ``hvae``) is measured on its top latent group, made 2-D (2 channels at 1×1, the
coarsest of 4 scales): its aggregate posterior Σ q(z_0 | x_n) against p(z_0), exactly as for the VAE's z; a top
latent decodes with the lower groups drawn from their priors. It is reported beside the rule, not in it: on a CPU
it trains on a tenth of the VAEs' images (each step costs ~20× theirs), so its numbers are not at the same budget.
CLAIM and RULE are fixed below.

``data="digits"`` (``genbits experiment vae-posterior-holes-digits``) runs the same arms on scikit-learn's 8×8
digits, binarized, scored by the shipped digits classifier: its 1,500 training images form the aggregate posterior.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from genbits.config import load_config  # noqa: E402
from genbits.experiments.placement import ON_CPU, Placement  # noqa: E402
from genbits.metrics.extractors import load_feature_net, resize_grey, shipped  # noqa: E402
from genbits.metrics.fid import fid  # noqa: E402
from genbits.models.hvae import HierarchicalVAE  # noqa: E402
from genbits.models.latent import diagonal_normal_log_prob  # noqa: E402
from genbits.models.vae import VAE  # noqa: E402
from genbits.runs import load_run  # noqa: E402
from genbits.runs.plots import image_grid  # noqa: E402
from genbits.train import train  # noqa: E402

PRESET = "vae-fmnist-2d"
BASELINE = "gaussian posterior"
VARIANTS = {
    BASELINE: [],
    "flow posterior": ["model.posterior=flow"],
    "flow prior": ["model.prior=flow"],
    "VampPrior": ["model.prior=vamp"],
}
CPU = ["data.size=14", "model.width=256", "train.steps=1500"]  # the CPU default: 14×14 images, minutes per run
FULL = ["train.steps=10000"]  # --full: native 28×28, the preset's nets
HVAE = "hierarchical VAE (top group)"  # reported beside the rule (another budget), not judged by it
TOP_2D = ["data.binarize=true", "model.likelihood=bernoulli", "model.latent_channels=2", "model.groups_per_scale=1"]
HVAE_CPU = ("hvae-fmnist14", [*TOP_2D, "model.scales=4", "model.channels=16", "train.steps=300", "train.batch_size=64"])
HVAE_FULL = ("hvae-fmnist", [*TOP_2D, "model.scales=5", "model.cells=1", "train.steps=10000"])  # 28→14→7→4→2→1
DIGITS = ["data=digits", "data.binarize=true", "model.width=256", "train.steps=1500"]  # CPU default and --full
DIGITS_HVAE = ("hvae-digits", [*TOP_2D, "model.scales=4", "train.steps=1500", "train.batch_size=64"])  # 8→4→2→1
CLASSIFIERS = {"fashion-mnist": "fmnist", "digits": "digits"}  # the shipped classifier that scores each dataset
FID_MIN = 100  # per-group FID only where both groups have at least this many samples
THRESHOLDS = (0.01, 0.1)  # q(z)/p(z) below these: a hole
HOLE = 0.1  # the threshold that splits prior samples into holes and covered regions for the quality comparison
AGGREGATE_N = 2000  # training images in the aggregate posterior (all of them where the split is smaller)
PRIOR_SAMPLES = 5000  # Monte Carlo samples of the prior
HOLES_EXIST = 0.02  # the baseline has holes: median (over seeds) prior mass where q < 10% of p at least this
CLAIM = (
    "with Gaussian posteriors the aggregate posterior leaves holes in the prior whose samples decode worse, and more "
    "expressive posteriors or priors leave fewer holes"
)
RULE = (
    f"holds if, in medians over seeds, the Gaussian-posterior VAE puts at least {HOLES_EXIST} of its prior mass where "
    f"q(z) < {HOLE}·p(z), the classifier is less confident on samples from there than on the rest, and every other "
    f"variant has less such mass than the Gaussian baseline; fails if the baseline's mass is below {HOLES_EXIST / 2}, "
    "or its hole samples are classified at least as confidently, or no variant has less mass; else undecided"
)


@torch.no_grad()
def log_aggregate_posterior(model: VAE, x: Tensor, z: Tensor, chunk: int = 1000) -> Tensor:
    """log (1/N) Σ_n q(z | x_n) for each z (M, latent) → (M,); the flow posterior through its inverse (one map for
    all n: its weights do not depend on x)."""
    loc, log_scale = model.posterior(x)  # (N, latent)
    out = []
    for part in z.split(chunk):
        base, log_det = part, torch.zeros(len(part))
        if model.posterior_flow is not None:
            base, log_det = model.posterior_flow.inverse(part)  # log |det ∂z₀/∂z|
        per_example = diagonal_normal_log_prob(base.unsqueeze(1), loc, log_scale).sum(-1)  # (m, N)
        out.append(torch.logsumexp(per_example, 1) - math.log(len(x)) + log_det)
    return torch.cat(out)


@torch.no_grad()
def confidence(classifier: torch.nn.Module, images: Tensor) -> float | None:
    """Mean max-softmax of the classifier over ``images`` (None for an empty group)."""
    if len(images) == 0:
        return None
    logits = classifier(resize_grey(images, classifier.size))
    return logits.softmax(-1).max(-1).values.mean().item()


@torch.no_grad()
def group_fids(classifier: torch.nn.Module, holes: Tensor, covered: Tensor, real: Tensor) -> tuple[float, float] | None:
    """FID of hole samples and of as many covered-region samples against ``real`` (None below FID_MIN each)."""
    n = min(len(holes), len(covered))
    if n < FID_MIN:
        return None
    features = [classifier.features(resize_grey(images[:n], classifier.size)) for images in (holes, covered, real)]
    return fid(features[0], features[2]), fid(features[1], features[2])


class TopLatent:
    """A hierarchical VAE seen through its top latent group, with the VAE's interface for the measurements: the
    posterior's (μ, log σ) and the prior flattened to (B, units), decoding with the lower groups from their priors."""

    posterior_flow = None

    def __init__(self, model: HierarchicalVAE):
        self.model = model
        self.shape = model.top_prior(1).mu.shape[1:]

    def eval(self) -> TopLatent:
        self.model.eval()
        return self

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        q = self.model.top_posterior(x)
        return q.mu.flatten(1), q.sigma.log().flatten(1)

    def prior_log_prob(self, z: Tensor) -> Tensor:
        return self.model.top_prior(1).log_prob(z.view(-1, *self.shape))

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.model.top_prior(n).sample(generator).flatten(1)

    def decode_mean(self, z: Tensor) -> Tensor:
        return self.model.decode_top(z.view(-1, *self.shape), torch.Generator().manual_seed(0))


def latent_view(model: torch.nn.Module) -> VAE | TopLatent:
    """What the measurements read: a VAE as it is, a hierarchical VAE through its top group."""
    return TopLatent(model) if isinstance(model, HierarchicalVAE) else model


def aggregate_size(dataset: Any) -> int:
    """How many training images form the aggregate posterior: AGGREGATE_N, or the whole split if it is smaller."""
    return min(AGGREGATE_N, len(dataset))


@torch.no_grad()
def measure(model: VAE | TopLatent, dataset: Any, classifier: torch.nn.Module, seed: int) -> dict[str, Any]:
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    x = dataset.get(torch.arange(aggregate_size(dataset)), generator).x
    z = model.sample_prior(PRIOR_SAMPLES, generator=generator)
    log_ratio = log_aggregate_posterior(model, x, z) - model.prior_log_prob(z)
    result: dict[str, Any] = {}
    for threshold in THRESHOLDS:
        mass = (log_ratio < math.log(threshold)).double().mean().item()
        result[f"hole_mass_{threshold}"] = mass
        result[f"hole_mass_{threshold}_stderr"] = math.sqrt(mass * (1 - mass) / PRIOR_SAMPLES)
    images = model.decode_mean(z)
    holes = log_ratio < math.log(HOLE)
    result["confidence_holes"] = confidence(classifier, images[holes])
    result["confidence_covered"] = confidence(classifier, images[~holes])
    fids = group_fids(classifier, images[holes], images[~holes], x)
    result["fid_holes"], result["fid_covered"] = fids if fids else (None, None)
    result["fid_n"] = min(int(holes.sum()), int((~holes).sum()))
    result["posterior_means"] = model.posterior(x[:500])[0].tolist()
    return result


def arms(data: str, full: bool) -> dict[str, tuple[str, list[str]]]:
    """Each arm's preset and overrides on ``data`` (8×8 digits train in seconds: their CPU default is their --full)."""
    if data not in CLASSIFIERS:
        raise ValueError(f"vae-posterior-holes runs on {' or '.join(CLASSIFIERS)}, not {data!r}")
    if data == "digits":
        vae, hvae = DIGITS, DIGITS_HVAE
    else:
        vae, hvae = (FULL, HVAE_FULL) if full else (CPU, HVAE_CPU)
    return {label: (PRESET, [*vae, *overrides]) for label, overrides in VARIANTS.items()} | {HVAE: hvae}


def run(
    run_dir: str | Path,
    seeds: int = 3,
    steps: int | None = None,
    progress: bool = True,
    full: bool = False,
    placement: Placement = ON_CPU,
    data: str = "fashion-mnist",
) -> dict[str, Any]:
    run_dir, plan = Path(run_dir), arms(data, full)
    classifier, _ = load_feature_net(shipped()[CLASSIFIERS[data]])
    classifier.eval()
    results: dict[str, Any] = {"runs": {}, "data": data}
    first: dict[str, Any] = {}
    for label, (preset, overrides) in plan.items():
        results["runs"][label] = []
        for seed in range(seeds):
            settings = [*overrides, f"train.seed={seed}", "train.sample_every=0"]
            settings += [f"train.steps={steps}"] if steps else []
            path = run_dir / f"{label.split(' (')[0].replace(' ', '-').lower()}-seed{seed}"
            train(load_config(preset, settings + placement.overrides()), path, progress=progress)
            fitted = load_run(path)
            model = latent_view(fitted.model.cpu())
            measured = measure(model, fitted.dataset, classifier, seed)
            results["runs"][label].append({k: v for k, v in measured.items() if k != "posterior_means"})
            first.setdefault(label, (model, fitted.dataset, measured["posterior_means"]))
    results["aggregate_n"] = aggregate_size(first[BASELINE][1])  # every arm trains on the same split
    results["summary"] = summary(results["runs"])
    results |= {"claim": CLAIM, "rule": RULE, **decide(results["summary"])}
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    (run_dir / "table.md").write_text(table(results))
    figure(first, classifier, run_dir / "figure.png")
    return results


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summary(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float | None]]:
    """Medians over seeds of each variant's numbers; the confidence gap is covered − holes per seed."""
    out = {}
    for label, seeds in runs.items():
        gaps = [
            s["confidence_covered"] - s["confidence_holes"]
            for s in seeds
            if s["confidence_holes"] is not None and s["confidence_covered"] is not None
        ]
        out[label] = {f"hole_mass_{t}": _median([s[f"hole_mass_{t}"] for s in seeds]) for t in THRESHOLDS}
        out[label]["confidence_holes"] = _median([s["confidence_holes"] for s in seeds])
        out[label]["confidence_covered"] = _median([s["confidence_covered"] for s in seeds])
        out[label]["confidence_gap"] = _median(gaps)
        out[label]["fid_holes"] = _median([s.get("fid_holes") for s in seeds])
        out[label]["fid_covered"] = _median([s.get("fid_covered") for s in seeds])
    return out


def decide(summary: dict[str, dict[str, float | None]]) -> dict[str, Any]:
    """The verdict of ``RULE`` from the medians over seeds (the hierarchical VAE is reported, not judged)."""
    base = summary[BASELINE]
    mass = base[f"hole_mass_{HOLE}"]
    gap = base["confidence_gap"]
    others = [summary[label][f"hole_mass_{HOLE}"] < mass for label in summary if label not in (BASELINE, HVAE)]
    if mass >= HOLES_EXIST and gap is not None and gap > 0 and all(others):
        verdict = "holds"
    elif mass < HOLES_EXIST / 2 or (gap is not None and gap <= 0) or not any(others):
        verdict = "fails"
    else:
        verdict = "undecided at this budget"
    return {"baseline_hole_mass": mass, "baseline_confidence_gap": gap, "fewer_holes": others, "verdict": verdict}


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table(results: dict[str, Any]) -> str:
    lines = [
        "| variant | seed | prior mass q < 1% p | prior mass q < 10% p | confidence in holes | confidence elsewhere "
        "| FID holes | FID elsewhere (n each) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, seeds in results["runs"].items():
        for seed, s in enumerate(seeds):
            lines.append(
                f"| {label} | {seed} | {s['hole_mass_0.01']:.3f} ± {s['hole_mass_0.01_stderr']:.3f} | "
                f"{s['hole_mass_0.1']:.3f} ± {s['hole_mass_0.1_stderr']:.3f} | {_fmt(s['confidence_holes'])} | "
                f"{_fmt(s['confidence_covered'])} | {_fmt(s.get('fid_holes'), 1)} | "
                f"{_fmt(s.get('fid_covered'), 1)} ({s.get('fid_n', '–')}) |"
            )
    lines += [
        "",
        "| variant (median over seeds) | mass q < 1% p | mass q < 10% p | confidence gap (elsewhere − holes) "
        "| FID holes | FID elsewhere |",
    ]
    lines += ["|---|---:|---:|---:|---:|---:|"]
    for label, s in results["summary"].items():
        lines.append(
            f"| {label} | {_fmt(s['hole_mass_0.01'])} | {_fmt(s['hole_mass_0.1'])} | {_fmt(s['confidence_gap'])} "
            f"| {_fmt(s.get('fid_holes'), 1)} | {_fmt(s.get('fid_covered'), 1)} |"
        )
    real = results.get("aggregate_n", AGGREGATE_N)
    lines += [
        "",
        f"FID: decoded prior samples against {real:,} training images on the classifier's features, the same "
        f"number n of samples from holes and from elsewhere (– where n < {FID_MIN} or not measured). {HVAE}: its 2-D "
        "top latent, reported beside the rule (a smaller training budget), not judged by it.",
        "",
        f"Claim: {results['claim']}. Rule (fixed before running): {results['rule']}.",
        f"Verdict: **{results['verdict']}**.",
    ]
    return "\n".join(lines) + "\n"


@torch.no_grad()
def figure(first: dict[str, Any], classifier: torch.nn.Module, path: Path) -> None:
    """Per variant (seed 0): log aggregate posterior over [−4, 4]² with the prior's contours and the hole boundary
    q = 10% p (red); below, decoded prior samples from covered regions (top rows) and from holes (bottom rows)."""
    fig, axes = plt.subplots(2, len(first), figsize=(4 * len(first), 8), squeeze=False)
    side = torch.linspace(-4, 4, 120)
    grid = torch.stack(torch.meshgrid(side, side, indexing="xy"), -1).reshape(-1, 2)
    for column, (label, (model, dataset, means)) in enumerate(first.items()):
        x = dataset.get(torch.arange(aggregate_size(dataset)), torch.Generator().manual_seed(0)).x
        log_q = log_aggregate_posterior(model, x, grid).reshape(120, 120)
        log_p = model.prior_log_prob(grid).reshape(120, 120)
        ax = axes[0, column]
        ax.imshow(log_q.clamp(min=log_q.max() - 12).numpy(), origin="lower", extent=(-4, 4, -4, 4), cmap="viridis")
        ax.contour(side, side, log_p.numpy(), levels=6, colors="white", linewidths=0.6)
        ax.contour(side, side, (log_q - log_p).numpy(), levels=[math.log(HOLE)], colors="red", linewidths=1.2)
        ax.scatter(*torch.tensor(means).T.numpy(), s=1, color="orange", alpha=0.5)
        ax.set_xlim(-4, 4)
        ax.set_ylim(-4, 4)
        ax.set_title(f"{label}: log q(z), p(z) contours,\nred: q = {HOLE:g}·p, orange: posterior means")
        z = model.sample_prior(2000, generator=torch.Generator().manual_seed(1))
        ratio = log_aggregate_posterior(model, x, z) - model.prior_log_prob(z)
        covered, holes = z[ratio >= math.log(HOLE)][:16], z[ratio < math.log(HOLE)][:16]
        images = model.decode_mean(torch.cat([covered, holes])) if len(covered) + len(holes) else None
        axes[1, column].set_axis_off()
        if images is not None:
            axes[1, column].imshow(image_grid(images, 8), cmap="gray", vmin=0, vmax=1)
        axes[1, column].set_title(f"decoded: {len(covered)} covered, then {len(holes)} from holes")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
