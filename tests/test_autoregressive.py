"""Autoregressive family: the masks give the autoregressive property, likelihoods normalize, it learns."""

import itertools
import math
from pathlib import Path

import hydra
import pytest
import pytorch_lightning as pl
import torch

from genbench.config import validate
from genbench.data.pixels import to_symmetric
from genbench.data.toy import ToyDataModule
from genbench.evaluation.distances import energy_distance
from genbench.models.autoregressive import Autoregressive
from genbench.nets.made import MADE
from genbench.nets.pixelcnn import CachedEvaluator, CropEvaluator, GatedPixelCNN
from genbench.train import run
from tests.helpers import compose_train, learning_seeds, run_script


def _jacobian_support(f, x: torch.Tensor) -> torch.Tensor:
    """support[o, i]: does output o (flattened, summed over the batch) depend on input i (autograd)."""
    x = x.clone().requires_grad_(True)
    out = f(x).sum(0).flatten()
    rows = [torch.autograd.grad(o, x, retain_graph=True)[0].abs().sum(0).flatten() > 0 for o in out]
    return torch.stack(rows)


def test_made_output_d_depends_exactly_on_inputs_before_d():
    torch.manual_seed(0)
    dim, params = 5, 6
    net = MADE(dim, params, [32, 32])
    support = _jacobian_support(net, torch.randn(3, dim)).view(params, dim, dim)  # (param, out d, in i)
    for d in range(dim):
        assert not support[:, d, d:].any(), f"dimension {d} depends on inputs >= {d}"
        assert support[:, d, :d].all(dim=0).all(), f"dimension {d} ignores some earlier input"


