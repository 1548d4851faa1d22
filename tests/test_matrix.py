"""The comparison matrix: aggregation of hand-made runs (a diverged and a corrupt one among them) into cells
and labels, and a real tiny multirun that writes it through the Hydra callback."""

import csv
import logging
import os
import shutil
import signal
import statistics
from datetime import datetime
from pathlib import Path

import pytest
import torch

from genbench.matrix import build_matrices, rules, write_matrix
from genbench.matrix.columns import family_key
from genbench.matrix.founding import compare
from genbench.matrix.render import compute_table
from genbench.matrix.rules import rules_text
from genbench.matrix.runs import find_runs
from genbench.matrix.table import build_matrix, loss_oscillation
from genbench.matrix.verdicts import bottom_line, cv_standard_error, pareto_front, tied
from genbench.nfe_record import Curve, CurvePoint, write_curve
from genbench.results import provenance, read_record, write_record
from tests.helpers import start_train_py, train_py, wait_for

CAPS = {
    "vae": {"likelihood_kind": "bound", "latent": "explicit", "has_latent": True, "latent_space": "encoder",
            "supports_labels": True, "conditioning": "label embedding"},
    "gan": {"likelihood_kind": "none", "latent": "explicit", "has_latent": True,
            "latent_space": "generator input", "supports_labels": True, "conditioning": "projection"},
    "diffusion": {"likelihood_kind": "bound", "latent": "implicit", "has_latent": False,
                  "latent_space": "DDIM noise", "supports_labels": True, "conditioning": "guidance"},
}


