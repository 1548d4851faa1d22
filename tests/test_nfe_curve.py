"""The quality-vs-NFE sweep: step counts that fit each budget, one curve per sampler from the same noise,
the records it writes, and the NFE at which a family reaches a share of its best quality."""

import json

import pytest
import torch

from genbench.data.images import DigitsDataModule
from genbench.errors import ConfigError
from genbench.evaluation.nfe_curve import BATCH_SEEDS, steps_for_budget, sweep
from genbench.evaluation.reference import reference_images
from genbench.models import samplers
from genbench.models.diffusion import Diffusion
from genbench.models.ebm import EBM
from genbench.models.flow_matching import FlowMatching
from genbench.models.vae import VAE
from genbench.nfe_record import (
    Curve,
    CurvePoint,
    curve_figure,
    markdown_table,
    nfe_to_reach,
    read_curve,
    write_curve,
)
from genbench.train import run
from tests.helpers import compose_train


def _diffusion(**kw) -> Diffusion:
    torch.manual_seed(0)
    options = {"timesteps": 50, "sampling_steps": 10, "hidden_dim": 16, "depth": 1, **kw}
    return Diffusion((2,), **options).eval()


def test_steps_for_budget_takes_the_most_nfe_that_fit():
    model = _diffusion()
    assert steps_for_budget(model, "heun", 10) == 5 and model.nfe() == 9  # 2 x 5 - 1
    assert steps_for_budget(model, "ddim", 20) == 20 and model.nfe() == 20
    assert steps_for_budget(model, "ddpm", 100) == 50 and model.nfe() == 50  # capped by T = 50
    flow = FlowMatching((2,), hidden_dim=8, depth=1)
    assert steps_for_budget(flow, "midpoint", 5) == 2 and flow.nfe() == 4
    assert steps_for_budget(flow, "euler", 5) == 5
    ebm = EBM((2,), hidden_dims=[8])
    assert steps_for_budget(ebm, "langevin", 7) == 7 and ebm.nfe() == 7


def test_every_batch_of_every_sampler_and_budget_starts_from_the_same_noise(monkeypatch):
    """A stochastic sampler (DDPM, Langevin) draws noise inside a batch; the next batch must still start
    where the deterministic samplers' next batch does, at every budget."""
    starts: dict[tuple[str, int], list[torch.Tensor]] = {}
    diffusion_sample, langevin = samplers.Sampler.sample, EBM.langevin

    def spy(self, predict, x):
        starts.setdefault((self.name, self.steps), []).append(x.clone())
        return diffusion_sample(self, predict, x)

    def spy_langevin(self, z, steps):
        starts.setdefault(("langevin", steps), []).append(z.clone())
        return langevin(self, z, steps)

    monkeypatch.setattr(samplers.Sampler, "sample", spy)
    monkeypatch.setattr(EBM, "langevin", spy_langevin)
    sweep(_diffusion(), lambda s: {"m": 0.0}, budgets=[3, 5], samplers=["ddpm", "ddim"], n=12, seed=3,
          batch_size=4)
    ebm = EBM((2,), hidden_dims=[8]).eval()
    ebm.fit_data_stats(torch.randn(100, 2))
    sweep(ebm, lambda s: {"m": 0.0}, budgets=[3, 5], n=12, seed=3, batch_size=4)
    diffusion = [xs for key, xs in starts.items() if key[0] != "langevin"]
    ebm_starts = [xs for key, xs in starts.items() if key[0] == "langevin"]
    assert len(diffusion) == 4 and len(ebm_starts) == 2 and all(len(xs) == 3 for xs in starts.values())
    for group in (diffusion, ebm_starts):
        for xs in group[1:]:
            assert all(torch.equal(a, b) for a, b in zip(xs, group[0], strict=True))
        assert not torch.equal(group[0][0], group[0][1])  # batches differ from each other