def test_made_density_integrates_to_one_on_a_2d_grid():
    """A MADE fitted briefly to moons (a density with a real x2 | x1 dependence) integrates to 1."""
    torch.manual_seed(0)
    dm = ToyDataModule(name="moons", n_train=4000, n_val=500, n_test=500, batch_size=256)
    dm.setup()
    data = dm.split_tensor("train")
    model = Autoregressive((2,), num_components=4, hidden_dims=[64, 64])
    model.standardize.fit(data)  # as training starts: the density lives on standardized coordinates
    assert abs(model.standardize.log_det().item()) > 0.5  # so its Jacobian matters here
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(200):
        loss = -model.log_likelihood(data[torch.randint(len(data), (256,))]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    edges = torch.linspace(-5, 5, 1001)
    step = (edges[1] - edges[0]).item()
    centres = (edges[:-1] + edges[1:]) / 2
    with torch.no_grad():
        log_p = model.log_likelihood(torch.cartesian_prod(centres, centres)).view(1000, 1000)
    assert loss.item() < 1.6, loss.item()  # it did fit (the moons data spans about 3.4 x 2.1)
    assert (log_p[400] - log_p[600]).abs().max() > 1.0  # the conditional p(x2 | x1) changes with x1
    total = log_p.double().exp().sum().item() * step**2
    assert abs(total - 1) < 0.02, total


@pytest.mark.parametrize("colors", [1, 3])
def test_pixelcnn_subpixel_depends_only_on_earlier_subpixels(colors):
    """Raster order over pixels, R -> G -> B inside a pixel; no blind spot above-right of the pixel."""
    torch.manual_seed(0)
    size, params = 5, 4
    net = GatedPixelCNN(colors, params, channels=12, layers=3, kernel=3, head_channels=12)
    mix = torch.rand(params, 1, 1) + 0.5  # a random positive mix of each sub-pixel's parameters

    def mixed(inp: torch.Tensor) -> torch.Tensor:
        return (net(inp) * mix).sum(2)

    support = _jacobian_support(mixed, torch.randn(2, colors, size, size))
    support = support.view(colors, size, size, colors, size, size)  # (c, i, j, c', i', j')
    for c, i, j in itertools.product(range(colors), range(size), range(size)):
        deps = support[c, i, j]
        before = torch.zeros(colors, size, size, dtype=torch.bool)
        before.view(colors, -1)[:, : i * size + j] = True  # every colour of earlier pixels
        before[:c, i, j] = True  # earlier colours of this pixel: G sees R, B sees R and G
        assert not (deps & ~before).any(), f"sub-pixel {(c, i, j)} sees a later sub-pixel"
        assert deps[:c, i, j].all(), f"sub-pixel {(c, i, j)} ignores an earlier colour of its own pixel"
        # No blind spot: every pixel of the two rows above (within two columns) and two to the left is seen.
        for di, dj in itertools.product(range(-2, 1), range(-2, 3)):
            r, s = i + di, j + dj
            if r >= 0 and 0 <= s < size and (di < 0 or dj < 0):
                assert deps[:, r, s].all(), f"sub-pixel {(c, i, j)} has a blind spot at {(r, s)}"


def test_pixelcnn_one_pixel_evaluation_equals_the_full_pass():
    torch.manual_seed(0)
    net = GatedPixelCNN(3, 7, channels=12, layers=3, kernel=3, head_channels=12, num_classes=4)
    x, y = torch.rand(2, 3, 11, 9) * 2 - 1, torch.tensor([1, 3])
    with torch.no_grad():
        full = net(x, y)
        for i, j in itertools.product(range(11), range(9)):
            assert torch.allclose(net.at(x, i, j, y), full[..., i, j], atol=1e-5), (i, j)


# (colours, height, width, layers, kernel, num_classes): 1 and 3 colours, conditional or not, kernels 3 and
# 5, 1 to 4 layers; receptive fields (reach = layers * (kernel // 2)) from inside the image to past all of it.
EVALUATOR_NETS = [(1, 6, 5, 1, 3, None), (3, 5, 7, 2, 3, None), (3, 6, 5, 3, 5, 4), (1, 7, 9, 4, 3, 3),
                  (3, 3, 4, 4, 5, None), (3, 9, 9, 2, 5, 2)]


@pytest.mark.parametrize(("colors", "height", "width", "layers", "kernel", "classes"), EVALUATOR_NETS)
@pytest.mark.parametrize("evaluator", ["crop", "cached"])
def test_sampling_evaluators_give_the_full_pass_parameters(colors, height, width, layers, kernel, classes,
                                                           evaluator):
    """Fed an image sub-pixel by sub-pixel in raster order, as sampling does, either evaluator's
    parameters of sub-pixel (c, i, j) are ``net(x)[:, c, :, i, j]``: what the cache keeps is exact."""
    torch.manual_seed(0)
    net = GatedPixelCNN(colors, 5, channels=12, layers=layers, kernel=kernel, head_channels=12,
                        num_classes=classes)
    x = torch.randint(256, (3, colors, height, width), dtype=torch.uint8)
    y = torch.tensor([0, 1, 1]) if classes else None
    with torch.no_grad():
        full = net(to_symmetric(x), y)
        if evaluator == "cached":
            ev: CachedEvaluator | CropEvaluator = CachedEvaluator(net, 3, width, y)
        else:
            ev = CropEvaluator(net, torch.full(x.shape, -1.0), y)
        for i, j, c in itertools.product(range(height), range(width), range(colors)):
            p = ev.params(i, j)
            assert torch.allclose(p[:, c], full[:, c, :, i, j], atol=1e-5), (c, i, j)
            ev.put(c, i, j, to_symmetric(x[:, c, i, j]))


@pytest.mark.parametrize(("colors", "height", "width", "layers", "kernel", "classes"), EVALUATOR_NETS)
@pytest.mark.parametrize("pixel_output", ["categorical", "logistic_mixture"])
def test_cached_sampler_draws_the_crop_samplers_images(colors, height, width, layers, kernel, classes,
                                                        pixel_output):
    """Same seed, same images, bit for bit, except for an image whose draw fell within float rounding of a
    level's boundary: the two compute the parameters in another float summation order (equal to about
    1e-6, the test above). These nets and seeds drew all images the same here (as did seeds 0..19 of
    each), but another torch or CPU may sum in another order; at BENCHMARKS.md's rate (11 of 5,120 images
    with the logistic mixture, 0 with the categorical) two of four images differ about 3 times in 10^5 cases.
    A sampler that drew other random numbers, or read a stale cache, changes most images (a cache that
    misses one sub-pixel per row left at most 2 of 4 the same)."""
    torch.manual_seed(0)
    model = Autoregressive((colors, height, width), num_classes=classes, channels=12, layers=layers,
                           kernel_size=kernel, head_channels=12, pixel_output=pixel_output,
                           conditional=classes is not None).eval()
    with torch.no_grad():  # sharper, input-dependent distributions than at initialization
        for p in model.net.parameters():
            p.mul_(3)
    images = {}
    for sampler in ("crop", "cached"):
        model.hp.sampler = sampler
        torch.manual_seed(1)  # conditional: the same random labels too
        images[sampler] = model.sample(4)
    same = (images["cached"] == images["crop"]).flatten(1).all(1)
    assert same.sum() >= 3, same
    assert len(images["crop"].unique()) > 4  # not a degenerate net drawing one level


@pytest.mark.parametrize("kw", [{}, {"pixel_output": "logistic_mixture"}, {"conditional": True}])
def test_pixel_pmf_of_a_two_pixel_image_sums_to_one(kw):
    """Summing exp(log p) over all 256^2 images checks both the per-pixel pmf and the ordering."""
    torch.manual_seed(0)
    model = Autoregressive((1, 1, 2), num_classes=3, channels=6, layers=2, head_channels=6, **kw).eval()
    levels = torch.arange(256, dtype=torch.uint8)
    images = torch.cartesian_prod(levels, levels).view(-1, 1, 1, 2)
    with torch.no_grad():
        total = model.log_likelihood(images).double().exp().sum().item()
    assert abs(total - 1) < 1e-3, total


def _count_calls(module: torch.nn.Module, name: str) -> list[int]:
    calls = [0]
    original = getattr(module, name)

    def counted(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    setattr(module, name, counted)
    return calls


@pytest.mark.parametrize(
    ("shape", "kw"),
    [((2,), {}), ((5,), {}), ((1, 8, 8), {}), ((1, 8, 8), {"sampler": "crop"}),
     ((3, 4, 4), {"pixel_output": "logistic_mixture"}), ((3, 4, 4), {"conditional": True}),
     ((3, 4, 4), {"conditional": True, "sampler": "crop"})],
)
def test_sampling_shapes_dtypes_and_honest_nfe(shape, kw, monkeypatch):
    """One evaluation per dimension: a MADE pass, a crop pass (``net.at``), or a cached evaluation."""
    torch.manual_seed(0)
    model = Autoregressive(shape, num_classes=10, channels=6, layers=2, head_channels=6, **kw).eval()
    if len(shape) == 1:
        calls = _count_calls(model.net, "forward")
    elif model.hp.sampler == "crop":
        calls = _count_calls(model.net, "at")
    else:
        calls = [0]
        params = CachedEvaluator.params

        def counted(self, i: int, j: int) -> torch.Tensor:
            calls[0] += 1
            return params(self, i, j)

        monkeypatch.setattr(CachedEvaluator, "params", counted)
    labels = torch.arange(3) if kw.get("conditional") else None
    x = model.sample(3, labels)
    assert model.nfe() == math.prod(shape) == calls[0]
    assert x.shape == (3, *shape)
    assert x.dtype == (torch.uint8 if len(shape) == 3 else torch.float32)
    ll = model.log_likelihood(x)
    assert ll.shape == (3,) and torch.isfinite(ll).all()


def test_cifar10_experiment_composes_and_validates():
    cfg = compose_train(["experiment=autoregressive_cifar10"])
    checked = validate(cfg)
    assert cfg.dataset._target_.endswith("CIFAR10DataModule")
    assert checked["model"].channels > 32


@pytest.mark.parametrize("seed", learning_seeds())
def test_learns_gaussians8_with_the_default_config(tmp_path: Path, seed: int):
    overrides = ["model=autoregressive", "dataset=gaussians8", "logger=none", f"paths.output_dir={tmp_path}",
                 f"seed={seed}",
                 "trainer.max_steps=1000", "trainer.enable_progress_bar=false", "eval.speed_repeats=1",
                 "eval.speed_warmup=0", "eval.speed_batch_size=16", "eval.plot_samples_vector=200",
                 "eval.mode_samples=200"]
    cfg = compose_train(overrides)
    pl.seed_everything(seed)
    dm = hydra.utils.instantiate(cfg.dataset, _convert_="all")
    dm.setup()
    test = dm.split_tensor("test")[:2000]
    untrained = hydra.utils.instantiate(cfg.model, data_shape=dm.data_shape, _convert_="all")
    before = energy_distance(untrained.sample(2000), test)
    result = run(cfg, tmp_path)
    metrics, model = result.metrics, result.model
    torch.manual_seed(1)
    after = energy_distance(model.sample(2000), test)
    # Measured over seeds 0-4, with and without validation drawing from the training's random stream (10
    # runs of 1000 steps): energy distance 0.27-0.52 -> 0.0007 to 0.017, test NLL -3.57 to -3.99 nats but
    # -1.72 and -2.36 for seed 1, whose initialization leaves one mode slow to fit (the data's own entropy
    # is -4.29 nats; 2000 steps: -4.03 at seed 0).
    assert after < before / 10 and after < 0.025, (before, after)
    assert metrics["likelihood_kind"] == "exact" and metrics["nfe"] == 2
    assert metrics["nll_nats"] < -1.4, metrics["nll_nats"]


def test_the_sampler_benchmark_runs_and_both_samplers_draw_the_same_images(tmp_path: Path):
    """scripts/bench_ar_sampler.py at the digits size (BENCHMARKS.md has its full numbers)."""
    done = run_script("scripts/bench_ar_sampler.py", ["--sizes", "digits", "--repeats", "1",
                                                      "--agreement-seeds", "1", "--agreement-batch", "2"],
                      tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| digits")]
    assert [row.split(" | ")[3] for row in rows] == ["crop", "cached"]
    assert all(row.endswith("| yes |") for row in rows)
    agreement = [row.split(" | ") for row in done.stdout.splitlines() if row.startswith(("| cat", "| log"))]
    # seed 0 draws the same images here; elsewhere one of the two may fall within rounding of a boundary
    assert [row[1] for row in agreement] == ["2 (1 x 2)"] * 2
    assert all(int(row[2]) <= 1 and row[3].endswith(" of 384 |") for row in agreement), agreement