def _run(root: Path, name: str, family: str, seed: int | None, metrics: dict, status: str = "ok",
         losses: list[float] | None = None, config: dict | None = None, error: str | None = None,
         dataset: str = "gaussians25", metric_provenance: dict | None = None,
         failed_in: str | None = None) -> Path:
    run_dir = root / name
    (run_dir / ".hydra").mkdir(parents=True)
    write_record(run_dir / "metrics.json", status=status, family=family, dataset=dataset, seed=seed,
                 metrics=metrics, provenance={**provenance(config or {}, seed, datetime.now()),
                                              **({"failed_in": failed_in} if failed_in else {})},
                 error=error or ("DivergedError: loss became nan" if status != "ok" else None),
                 capabilities=CAPS[family] if status == "ok" else None, metric_provenance=metric_provenance)
    if losses:
        (run_dir / "csv").mkdir()
        with (run_dir / "csv" / "metrics.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["epoch", "step", "train/loss", "val/nll_nats"])
            for step, loss in enumerate(losses):
                writer.writerow([0, 10 * step, loss, ""])
    return run_dir


def _metrics(precision: float, modes: float, ms: float, nfe: int, seconds: float, bpd: float | None) -> dict:
    out = {"precision_data_space": precision, "mode_coverage": modes, "sample_ms_per_sample": ms, "nfe": nfe,
           "train_seconds": seconds, "num_parameters": 1000,
           "likelihood_kind": "none" if bpd is None else "bound"}
    if bpd is not None:
        out.update(nll_bpd=bpd, nll_bpd_se=bpd / 100, nll_bpd_median=bpd - 0.5)
    return out


SMOOTH = [3.0 - 2.0 * (1 - 0.8**i) for i in range(20)]  # decays and settles: oscillation ~0
SWINGING = [1.0 + (0.6 if i % 2 else -0.6) * (i >= 10) for i in range(20)]  # swings late in training


@pytest.fixture
def sweep(tmp_path) -> Path:
    _run(tmp_path, "0", "vae", 0, _metrics(0.50, 1.0, 0.002, 1, 10.0, 1.20), losses=SMOOTH)
    _run(tmp_path, "1", "vae", 1, _metrics(0.54, 1.0, 0.002, 1, 12.0, 1.30), losses=SMOOTH)
    _run(tmp_path, "2", "gan", 0, _metrics(0.99, 0.28, 0.002, 1, 8.0, None), losses=SWINGING)
    _run(tmp_path, "3", "gan", 1, {}, status="diverged")
    _run(tmp_path, "4", "diffusion", 0, _metrics(0.97, 0.96, 0.9, 100, 30.0, 0.90), losses=SMOOTH)
    (tmp_path / "5" / ".hydra").mkdir(parents=True)
    (tmp_path / "5" / "metrics.json").write_text('{"schema": 2, "status": "ok", "fam')  # cut short
    (tmp_path / "6" / ".hydra").mkdir(parents=True)  # killed before writing anything
    return tmp_path


def test_runs_are_found_and_broken_ones_named(sweep, caplog):
    feature_net = sweep / "feature_net" / ".hydra"  # train_feature_net.py's job: no record, and none due
    feature_net.mkdir(parents=True)
    (feature_net / "config.yaml").write_text("task_name: feature_net\ndataset: {}\n")
    killed = sweep / "7" / ".hydra"  # a training job killed before its record
    killed.mkdir(parents=True)
    (killed / "config.yaml").write_text("model: {}\ndataset: {}\n")
    with caplog.at_level(logging.WARNING):
        found = find_runs([sweep])
    assert sorted((r.family, r.seed, r.status) for r in found.runs) == [
        ("diffusion", 0, "ok"), ("gan", 0, "ok"), ("gan", 1, "diverged"), ("vae", 0, "ok"), ("vae", 1, "ok")]
    assert str(sweep / "5") in caplog.text and "unusable metrics.json" in caplog.text
    assert str(sweep / "6") in caplog.text and "no metrics.json" in caplog.text
    assert [s.path for s in found.skipped] == [sweep / "5", sweep / "6", sweep / "7"]


def test_cells_and_labels_follow_the_rules(sweep):
    matrix = build_matrix("gaussians25", find_runs([sweep]).runs)
    assert matrix.families == ["vae", "gan", "diffusion"]
    rows = {row.name: row for row in matrix.rows}
    quality = rows["Sample quality"].cells
    assert rows["Sample quality"].metric.startswith("precision_data_space")
    assert quality["vae"].mean == pytest.approx(0.52)
    assert quality["vae"].std == pytest.approx(0.0283, abs=1e-4)
    assert quality["vae"].n == 2 and quality["gan"].n == 1  # the diverged GAN run has no value
    # Ratios to the best (0.99): 1.9 -> Medium, 1 -> Excellent, 1.02 -> Excellent.
    assert [quality[f].label for f in matrix.families] == ["Medium", "Excellent", "Excellent"]
    diversity = rows["Diversity"].cells
    assert rows["Diversity"].metric == "mode_coverage"
    assert [diversity[f].label for f in matrix.families] == ["High", "Low (mode collapse)", "High"]
    stability = rows["Training stability"].cells
    assert stability["vae"].label == "Stable" and stability["gan"].label == "Unstable"
    assert stability["gan"].text.startswith("1/2 diverged or crashed")
    assert stability["diffusion"].label == "n=1"  # one seed: no spread to judge, not "Stable"
    likelihood = rows["Likelihood"].cells
    assert likelihood["vae"].label == "Approx (bound)" and likelihood["vae"].mean == pytest.approx(1.25)
    assert likelihood["vae"].text == "1.25 ± 0.071 bits/dim, SE 0.013, median 0.75"  # SE, median: seed means
    assert likelihood["gan"].label == "None"
    speed = rows["Sampling speed"].cells
    assert [speed[f].label for f in matrix.families] == ["Fast", "Fast", "Very slow"]  # 450x the fastest
    assert speed["diffusion"].text == "0.9 ms (n=1); r 450, NFE 100"  # the ratio its word was read from
    cost = rows["Training compute"].cells
    assert [cost[f].label for f in matrix.families] == ["Cheap", "Cheap", "Moderate"]  # 11 s, 8 s, 30 s
    latent = rows["Latent space"].cells
    assert [latent[f].label for f in matrix.families] == ["Yes", "Yes", "Implicit"]


def test_loss_oscillation_separates_settled_from_swinging_curves(sweep):
    runs = {(r.family, r.seed): r for r in find_runs([sweep]).runs}
    assert loss_oscillation(runs["vae", 0]) < 0.05
    assert loss_oscillation(runs["gan", 0]) > 0.4


def test_a_resumed_runs_curves_cover_the_whole_training_back_through_its_checkpoints(tmp_path):
    """A resumed run logs only the steps after its checkpoint: its loss oscillation was the spread of that
    part over its own range, the early high losses missing (here 0.47 from the runs after the first, over
    the 0.25 limit). Read back through each checkpoint's run, the same training oscillates 0.024."""
    first = _run(tmp_path, "first", "vae", 0, {}, losses=SMOOTH[:10])  # steps 0 to 90, then checkpointed

    def resumed(name: str, earlier: Path, steps: range, losses: list[float]) -> Path:
        checkpoint = earlier / "checkpoints" / "last.ckpt"
        run_dir = _run(tmp_path, name, "vae", 0, {}, config={"ckpt_path": str(checkpoint)})
        (run_dir / "csv").mkdir()
        with (run_dir / "csv" / "metrics.csv").open("w", newline="") as f:
            csv.writer(f).writerows([["step", "train/loss"], *zip(steps, losses, strict=True)])
        return run_dir

    swing = [1.0 + (0.05 if i % 2 else -0.05) for i in range(10)]
    second = resumed("second", first, range(100, 200, 10), swing)
    # The first run logged past its checkpoint (killed before its next one): those steps are not the
    # resumed model's, and the second run's own rows replace them.
    with (first / "csv" / "metrics.csv").open("a", newline="") as f:
        csv.writer(f).writerow([0, 100, 9.0, ""])
    resumed("third", second, range(200, 250, 10), swing[:5])
    runs = {r.path.name: r for r in find_runs([tmp_path]).runs}
    assert [step for step, _ in runs["second"].loss_curve()] == list(range(0, 200, 10))
    assert [step for step, _ in runs["third"].loss_curve()] == list(range(0, 250, 10))
    assert runs["second"].loss_curve()[10] == (100, 0.95)
    assert loss_oscillation(runs["third"]) < 0.05
    shutil.rmtree(first)  # moved away: the history ends at the second run
    assert [step for step, _ in runs["third"].loss_curve()] == list(range(100, 250, 10))
    assert loss_oscillation(runs["third"]) > rules.OSCILLATION_LIMIT
    silent = _run(tmp_path, "silent", "vae", 0, {},
                  config={"ckpt_path": str(second / "checkpoints" / "last.ckpt")})
    assert find_runs([silent]).runs[0].loss_curve() == []  # no first step: not the second run's whole log
    after = resumed("after_silent", silent, range(300, 320, 10), [1.0, 1.0])  # the history stops at silent
    assert [step for step, _ in find_runs([after]).runs[0].loss_curve()] == [300, 310]
    loop = resumed("loop", tmp_path / "loop", range(0, 30, 10), [1.0, 2.0, 3.0])  # resumed into its own dir
    assert [loss for _, loss in find_runs([loop]).runs[0].loss_curve()] == [1.0, 2.0, 3.0]


def test_matrix_files_name_the_metric_of_each_row(sweep, tmp_path):
    write_matrix([sweep], tmp_path / "out")
    md = (tmp_path / "out" / "matrix.md").read_text()
    assert ("| Sample quality (precision_data_space, higher is better; r to the best column (no real-data "
            "value recorded)) |") in md
    assert "gan seed 1: diverged: DivergedError" in md
    assert f"## Jobs without a usable record\n\n- {sweep / '5'}: unusable metrics.json" in md
    assert f"- {sweep / '6'}: no metrics.json" in md
    rows = list(csv.DictReader((tmp_path / "out" / "matrix.csv").open()))
    assert {r["family"] for r in rows} == {"vae", "gan", "diffusion"} and len(rows) == 9 * 3
    page = (tmp_path / "out" / "matrix.html").read_text()
    assert page.count("data:image/png;base64,") >= 2 and "<table>" in page  # self-contained plots
    assert "Runs that did not finish" in page and "Jobs without a usable record" in page
    assert f"<li>{sweep / '6'}: no metrics.json" in page


def _matrix(root: Path, dataset: str = "gaussians25"):
    return build_matrix(dataset, find_runs([root]).runs)


def test_a_single_seed_shows_its_value_with_n_1_and_no_spread_word(tmp_path):
    _run(tmp_path, "0", "vae", 0, _metrics(0.5, 1.0, 0.002, 1, 10.0, 1.2), losses=SMOOTH)
    rows = {row.name: row for row in _matrix(tmp_path).rows}
    assert rows["Sample quality"].cells["vae"].text.startswith("0.5 (n=1)")
    assert rows["Likelihood"].cells["vae"].text.startswith("1.2 bits/dim (n=1)")
    assert not any("±" in row.cells["vae"].text for row in rows.values())
    assert rows["Training stability"].cells["vae"].label == "n=1"


def test_a_config_error_is_an_error_not_instability(tmp_path):
    for seed in (0, 1):
        _run(tmp_path, str(seed), "vae", seed, _metrics(0.5, 1.0, 0.002, 1, 10.0, 1.2), losses=SMOOTH)
    _run(tmp_path, "2", "vae", 2, {}, status="failed",
         error="ConfigError: bad config value model.latent_dim=0: must be >= 1")
    _run(tmp_path, "3", "gan", 0, {}, status="failed", error="ConfigError: unknown config key 'model.x'")
    stability = {row.name: row for row in _matrix(tmp_path).rows}["Training stability"].cells
    assert stability["vae"].label == "Stable"
    assert stability["vae"].text.startswith("0/2 diverged or crashed in training, 1 config error")
    assert stability["gan"].label == "Config error"
    quality = {row.name: row for row in _matrix(tmp_path).rows}["Sample quality"].cells
    assert quality["gan"].text == "n/a (1 config error)"


def test_a_run_that_failed_on_a_seed_that_is_no_integer_is_listed_without_one(tmp_path):
    """``seed=abc`` leaves a failed record whose seed is null: sorting a column's runs by seed for the loss
    panel failed the whole matrix."""
    sweep = tmp_path / "sweep"
    for seed in (0, 1):
        _run(sweep, str(seed), "vae", seed, _metrics(0.5, 1.0, 0.002, 1, 10.0, 1.2), losses=SMOOTH)
    _run(sweep, "2", "vae", None, {}, status="failed",
         error="ConfigError: bad config value for 'seed': Value 'abc' of type 'str' could not be converted")
    write_matrix([sweep], tmp_path / "out")
    page = (tmp_path / "out" / "matrix.md").read_text()
    assert "vae with no integer seed: failed: ConfigError: bad config value for 'seed'" in page
    assert "seeds 0, 1" in page
    assert "data:image/png;base64," in (tmp_path / "out" / "matrix.html").read_text()  # the loss panels


def test_only_a_crash_in_training_or_a_divergence_makes_a_column_unstable(tmp_path):
    """A failure in evaluation (a GPU out of memory), of the machine (a disk full while training) or of a
    dead worker says nothing of how a family trains; a crash in training does, and so does a record from
    before failed_in (it cannot tell)."""
    for family, failed_in in (("vae", "evaluation"), ("gan", "worker"), ("diffusion", "training")):
        for seed in (0, 1):
            _run(tmp_path, f"{family}{seed}", family, seed, _metrics(0.5, 1.0, 0.002, 1, 10.0, 1.2),
                 losses=SMOOTH)
        _run(tmp_path, f"{family}2", family, 2, {}, status="failed", failed_in=failed_in,
             error="OutOfMemoryError: CUDA out of memory")
    stability = _matrix(tmp_path).row("Training stability").cells
    assert stability["vae"].label == stability["gan"].label == "Stable"
    assert stability["vae"].text.startswith("0/3 diverged or crashed in training, 1 failed on something else")
    assert stability["diffusion"].label == "Unstable"
    shutil.rmtree(tmp_path / "vae2")
    _run(tmp_path, "vae2", "vae", 2, {}, status="failed", failed_in="machine",
         error="OSError: [Errno 28] No space left on device")
    assert _matrix(tmp_path).row("Training stability").cells["vae"].label == "Stable"
    shutil.rmtree(tmp_path / "vae2")
    _run(tmp_path, "vae2", "vae", 2, {}, status="failed", error="RuntimeError: written before failed_in")
    assert _matrix(tmp_path).row("Training stability").cells["vae"].label == "Unstable"


def test_runs_of_different_budgets_get_their_own_columns_and_a_warning(tmp_path, caplog):
    config = {"model": {"latent_dim": 8}, "trainer": {"max_steps": 2000, "enable_progress_bar": False},
              "paths": {"output_dir": "a"}}
    debug = {**config, "trainer": {"max_steps": 200, "enable_progress_bar": True},
             "paths": {"output_dir": "b"}}
    for seed in (0, 1):
        _run(tmp_path, f"long{seed}", "vae", seed, _metrics(0.5, 1.0, 0.002, 1, 10.0, 1.2), config=config)
    _run(tmp_path, "short", "vae", 0, _metrics(0.1, 0.5, 0.002, 1, 95.0, 3.0), config=debug)
    matrix = _matrix(tmp_path)
    assert matrix.families == ["vae [trainer.max_steps=200]", "vae [trainer.max_steps=2000]"]
    quality = matrix.row("Sample quality").cells
    assert quality["vae [trainer.max_steps=2000]"].n == 2 and quality["vae [trainer.max_steps=200]"].n == 1
    assert matrix.warnings == ["vae: runs under 2 different configs are not pooled; each has its own column "
                               "(they differ in trainer.max_steps)"]
    with caplog.at_level(logging.WARNING):
        write_matrix([tmp_path], tmp_path / "out")
    assert "**Warning:** vae: runs under 2 different configs" in (tmp_path / "out" / "matrix.md").read_text()
    assert "gaussians25: vae: runs under 2 different configs are not pooled" in caplog.text


def test_configs_shown_alike_still_get_columns_of_their_own(tmp_path):
    """max_steps 200 and "200" differ in the record but read alike: numbered, not merged into one cell."""
    for i, steps in enumerate((200, "200")):
        _run(tmp_path, str(i), "vae", 0, _metrics(0.5 + i / 10, 1.0, 0.002, 1, 10.0, 1.2),
             config={"trainer": {"max_steps": steps}})
    matrix = _matrix(tmp_path)
    assert matrix.families == ["vae [trainer.max_steps=200] #1", "vae [trainer.max_steps=200] #2"]
    assert [c.mean for c in matrix.row("Sample quality").cells.values()] == [0.5, 0.6]


def test_a_column_names_a_float_option_at_four_digits_and_numbers_those_it_rounds_alike(tmp_path):
    """An Optuna search's learning rates: 0.0028369961259166574 reads 0.002837; two that round alike are
    numbered, not merged."""
    for i, lr in enumerate((0.0123401, 0.01, 0.0028369961259166574, 0.0123449, 1e-5)):
        _run(tmp_path, str(i), "vae", 0, _metrics(0.5 + i / 10, 1.0, 0.002, 1, 10.0, 1.2),
             config={"model": {"optimizer": {"lr": lr}}})
    matrix = _matrix(tmp_path)
    names = [f"vae [model.optimizer.lr={lr}]" for lr in ("1e-05", "0.002837", "0.01", "0.01234", "0.01234")]
    assert matrix.families == [f"{name} #{i}" for i, name in enumerate(names, 1)]  # in the values' order
    assert [c.mean for c in matrix.row("Sample quality").cells.values()] == [0.9, 0.7, 0.6, 0.5, 0.8]


def test_records_of_eval_py_show_the_steps_of_their_checkpoints_and_a_checkpoints_path_splits_nothing(
        tmp_path):
    """eval.py's records (train=false) carry their config's max_steps (2000 here), not the 300 steps their
    checkpoint trained: the Budget row, the context and the column's setup take the checkpoint's (the
    column was titled "trainer.max_steps=2000", and checkpoints of 300 and 600 steps pooled as seeds). A
    resumed run (ckpt_path set) pools with the run that was never stopped."""
    metrics = _metrics(0.5, 1.0, 0.002, 1, 10.0, 1.2)
    for seed in (0, 1):
        _run(tmp_path, f"v{seed}", "vae", seed, {**metrics, "train_steps": 300},
             config={"trainer": {"max_steps": 300, "max_epochs": None}, "budget_steps": None,
                     "ckpt_path": None if seed else "/ckpt/first.ckpt"})
        _run(tmp_path, f"e{seed}", "vae", seed, {**metrics, "train_steps": 300},
             config={"trainer": {"max_steps": 2000, "max_epochs": None}, "budget_steps": None, "train": False,
                     "ckpt_path": f"/runs/v{seed}/last.ckpt"})
    matrix = _matrix(tmp_path)
    assert [len(c.runs) for c in matrix.columns] == [2, 2]  # the two seeds pooled in each column
    budget = {c.evaluated_only: matrix.row("Budget").cells[c.name].text for c in matrix.columns}
    assert budget == {False: "max_steps 300", True: "evaluated checkpoints of 300 steps"}
    write_matrix([tmp_path], tmp_path / "out")
    assert ("- Budget (trainer.max_steps): evaluated checkpoints of 300 steps (vae \\[train=false\\]); "
            "300 (vae \\[train=unset\\])" in (tmp_path / "out" / "matrix.md").read_text())
    _run(tmp_path, "e2", "vae", 2, {**metrics, "train_steps": 600},
         config={"trainer": {"max_steps": 2000, "max_epochs": None}, "budget_steps": None, "train": False,
                 "ckpt_path": "/runs/v2/last.ckpt"})
    matrix = _matrix(tmp_path)
    assert {c.name: len(c.runs) for c in matrix.columns} == {
        "vae [train=false, trainer.max_steps=300]": 2, "vae [train=false, trainer.max_steps=600]": 1,
        "vae [train=unset, trainer.max_steps=300]": 2}
    assert matrix.row("Budget").cells["vae [train=false, trainer.max_steps=600]"].text == (
        "evaluated checkpoints of 600 steps")


def test_runs_stopped_before_max_steps_show_what_stopped_them_and_the_steps_they_trained(tmp_path):
    """Trained by epochs (max_steps=-1) or under a debug preset, a run stops before trainer.max_steps: the
    Budget row and the context said "max_steps 2000" of a run that trained 5 steps; they now name the limit
    and the steps trained. A run that trained its max_steps reads as before."""
    metrics = _metrics(0.5, 1.0, 0.002, 1, 10.0, 1.2)
    for seed, steps in enumerate((42, 43)):
        _run(tmp_path, f"e{seed}", "vae", seed, {**metrics, "train_steps": steps},
             config={"trainer": {"max_steps": -1, "max_epochs": 3}})
    _run(tmp_path, "d", "gan", 0, {**metrics, "train_steps": 10},
         config={"trainer": {"max_steps": 2000, "max_epochs": 1, "limit_train_batches": 5,
                             "fast_dev_run": False, "max_time": "00:00:05:00"}})
    _run(tmp_path, "f", "diffusion", 0, {**metrics, "train_steps": 2000},
         config={"trainer": {"max_steps": 2000, "max_epochs": None}})
    budget = {name: cell.text for name, cell in _matrix(tmp_path).row("Budget").cells.items()}
    assert budget == {"vae": "max_steps -1 (max_epochs 3; trained 42 / 43 steps)",
                      "gan": "max_steps 2000 (max_epochs 1; max_time 00:00:05:00; limit_train_batches 5; "
                             "trained 10 steps)",
                      "diffusion": "max_steps 2000"}
    write_matrix([tmp_path], tmp_path / "out")
    assert ("- Budget (trainer.max_steps): -1 (max_epochs 3; trained 42 / 43 steps) (vae); 2000 ("
            "max_epochs 1; max_time 00:00:05:00; limit_train_batches 5; trained 10 steps) (gan); "
            "2000 (diffusion)"
            in (tmp_path / "out" / "matrix.md").read_text())


def test_quality_words_are_anchored_to_held_out_real_data(tmp_path):
    """Every family poor: the best of them is Low, not Excellent, and real data is the reference column."""
    for i, (family, precision) in enumerate([("vae", 0.0045), ("gan", 0.004), ("diffusion", 0.0042)]):
        _run(tmp_path, str(i), family, 0, {**_metrics(precision, 1.0, 0.002, 1, 10.0, None),
                                           "real_precision_data_space": 0.95, "real_mode_coverage": 1.0})
    matrix = _matrix(tmp_path)
    quality = matrix.row("Sample quality")
    assert [quality.cells[f].label for f in matrix.families] == ["Low", "Low", "Low"]
    assert quality.cells["vae"].ratio == pytest.approx(0.95 / 0.0045)
    assert quality.reference.mean == pytest.approx(0.95) and "held-out real data" in quality.metric
    assert matrix.row("Diversity").reference.mean == 1.0
    write_matrix([tmp_path], tmp_path / "out")
    md = (tmp_path / "out" / "matrix.md").read_text()
    assert "| vae | gan | diffusion | held-out real data |" in md and "| 0.95 ± 0 |" in md  # 3 runs


def test_ratios_to_a_floor_of_fewer_held_out_images_use_the_samples_scored_at_that_size(tmp_path):
    """digits: 359 held-out images. Each run's value at its floor's size (at_real_n_ where it recorded one)
    is compared with its own floor; a record from before at_real_n_ whose floor had fewer images than its
    samples is left out, and a column of only such records gets no word."""
    common = {"sample_ms_per_sample": 0.01, "nfe": 1, "train_seconds": 5.0, "likelihood_kind": "none",
              "real_fd_digits_cnn": 4.0, "real_recall_digits_cnn": 0.8, "fd_digits_cnn": 6.0,
              "recall_digits_cnn": 0.6}
    resized = {"at_real_n_fd_digits_cnn": 12.0, "at_real_n_recall_digits_cnn": 0.4}
    sizes = {"equal": {"real_data": {"n_real_held_out": 359}, "digits_cnn": {"n_generated": 300}},
             "old": {"real_data": {"n_real_held_out": 359}, "digits_cnn": {"n_generated": 10000}}}
    for seed, (extra, size) in enumerate([(resized, "equal"), ({}, "equal"), ({}, "old")]):
        _run(tmp_path, f"v{seed}", "vae", seed, {**common, **extra}, dataset="digits",
             metric_provenance=sizes[size])
    _run(tmp_path, "g", "gan", 0, common, dataset="digits", metric_provenance=sizes["equal"])
    _run(tmp_path, "d", "diffusion", 0, common, dataset="digits", metric_provenance=sizes["old"])
    matrix = _matrix(tmp_path, "digits")
    quality, diversity = matrix.row("Sample quality"), matrix.row("Diversity")
    vae, gan, diffusion = (quality.cells[f] for f in ("vae", "gan", "diffusion"))
    assert matrix.quality == "fd_digits_cnn" and vae.mean == 6.0
    assert vae.ratio == pytest.approx((12 / 4 + 6 / 4) / 2) and vae.compared == pytest.approx(9.0)
    assert "(at the floor's sample size: at_real_n_fd_digits_cnn 12 in 1 of 2 runs)" in vae.text
    assert "(r from 2 of 3 runs: the others have no real-data value at their samples' size)" in vae.text
    assert gan.ratio == pytest.approx(1.5) and gan.compared is None and "at_real_n" not in gan.text
    assert (diffusion.label, diffusion.ratio) == ("n/a", None) and diffusion.mean == 6.0
    assert diffusion.text == "6 (n=1); no real-data value at its samples' size"
    assert not quality.reference_at_cells_size
    assert [w for w in matrix.warnings if "fewer images" in w] == [
        "2 runs scored held-out real data on fewer images than their samples and recorded no "
        "at_real_n_<metric> (written before it existed), so their r and s are left out; evaluate their "
        f"checkpoints again with eval.py: {tmp_path / 'd'}, {tmp_path / 'v2'}"]
    assert diversity.cells["vae"].ratio == pytest.approx((0.4 / 0.8 + 0.6 / 0.8) / 2)
    assert diversity.cells["gan"].ratio == pytest.approx(0.75) and diversity.cells["diffusion"].label == "n/a"
    write_matrix([tmp_path], tmp_path / "out")  # a column without a word still renders, verdicts too
    assert "| Sample quality" in (tmp_path / "out" / "matrix.md").read_text()
    # Only old records: still anchored to real data (not to the best column), and no word at all.
    for run in ("v0", "v1", "g"):
        shutil.rmtree(tmp_path / run)
    quality = _matrix(tmp_path, "digits").row("Sample quality")
    assert "r to held-out real data" in quality.metric and not quality.reference_at_cells_size
    assert {cell.label for cell in quality.cells.values()} == {"n/a"}


def test_the_bottom_line_ranks_quality_by_r_not_by_the_values_shown(tmp_path):
    """The GAN shows the lower FD (5 < 6), but scored at its floor's sample size it is 9 against a floor of
    4 (r 2.25) where the VAE is 6 against 4 (r 1.5): the VAE has the better quality and, as fast, is the
    whole Pareto front."""
    common = {"sample_ms_per_sample": 0.01, "nfe": 1, "train_seconds": 5.0, "likelihood_kind": "none",
              "real_fd_digits_cnn": 4.0}
    size = {"real_data": {"n_real_held_out": 359}, "digits_cnn": {"n_generated": 10000}}
    _run(tmp_path, "v", "vae", 0, {**common, "fd_digits_cnn": 6.0, "at_real_n_fd_digits_cnn": 6.0},
         dataset="digits", metric_provenance=size)
    _run(tmp_path, "g", "gan", 0, {**common, "fd_digits_cnn": 5.0, "at_real_n_fd_digits_cnn": 9.0},
         dataset="digits", metric_provenance=size)
    matrix = _matrix(tmp_path, "digits")
    quality = matrix.row("Sample quality").cells
    assert (quality["vae"].ratio, quality["gan"].ratio) == (pytest.approx(1.5), pytest.approx(2.25))
    verdicts = {v.need: v for v in bottom_line(matrix)}
    best = verdicts["Best sample quality"]
    assert best.choice == "vae"
    assert best.why == ("fd_digits_cnn 6 (High, r 1.5 from 6 at the floor's sample size); "
                        "one run: not tested for a tie")
    assert pareto_front(matrix) == ["vae"]


def test_bottom_line_pareto_front_and_founding_comparison(tmp_path):
    for seed in (0, 1):
        _run(tmp_path, f"v{seed}", "vae", seed, _metrics(0.50 + seed / 100, 1.0, 0.001, 1, 10.0, 1.2),
             losses=SMOOTH)
        _run(tmp_path, f"g{seed}", "gan", seed, _metrics(0.9 + seed / 20, 0.28, 0.002, 1, 8.0, None),
             losses=SWINGING)
        _run(tmp_path, f"d{seed}", "diffusion", seed, _metrics(0.90, 0.96, 0.9, 100, 30.0, 0.9),
             losses=SMOOTH)
    matrix = _matrix(tmp_path)
    verdicts = {v.need: v.choice for v in bottom_line(matrix)}
    assert verdicts == {"Best sample quality": "gan",
                        "Fastest sampling at good quality (Excellent or High)": "gan",
                        "Exact likelihood": None, "Latent space": "gan", "Conditioning": "gan",
                        "Most stable at good quality (Excellent or High)": "diffusion"}
    assert pareto_front(matrix) == ["vae", "gan"]  # diffusion: slower than the GAN and no better
    cells = {(c.prop, c.family): c for c in compare(matrix)}
    assert cells["Likelihood", "VAE"].verdict == "agrees"  # Approx (ELBO) is Approx (bound)
    assert cells["Diversity", "GAN"].verdict == "agrees"  # Low (mode collapse) measured
    assert cells["Training stability", "GAN"].verdict == "agrees"  # the GAN's loss swings
    assert cells["Sampling speed", "Diffusion"].verdict == "disagrees"  # Slow taught, Very slow measured
    assert cells["Sample quality", "Flow"].verdict == "not measured"  # no flow in this sweep
    write_matrix([tmp_path], tmp_path / "out")
    md = (tmp_path / "out" / "matrix.md").read_text()
    assert "| Sampling speed | Fast → Fast: agrees | Fast → Fast: agrees | Slow → —: not measured |" in md
    assert "Speed-quality Pareto front (fastest first): vae, gan" in md


def test_the_bottom_line_names_the_columns_the_seeds_cannot_tell_from_its_pick(tmp_path):
    """Three seeds each: the GAN's quality is the best mean, but diffusion's is within the seeds' spread of
    it (the VAE's is far below both); the two exact likelihoods overlap too. A pick names what it ties with,
    and a pick of one run says it was not tested."""
    quality = {"vae": (0.50, 0.51, 0.52), "gan": (0.90, 0.95, 1.00), "diffusion": (0.93, 0.94, 0.92)}
    nll = {"vae": (1.20, 1.30, 1.25), "gan": None, "diffusion": (1.22, 1.24, 1.26)}
    for family in quality:
        for seed in range(3):
            bpd = nll[family] and nll[family][seed]
            ms = 0.9 if family == "diffusion" else 0.002
            metrics = _metrics(quality[family][seed], 1.0, ms, 1, 10.0, bpd)
            _run(tmp_path, f"{family}{seed}", family, seed,
                 {**metrics, "likelihood_kind": "none" if bpd is None else "exact"}, losses=SMOOTH)
    verdicts = {v.need: v for v in bottom_line(_matrix(tmp_path))}
    best = verdicts["Best sample quality"]
    assert (best.choice, best.tied, best.pick) == ("gan", ["diffusion"], "gan (tied with diffusion)")
    assert best.why.endswith("; within the seeds' spread of it: diffusion r 1.02")
    fastest = verdicts["Fastest sampling at good quality (Excellent or High)"]
    assert (fastest.choice, fastest.tied) == ("gan", [])  # 0.002 against 0.9 ms/sample, no spread in either
    likelihood = verdicts["Exact likelihood"]
    assert (likelihood.choice, likelihood.tied) == ("diffusion", ["vae"])
    assert likelihood.why == "nll_bpd 1.24; within the seeds' spread of it: vae nll_bpd 1.25"
    # The GAN's spread is what ties it: with the same mean and none, the seeds tell it from diffusion.
    for seed in range(3):
        shutil.rmtree(tmp_path / f"gan{seed}")
        _run(tmp_path, f"gan{seed}", "gan", seed, _metrics(0.95, 1.0, 0.002, 1, 10.0, None), losses=SMOOTH)
    best = next(v for v in bottom_line(_matrix(tmp_path)) if v.need == "Best sample quality")
    assert (best.choice, best.tied, best.pick) == ("gan", [], "gan")
    write_matrix([tmp_path], tmp_path / "out")
    md = (tmp_path / "out" / "matrix.md").read_text()
    assert "| Exact likelihood | diffusion (tied with vae) | nll_bpd 1.24;" in md


def test_the_pareto_front_keeps_a_column_the_seeds_cannot_show_to_be_beaten(tmp_path):
    """As fast as the GAN and of a quality the seeds cannot tell from its better mean, the VAE was left off
    the front as dominated; a VAE whose seeds all score below the GAN's is still dominated."""
    spread = {"vae": (0.91, 0.90, 0.92), "gan": (0.90, 0.92, 0.94), "diffusion": (0.99, 0.99, 0.99)}
    for family, values in spread.items():
        for seed, precision in enumerate(values):
            ms = 0.9 if family == "diffusion" else 0.002
            _run(tmp_path, f"{family}{seed}", family, seed, _metrics(precision, 1.0, ms, 1, 10.0, None),
                 losses=SMOOTH)
    assert pareto_front(_matrix(tmp_path)) == ["vae", "gan", "diffusion"]  # diffusion: the best quality
    for seed in range(3):
        shutil.rmtree(tmp_path / f"vae{seed}")
        _run(tmp_path, f"vae{seed}", "vae", seed, _metrics(0.5 + seed / 100, 1.0, 0.002, 1, 10.0, None),
             losses=SMOOTH)
    assert pareto_front(_matrix(tmp_path)) == ["gan", "diffusion"]


@pytest.mark.parametrize("a, b", [((1.0, 1.2), (1.5, 1.7, 1.6)), ((1.0, 1.1, 1.2), (1.25, 1.35, 1.3)),
                                  ((3.0, 3.1), (3.05, 3.2)), ((0.5, 0.52, 0.49, 0.51), (0.6, 0.7))])
def test_a_tie_is_a_welch_t_statistic_of_at_most_two(a, b):
    scipy_stats = pytest.importorskip("scipy.stats")
    t = scipy_stats.ttest_ind(a, b, equal_var=False).statistic
    assert tied(a, b) == (abs(t) <= rules.TIE_SE)
    assert tied(a, (1.0,)) is None and tied((2.0,), b) is None  # one run: its spread is unknown


@pytest.mark.parametrize("n", [3, 5, 30])
@pytest.mark.parametrize("cv", [0.05, 0.2])
def test_a_cvs_standard_error_is_a_simulations_within_10_percent(n, cv):
    """The delta method's standard error of a coefficient of variation, with n - 1, against the spread of
    40,000 simulated sets of n normal draws: theirs was 0.92 to 0.94 of it at n = 3, 0.96 to 0.97 at 5,
    1.00 at 30."""
    noise = torch.randn(40000, n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    draws = 10 + 10 * cv * noise
    simulated = float((draws.std(dim=1) / draws.mean(dim=1)).std())
    assert cv_standard_error(cv, n) == pytest.approx(simulated, rel=0.1)


def test_the_most_stable_pick_names_the_columns_whose_cv_the_seeds_cannot_tell_from_its(tmp_path):
    """Six seeds each: CVs of 0.009 and 0.018 differ by less than two standard errors of their difference,
    one of 0.2 by more. (At three seeds no CV under 0.25 can be told from one of 0: its standard error is
    about half of it.)"""
    quality = {"vae": (0.89, 0.90, 0.91) * 2, "gan": (0.88, 0.90, 0.92) * 2, "diffusion": (0.7, 0.9, 1.1) * 2}
    for family, values in quality.items():
        for seed, precision in enumerate(values):
            _run(tmp_path, f"{family}{seed}", family, seed, _metrics(precision, 1.0, 0.01, 1, 10.0, None),
                 losses=SMOOTH)
    matrix = _matrix(tmp_path)
    cvs = {c: cell.mean for c, cell in matrix.row("Training stability").cells.items()}
    assert cvs == {f: pytest.approx(statistics.stdev(v) / statistics.fmean(v)) for f, v in quality.items()}
    steady = next(v for v in bottom_line(matrix) if v.need.startswith("Most stable"))
    assert (steady.choice, steady.tied, steady.pick) == ("vae", ["gan"], "vae (tied with gan)")
    assert steady.why == ("CV of precision_data_space over seeds 0.01, precision_data_space 0.9 (Excellent, "
                          "r 1); within the seeds' spread of it: gan CV 0.02")


def test_the_most_stable_pick_is_of_good_quality(tmp_path):
    """On gaussians25 the GAN's precision of 0.02 (Low, r 45) varied least over the seeds, and the bottom
    line's "Most stable: gan" read as advice to train one. A column reliably poor is no pick."""
    quality = {"vae": (0.2, 0.2, 0.2), "gan": (0.88, 0.90, 0.92), "diffusion": (0.7, 0.9, 1.1)}
    for family, values in quality.items():
        for seed, precision in enumerate(values):
            _run(tmp_path, f"{family}{seed}", family, seed, _metrics(precision, 1.0, 0.01, 1, 10.0, None),
                 losses=SMOOTH)
    matrix = _matrix(tmp_path)
    assert matrix.row("Sample quality").cells["vae"].label == "Low"
    assert matrix.row("Training stability").cells["vae"].mean == 0  # the steadiest of all
    steady = next(v for v in bottom_line(matrix) if v.need.startswith("Most stable"))
    assert steady.need == "Most stable at good quality (Excellent or High)" and steady.choice == "gan"
    for family, values in quality.items():  # the good ones swing: no Stable column of good quality
        for seed, precision in enumerate(values):
            losses = SMOOTH if family == "vae" else SWINGING
            _run(tmp_path / "swinging", f"{family}{seed}", family, seed,
                 _metrics(precision, 1.0, 0.01, 1, 10.0, None), losses=losses)
    none = next(v for v in bottom_line(_matrix(tmp_path / "swinging")) if v.need.startswith("Most stable"))
    assert none.choice is None and "no Stable column of Excellent or High quality" in none.why


def _curve(run_dir: Path, points: list[tuple[int, float, float]], floor: float = 0.03) -> None:
    """curves.csv with the curve's own real-data floor (at its sample size) on every row."""
    lines = ["step,train_examples,train_flops,train_seconds,energy_distance_test,real_energy_distance_test"]
    lines += [f"{step},{step * 10},{flops},1.0,{value},{floor}" for step, flops, value in points]
    (run_dir / "curves.csv").write_text("\n".join(lines) + "\n")


def test_seeds_whose_curves_share_no_step_have_no_mean_curve(tmp_path):
    for seed, steps in enumerate(((10, 100), (20, 200))):
        run = _run(tmp_path, f"v{seed}", "vae", seed, _metrics(0.5, 1.0, 0.001, 1, 10.0, 1.2))
        _curve(run, [(step, step * 1e7, 1 / step) for step in steps])
    assert _matrix(tmp_path).curves.metric is None  # no curve to summarize, and no crash


def test_quality_against_compute_best_value_level_and_flattening(tmp_path):
    flat = [(10, 1e8, 0.5), (100, 1e9, 0.1), (1000, 1e10, 0.052), (3162, 3.2e10, 0.0515)]
    for seed in (0, 1):
        real = {"real_energy_distance_test": 0.05}
        vae = _run(tmp_path, f"v{seed}", "vae", seed, {**_metrics(0.5, 1.0, 0.001, 1, 10.0, 1.2), **real})
        _curve(vae, flat)
        gan = _run(tmp_path, f"g{seed}", "gan", seed, {**_metrics(0.9, 0.3, 0.002, 1, 8.0, None), **real})
        _curve(gan, [(10, 1e8, 0.9), (100, 1e9, 0.6 + seed / 10), (1000, 1e10, 0.3), (3162, 3.2e10, 0.2)])
    curves = _matrix(tmp_path).curves
    # The floor is the curves' own (at their sample size), not the evaluation stage's real_ value (0.05).
    assert curves.metric == "energy_distance_test" and curves.floor == pytest.approx(0.03)
    assert curves.curves["gan"].mean[1] == pytest.approx(0.65) and curves.curves["gan"].high[1] == 0.7
    assert curves.best["vae"] == (pytest.approx(0.0515), pytest.approx(3.2e10))
    assert curves.level == pytest.approx((0.0515 + 0.2) / 2)  # the median of the two best values
    assert curves.to_level == {"vae": pytest.approx(1e9), "gan": None}  # the GAN never gets there
    assert curves.trend == {"vae": "Flattened", "gan": "Still improving"}
    budget = _matrix(tmp_path).row("Budget").cells
    assert budget["vae"].label == "Flattened" and budget["gan"].label == "Still improving"
    late = _run(tmp_path, "late", "diffusion", 0, _metrics(0.9, 0.9, 0.9, 100, 30.0, 0.9))
    _curve(late, [(10, 1e8, 100.0), (100, 1e9, 0.5), (1000, 1e10, 0.25), (3162, 3.2e10, 0.2)])
    assert _matrix(tmp_path).curves.trend["diffusion"] == "Still improving"  # 20% late, after a 200x drop
    for seed in (0, 1):  # a GAN that collapses after its best point
        _curve(tmp_path / f"g{seed}",
               [(10, 1e8, 0.9), (100, 1e9, 0.2), (1000, 1e10, 0.5), (3162, 3.2e10, 0.6)])
    assert _matrix(tmp_path).curves.trend["gan"] == "Past its best"


def test_an_unreadable_curve_is_left_out_with_one_warning(tmp_path, caplog):
    """The matrix reads a run's curves.csv for the metric and again for its floor: one bad file gave three
    identical warnings."""
    for seed in (0, 1):
        run = _run(tmp_path, f"v{seed}", "vae", seed, _metrics(0.5, 1.0, 0.001, 1, 10.0, 1.2))
        _curve(run, [(10, 1e8, 0.5), (100, 1e9, 0.1)])
    (tmp_path / "v1" / "curves.csv").write_bytes(b"step,train_flops\n\xff\xfe")
    with caplog.at_level(logging.WARNING):
        curves = _matrix(tmp_path).curves
    assert curves.curves["vae"].seeds == 1  # the readable run's curve
    assert caplog.text.count(f"ignoring {tmp_path / 'v1' / 'curves.csv'}") == 1


def test_below_held_out_real_data_a_curve_is_at_the_floor_for_the_level_and_the_trend(tmp_path):
    """On moons (2,000 points) real data's own energy distance ranged 0.0012 to 0.0047 over three seeds; the
    common level was the median best value, 0.0019, below real data's mean (0.0032), so reaching it, and
    a curve's ups and downs down there ("Past its best"), measured noise."""
    for seed in (0, 1):
        diffusion = _run(tmp_path, f"d{seed}", "diffusion", seed, _metrics(0.9, 0.9, 0.01, 1, 10.0, 1.0))
        _curve(diffusion, [(10, 1e8, 0.5), (100, 1e9, 0.029), (1000, 1e10, 0.02), (3162, 3.2e10, 0.026)],
               floor=(0.02, 0.04)[seed])  # each seed's own held-out draw
        gan = _run(tmp_path, f"g{seed}", "gan", seed, _metrics(0.9, 0.9, 0.01, 1, 10.0, 1.0))
        _curve(gan, [(10, 1e8, 0.5), (100, 1e9, 0.2), (1000, 1e10, 0.05), (3162, 3.2e10, 0.025)])
        vae = _run(tmp_path, f"v{seed}", "vae", seed, _metrics(0.5, 1.0, 0.001, 1, 10.0, 1.2))
        _curve(vae, [(10, 1e8, 0.5), (100, 1e9, 0.2), (1000, 1e10, 0.1), (3162, 3.2e10, 0.095)])
    curves = _matrix(tmp_path).curves
    assert curves.floor == pytest.approx(0.03)
    assert curves.best["diffusion"] == (pytest.approx(0.02), pytest.approx(1e10))  # as measured
    assert curves.level == pytest.approx(0.03)  # not the median best value, 0.025
    assert curves.to_level == {"diffusion": pytest.approx(1e9), "gan": pytest.approx(3.2e10),
                               "vae": None}
    # Diffusion ended 30% above its best point, all of it below the floor: at the floor since 1e9 FLOPs.
    assert curves.trend == {"diffusion": "Flattened", "gan": "Still improving", "vae": "Flattened"}
    assert compute_table(_matrix(tmp_path))[0] == (
        "energy_distance_test from curves.csv (lower is better; held-out real data 0.03, 0.02 to 0.04 over "
        "the runs); common level 0.03 (held-out real data's: the columns' median best value is below it, "
        "where the metric cannot tell samples from real data)")


def test_the_page_states_its_context(tmp_path):
    _run(tmp_path, "0", "vae", 3, {**_metrics(0.5, 1.0, 0.002, 1, 10.0, 1.2), "sample_device": "cuda:0",
                                   "sample_device_name": "NVIDIA H200", "train_device": "cuda:0",
                                   "train_device_name": "NVIDIA H200", "train_torch_threads": 1,
                                   "sample_torch_threads": 2},
         config={"trainer": {"max_steps": 2000}})
    _run(tmp_path, "1", "vae", 4, {**_metrics(0.5, 1.0, 0.002, 1, 10.0, 1.2), "sample_device": "cpu",
                                   "train_torch_threads": 1, "sample_torch_threads": 2},
         config={"trainer": {"max_steps": 2000}})  # an older record: the device, no name
    write_matrix([tmp_path], tmp_path / "out")
    md = (tmp_path / "out" / "matrix.md").read_text()
    commit = read_record(tmp_path / "0" / "metrics.json")["provenance"]["git_commit"]
    for line in ["- Budget (trainer.max_steps): 2000", "- Runs: 2 (2 ok), seeds 3, 4", f"- Commit: {commit}",
                 "- Training device: NVIDIA H200 (cuda:0)", "- Sampling device: NVIDIA H200 (cuda:0), cpu",
                 "- Torch threads (training; sampling): 1; 2"]:
        assert line in md
    assert "torch " in md and "- Started: 20" in md


def test_the_rules_prose_is_rendered_from_the_scales_the_table_applies():
    assert rules.QUALITY.prose("r") == "r <= 1.1 Excellent, <= 1.5 High, <= 3 Medium, else Low"
    assert [rules.QUALITY.word(r) for r in (1.1, 1.2, 3.0, 3.01)] == ["Excellent", "High", "Medium", "Low"]
    assert [rules.DIVERSITY.word(s) for s in (0.9, 0.6, 0.59)] == ["High", "Medium", "Low"]
    assert rules.QUALITY.prose("r") in rules.rules_text() and rules.SPEED.prose("r") in rules.rules_text()


def test_a_tiny_multirun_writes_its_matrix_and_its_exit_status_says_a_job_failed(tmp_path):
    """A job that crashes is recorded and the others go on; the sweep then exits 1, not 0."""
    sweep = tmp_path / "sweep"
    args = ["-m", "model=vae,gan", "model.latent_dim=0,2", "dataset=moons", "trainer=debug",
            f"hydra.sweep.dir={sweep}", "eval.speed_repeats=1", "eval.speed_batch_size=8",
            "eval.plot_samples_vector=200"]
    proc = train_py(args, tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "2 of 4 jobs" in proc.stdout + proc.stderr
    assert "can run again" not in proc.stdout + proc.stderr  # config errors: the same overrides fail again
    statuses = [read_record(sweep / str(i) / "metrics.json")["status"] for i in range(4)]
    assert statuses == ["failed", "ok", "failed", "ok"]  # latent_dim=0 is a config error
    md = (sweep / "matrix.md").read_text()
    assert "## moons" in md and ("| Property (metric) | vae \\[model.latent_dim=0\\] "  # brackets escaped
                                 "| vae \\[model.latent_dim=2\\] | gan \\[model.latent_dim=0\\] "
                                 "| gan \\[model.latent_dim=2\\] |") in md
    assert "Runs that did not finish" in md and "model.latent_dim" in md
    stability = next(line for line in md.splitlines() if line.startswith("| Training stability"))
    assert stability.count("**Config error** (0/0 diverged or crashed in training, 1 config error") == 2
    assert (sweep / "matrix.html").stat().st_size > 1000 and (sweep / "matrix.csv").is_file()


def _pid_writing(log_file: Path) -> int | None:
    """The process that holds ``log_file`` open (a joblib worker running that job), from /proc."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if any(os.readlink(fd) == str(log_file) for fd in (proc / "fd").iterdir()):
                return int(proc.name)
        except OSError:  # a process that ended, or one we may not inspect
            continue
    return None


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="finds the worker through /proc")
def test_a_killed_joblib_worker_is_a_failed_job_and_the_sweep_goes_on(tmp_path):
    """kill -9 of one joblib worker used to abort the launcher: later jobs never ran, no matrix, exit 1
    from the traceback. Jobs 0 and 1 run endlessly side by side; job 2 waits for a free worker."""
    sweep = tmp_path / "sweep"
    proc = start_train_py(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "trainer=debug",
                           "logger=none", "trainer.max_epochs=null", "trainer.max_steps=1000000,1000000,4",
                           "eval.speed_repeats=1", "eval.plot_samples_vector=200",
                           f"hydra.sweep.dir={sweep}"], tmp_path)

    def both_running() -> list[int] | str | None:
        if proc.poll() is not None:
            return "the sweep ended"
        pids = [_pid_writing(sweep / job / "train.log") for job in "01"]
        return pids if all(pids) else None

    try:  # once jobs 0 and 1 both run, kill job 0's worker; loky then stops job 1's itself
        workers = wait_for(both_running, what="the workers of jobs 0 and 1")
        assert isinstance(workers, list), (tmp_path / "train_py.log").read_text()[-3000:]
        os.kill(workers[0], signal.SIGKILL)
        assert proc.wait(timeout=300) == 1, (tmp_path / "train_py.log").read_text()[-3000:]
    finally:
        proc.kill()
    killed = read_record(sweep / "0" / "metrics.json")
    assert killed["status"] == "failed" and "joblib worker running this job died" in killed["error"]
    assert "SIGKILL" in killed["error"] and "trainer.max_steps=1000000" in killed["error"]
    assert killed["provenance"]["failed_in"] == "worker"  # not a crash in training: no instability
    assert read_record(sweep / "2" / "metrics.json")["status"] == "ok"  # launched after the death
    md = (sweep / "matrix.md").read_text()
    assert "failed: the joblib worker running this job died" in md and f"({sweep / '0'})" in md
    assert "Runs that did not finish" in (sweep / "matrix.html").read_text()


def test_a_quality_against_nfe_curve_names_its_nfe_in_the_speed_row_and_is_drawn(tmp_path):
    """A column whose checkpoint has an nfe_curve.json (scripts/nfe_sweep.py) shows the fewest NFE at which
    a sampler reaches 90% of the best quality, and the page draws the curves; other columns are unchanged."""
    run_dir = _run(tmp_path, "0", "diffusion", 0, _metrics(0.5, 1.0, 0.5, 100, 10.0, 1.2), losses=SMOOTH)
    _run(tmp_path, "1", "vae", 0, _metrics(0.5, 1.0, 0.002, 1, 10.0, 1.2), losses=SMOOTH)
    points = [CurvePoint(sampler, nfe, nfe, nfe, {"w2_test": w2}, 0.1)
              for sampler, nfe, w2 in [("ddim", 10, 0.5), ("ddim", 50, 0.2), ("dpmpp_2m", 10, 0.21),
                                       ("dpmpp_2m", 50, 0.19)]]
    write_curve(Curve("diffusion", "gaussians25", "w2_test", 2000, 0, {"w2_test": 0.05}, points), run_dir)
    (m,) = build_matrices(find_runs([tmp_path]).runs)
    speed = {row.name: row for row in m.rows}["Sampling speed"]
    # best 0.19; 90% of it is 0.19 / 0.9 = 0.211: DPM-Solver++ at 10 NFE, not DDIM's 0.5 there.
    assert "90% of best w2_test at NFE 10 (dpmpp_2m)" in speed.cells["diffusion"].text
    assert "of best" not in speed.cells["vae"].text
    page = write_matrix([tmp_path], tmp_path / "out")[2]
    html_page = next(p for p in page if p.suffix == ".html").read_text()
    assert "Quality against sampling cost (NFE)" in html_page


def test_a_sweep_that_measured_no_sample_quality_still_gets_its_page(tmp_path):
    """Runs without a quality metric (labelled images with no feature network): the page has no speed-vs-
    quality plot instead of a log axis with no data (matplotlib's "cannot be log-scaled")."""
    for i, family in enumerate(("vae", "gan")):
        metrics = _metrics(0.5, 1.0, 0.002, 1, 10.0, None)
        del metrics["precision_data_space"]
        _run(tmp_path, str(i), family, 0, metrics)
    write_matrix([tmp_path], tmp_path / "out")
    page = (tmp_path / "out" / "matrix.html").read_text()
    assert "alt='speed vs quality'" not in page and "How the words are derived" in page


def test_columns_follow_the_founding_comparison_then_the_other_families_by_name():
    """No hand-kept list of families: the founding table's (data the matrix needs anyway) gives the order,
    a family it does not name (the EBM, flow matching, a new one) follows by name, and the prose says so."""
    found = ["flow_matching", "new_family", "ebm", "diffusion", "gan", "vae"]
    assert sorted(found, key=family_key) == ["vae", "gan", "diffusion", "ebm", "flow_matching", "new_family"]
    assert "then the others by name" in rules_text()


def test_the_matrix_script_writes_the_files_and_says_plainly_what_it_cannot(tmp_path, script, caplog):
    """An --out it could not write into ended in a traceback."""
    matrix = script("matrix")
    _run(tmp_path / "sweep", "0", "vae", 0, _metrics(0.9, 0.8, 0.1, 1, 5.0, 3.0))
    out = tmp_path / "out"
    assert matrix.main([str(tmp_path / "sweep"), "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"matrix.md", "matrix.csv", "matrix.html"}
    (tmp_path / "a_file").write_text("")
    assert matrix.main([str(tmp_path / "sweep"), "--out", str(tmp_path / "a_file" / "out")]) == 1
    assert f"cannot write the matrix into {tmp_path / 'a_file' / 'out'}" in caplog.text
    assert "give another --out" in caplog.text
    (tmp_path / "empty").mkdir()
    assert matrix.main([str(tmp_path / "empty")]) == 1
    assert f"no readable metrics.json under {tmp_path / 'empty'}" in caplog.text
