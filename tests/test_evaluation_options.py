"""Evaluation options (a sampler, its steps, a likelihood's resolution: ``param(..., evaluation=True)``)
are read only when a model samples or is scored, so a trained checkpoint is evaluated under the config's
values: ``eval.py ckpt_path=... model.sampler=dpmpp_2m model.sampling_steps=10`` scores the fast sampler."""

import dataclasses
import logging
from typing import Any

import hydra
import pytest
import torch

from genbench.results import read_record
from genbench.schema import evaluation_options
from genbench.train import run, task
from tests.helpers import FAMILIES, compose_train

QUICK = ["trainer=debug", "logger=none", "callbacks=none", "eval.speed_repeats=1", "eval.speed_batch_size=8"]


def _other(field: dataclasses.Field, default: Any) -> str:
    """A valid value other than ``default``, as a command line writes it."""
    if choices := field.metadata.get("choices"):
        return next(str(c) for c in choices if c != default)
    if isinstance(default, bool):
        return str(not default).lower()
    if isinstance(default, (int, float)):
        return str(default + 1)
    raise AssertionError(f"no other value for {field.name}={default!r}")


def _changed_evaluation_options(family: str) -> list[str]:
    schema = hydra.utils.get_class(compose_train([f"model={family}"]).model._target_).config_schema
    defaults = schema()
    return [f"model.{f.name}={_other(f, getattr(defaults, f.name))}" for f in dataclasses.fields(schema)
            if f.name in evaluation_options(schema)]


@pytest.mark.parametrize("family", FAMILIES)
def test_no_evaluation_option_changes_what_training_learns(family, tmp_path):
    """The same seed with every evaluation option of the family at another value trains the same weights,
    validation included (the diffusion bound's timesteps, flow matching's likelihood ODE)."""
    changed = _changed_evaluation_options(family)
    weights = []
    for name, options in (("default", []), ("changed", changed)):
        cfg = compose_train([f"model={family}", "dataset=digits", *QUICK, "evaluate=false",
                             f"paths.output_dir={tmp_path / name}", *options])
        weights.append(run(cfg, tmp_path / name).model.state_dict())
    assert weights[0].keys() == weights[1].keys()
    differ = [k for k in weights[0] if not torch.equal(weights[0][k], weights[1][k])]
    assert not differ, f"{changed} changed {differ}"


def test_a_checkpoint_is_evaluated_under_the_configs_sampler(tmp_path, caplog):
    """Its record and NFE are the sampler's the config names; an option that shapes the model (timesteps)
    stays the checkpoint's, with a warning. A resumed run refuses another sampler, saying where it
    applies."""
    train_dir = tmp_path / "train"
    task(compose_train(["model=diffusion", *QUICK, "evaluate=false", f"paths.output_dir={train_dir}"]))
    ckpt = train_dir / "checkpoints" / "last.ckpt"
    caplog.set_level(logging.INFO, logger="genbench.train")
    out = tmp_path / "eval"
    task(compose_train(["model=diffusion", *QUICK, "train=false", f"ckpt_path={ckpt}",
                        f"paths.output_dir={out}", "model.sampler=dpmpp_2m", "model.sampling_steps=10",
                        "model.timesteps=500"]))
    record = read_record(out / "metrics.json")
    model = record["provenance"]["config"]["model"]
    assert record["status"] == "ok" and record["metrics"]["nfe"] == 10
    # The checkpoint's training, as its own run recorded it (seconds: up to the checkpoint's writing).
    training = read_record(train_dir / "metrics.json")["metrics"]
    for key in ("train_steps", "train_examples", "train_flops_per_example", "train_flops"):
        assert record["metrics"][key] == training[key], key
    assert 0 < record["metrics"]["train_seconds"] <= training["train_seconds"]
    assert model["_recursive_"] is False  # the config's instantiation keys are kept
    assert (model["sampler"], model["sampling_steps"], model["timesteps"]) == ("dpmpp_2m", 10, 1000)
    assert ("with the config's evaluation options: model.sampler='dpmpp_2m' (the checkpoint's: 'ddim'), "
            "model.sampling_steps=10 (the checkpoint's: 100)") in caplog.text
    assert ("its own hyperparameters, not the config's: model.timesteps=500 (the checkpoint's: 1000)"
            in caplog.text)
    # Resuming with them is refused (the run's quality curve would mix samplers), naming eval.py's way.
    resumed = tmp_path / "resumed"
    with pytest.raises(SystemExit):
        task(compose_train(["model=diffusion", *QUICK, f"ckpt_path={ckpt}", f"paths.output_dir={resumed}",
                            "model.sampler=dpmpp_2m"]))
    error = read_record(resumed / "metrics.json")["error"]
    assert error.endswith("; model.sampler: evaluation options, which eval.py takes from its config: "
                          "evaluate the resumed run's checkpoint with them"), error


def test_evaluation_options_that_do_not_fit_the_checkpoints_model_are_named_with_its_own(tmp_path):
    """eval.py with the README's ``model=diffusion`` on a model of T = 20 asked for the default 100 sampler
    steps and failed with the schema's bare "sampling_steps=100 must be <= timesteps=20"."""
    train_dir = tmp_path / "train"
    task(compose_train(["model=diffusion", *QUICK, "evaluate=false", f"paths.output_dir={train_dir}",
                        "model.timesteps=20", "model.sampling_steps=20"]))
    out = tmp_path / "eval"
    with pytest.raises(SystemExit):
        task(compose_train(["model=diffusion", *QUICK, "train=false", f"paths.output_dir={out}",
                            f"ckpt_path={train_dir / 'checkpoints' / 'last.ckpt'}"]))
    record = read_record(out / "metrics.json")
    assert record["status"] == "failed"
    assert ("the config's evaluation options do not fit the model it holds (sampling_steps=100 must be <= "
            "timesteps=20): model.sampling_steps=100 (the checkpoint's: 20); pass the checkpoint's"
            in record["error"]), record["error"]