def test_sweep_draws_every_sampler_from_the_same_noise_and_restores_the_model():
    model = _diffusion()
    seen: list[torch.Tensor] = []

    def quality(samples: torch.Tensor) -> dict[str, float]:
        seen.append(samples)
        return {"norm": samples.norm(dim=1).mean().item()}

    points = sweep(model, quality, budgets=[2, 5, 100], n=16, seed=3)
    by_sampler = {name: [(p.budget, p.steps, p.nfe) for p in points if p.sampler == name]
                  for name in model.samplers}
    for name in ("ddpm", "ddim"):  # T = 50 caps the steps
        assert by_sampler[name] == [(2, 2, 2), (5, 5, 5), (100, 50, 50)]
    assert by_sampler["heun"][:2] == [(2, 1, 1), (5, 3, 5)]  # NFE 2 steps - 1
    # With T = 50 the log-spaced levels of many steps meet on shared timesteps: fewer NFE than steps.
    assert all(p.nfe <= p.budget for p in points) and by_sampler["dpmpp_2m"][-1][2] < 50
    assert model.hp.sampler == "ddim" and model.hp.sampling_steps == 10
    model.use_sampler("dpmpp_2m", 5)  # the same seed gives the same starting noise: the same samples
    torch.manual_seed(3 * BATCH_SEEDS)
    assert torch.equal(model.sample(16), seen[[p.sampler for p in points].index("dpmpp_2m") + 1])
    with pytest.raises(ConfigError, match="no sampler"):
        sweep(model, quality, samplers=["euler"])
    with pytest.raises(ConfigError, match="no iterative sampler"):
        sweep(VAE((2,)), quality)


def _curve(values: dict[str, list[tuple[int, float]]]) -> Curve:
    points = [CurvePoint(sampler, nfe, nfe, nfe, {"w2_test": value}, 0.1)
              for sampler, pairs in values.items() for nfe, value in pairs]
    return Curve("diffusion", "moons", "w2_test", 100, 0, {"w2_test": 0.05}, points)


def test_nfe_to_reach_names_the_fewest_nfe_within_the_fraction_of_the_best():
    curve = _curve({"ddim": [(5, 1.0), (10, 0.3), (20, 0.12), (50, 0.1)],
                    "dpmpp_2m": [(5, 0.5), (10, 0.105), (20, 0.1), (50, 0.1)]})
    reached = nfe_to_reach(curve, 0.9)  # best 0.1: within 0.1 / 0.9 = 0.111
    assert (reached["nfe"], reached["sampler"], reached["best"]) == (10, "dpmpp_2m", 0.1)
    assert nfe_to_reach(curve, 0.5)["nfe"] == 10 and nfe_to_reach(curve, 0.2)["nfe"] == 5
    assert nfe_to_reach(curve, 1.0)["nfe"] == 20
    assert nfe_to_reach(_curve({})) is None


def test_curve_records_round_trip_and_render(tmp_path):
    curve = _curve({"ddim": [(5, 1.0), (10, 0.3)], "heun": [(9, 0.2)]})
    curve.points[-1].budget = 10
    paths = write_curve(curve, tmp_path)
    assert [p.name for p in paths] == ["nfe_curve.json", "nfe_curve.csv"]
    assert read_curve(tmp_path) == curve and read_curve(tmp_path / "none") is None
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "nfe_curve.json").write_text('{"family": "diffusion"}')
    with pytest.raises(ValueError, match="rerun scripts/nfe_sweep.py"):
        read_curve(tmp_path / "old")
    rows = paths[1].read_text().splitlines()
    assert rows[0] == "family,dataset,sampler,budget,steps,nfe,w2_test,seconds" and len(rows) == 4
    table = markdown_table(curve)
    assert "| heun |  | 0.2 (9) |" in table and "| ddim | 1 | 0.3 |" in table and "real data: 0.05" in table
    figure = curve_figure([curve])
    assert len(figure.axes[0].lines) == 3  # two samplers and the real-data floor


@pytest.mark.parametrize(("family", "dataset", "metric"), [("diffusion", "moons", "w2_test"),
                                                          ("flow_matching", "digits", "fd_data_space")])
def test_nfe_sweep_script_writes_a_curve_beside_the_checkpoint(tmp_path, script, family, dataset, metric):
    """One command on a trained checkpoint (a debug run here); digits without a trained classifier falls
    back to the Fréchet distance in pixel space."""
    run(compose_train([f"model={family}", f"dataset={dataset}", "trainer=debug", "logger=none",
                       "evaluate=false", f"paths.output_dir={tmp_path}"]), tmp_path)
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    args = [f"ckpt_path={ckpt}", f"model={family}", f"dataset={dataset}", f"paths.root_dir={tmp_path}",
            "--nfe", "2", "4", "--samples", "64"]
    nfe_sweep = script("nfe_sweep")
    assert nfe_sweep.main(args) == 0
    record = json.loads((tmp_path / "nfe_curve.json").read_text())
    assert (record["family"], record["dataset"], record["metric"]) == (family, dataset, metric)
    assert "heun" in {p["sampler"] for p in record["points"]}
    assert all(p["nfe"] <= 4 for p in record["points"])
    assert metric in record["floor"]
    with pytest.raises(ConfigError, match="ckpt_path"):
        nfe_sweep.main([f"model={family}", f"dataset={dataset}"])
    other = "vae" if family != "vae" else "gan"  # a checkpoint of another family is refused by name
    with pytest.raises(ConfigError, match=f"holds model={family} trained on dataset={dataset}, and this run "
                                          f"asks for model={other}"):
        nfe_sweep.main([f"ckpt_path={ckpt}", f"model={other}", f"dataset={dataset}"])
    (tmp_path / "a_file").write_text("")  # an --out that cannot be a folder: was a traceback
    with pytest.raises(ConfigError, match=f"cannot write the curve into {tmp_path / 'a_file' / 'out'}: .*; "
                                          "give another --out"):
        nfe_sweep.main([*args, "--out", str(tmp_path / "a_file" / "out")])
    for bad in (["--nfe", "0"], ["--samples", "1"]):  # --nfe 0 wrote an empty table and exited 0
        with pytest.raises(SystemExit) as refused:
            nfe_sweep.main([*args, *bad])
        assert refused.value.code == 2


def test_the_image_floor_scores_as_many_held_out_images_as_samples_or_none(script):
    dm = DigitsDataModule()
    dm.setup()
    held_out = dm.split_tensor("test")  # 359 images; the reference is train

    def quality(images):
        return {"n": len(images), "first": images[0].sum().item()}

    floor = script("nfe_sweep").image_floor
    first = reference_images(held_out, 64)[0]  # the evaluation stage's fixed subset
    assert floor(quality, dm, "train", 64) == {"n": 64, "first": first.sum().item()}
    assert floor(quality, dm, "train", 359)["n"] == 359
    assert floor(quality, dm, "train", 360) == {}  # a 359-image floor is no floor for 360 samples


def test_an_image_reference_of_one_image_is_refused_by_name(script):
    """A covariance of one image failed in linalg.eigh after the checkpoint had loaded."""
    cfg = compose_train(["dataset=digits", "eval.reference_split=val"])
    dm = DigitsDataModule(val_fraction=0.0005)
    dm.setup()
    with pytest.raises(ConfigError, match="^eval.reference_split=val holds 1 images and a Fréchet distance "
                                          "needs 2: give it more or reference another split$"):
        script("nfe_sweep").image_quality(cfg, dm, torch.device("cpu"))


def test_a_checkpoint_of_fewer_diffusion_steps_than_the_configs_sampler_is_swept_as_is(tmp_path, script):
    """A model of T=50 was refused: the config's sampling_steps=100 (the default, which the sweep replaces
    anyway) did not fit it, and the user had to pass model.sampling_steps too."""
    run(compose_train(["model=diffusion", "dataset=moons", "trainer=debug", "logger=none", "evaluate=false",
                       "model.timesteps=50", "model.sampling_steps=50", f"paths.output_dir={tmp_path}"]),
        tmp_path)
    args = [f"ckpt_path={tmp_path / 'checkpoints' / 'last.ckpt'}", "model=diffusion", "dataset=moons",
            "--samplers", "ddim", "--nfe", "10", "100", "--samples", "32", "--out", str(tmp_path / "out")]
    assert script("nfe_sweep").main(args) == 0
    points = json.loads((tmp_path / "out" / "nfe_curve.json").read_text())["points"]
    assert [(p["budget"], p["steps"]) for p in points] == [(10, 10), (100, 50)]  # capped at T
