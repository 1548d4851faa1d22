"""Loading a trained checkpoint, the one way train.py's ``train=false`` and the evaluation-only scripts do.

Every run's checkpoints name the family and dataset they trained as (:class:`NamesTraining`); a run that
resumes or evaluates one as another is refused by name (:meth:`TrainedAs.check`).
:func:`load_checkpoint` reads the weights only (``weights_only=True``) and names a checkpoint another
genbench wrote. ``scripts/nfe_sweep.py`` and ``scripts/bench_likelihood_grid.py`` take train.py's overrides
of the training run (``ckpt_path=... model=... dataset=...``) and get from :func:`load_trained` the composed
config, the checkpoint's model on the GPU if there is one, and the dataset set up for testing.
"""

import errno
import logging
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from genbench.config import validate
from genbench.data.base import GenerativeDataModule
from genbench.errors import ConfigError, GenbenchError
from genbench.models.base import GenerativeModel
from genbench.results import dotted
from genbench.schema import ABSENT, evaluation_options

TRAINED_AS = "genbench_trained_as"  # a checkpoint's entry: the family and dataset its model trained as
OPTIONS = "(<run>/.hydra/overrides.yaml lists its options)"


def trainer_training_options(trainer: pl.Trainer) -> dict[str, Any]:
    """The trainer's options that change what a step learns, as Lightning took them: its precision (``32``
    read as ``32-true``), gradient clipping (the algorithm ``norm`` where none is named, its default; a
    family that clips by its own option reads the trainer's value and algorithm) and accumulation."""
    clip, algorithm = trainer.gradient_clip_val, trainer.gradient_clip_algorithm
    return {"precision": str(trainer.precision), "gradient_clip_val": None if clip is None else float(clip),
            "gradient_clip_algorithm": algorithm.value if algorithm is not None else "norm",
            "accumulate_grad_batches": int(trainer.accumulate_grad_batches)}


class NamesTraining(pl.Callback):
    """Writes into each checkpoint the family, dataset and seed its model trains as, and the options of the
    data and of the trainer it trains with."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict) -> None:
        dm = trainer.datamodule
        checkpoint[TRAINED_AS] = {"family": pl_module.family, "dataset": dm.name, "seed": self.seed,
                                  "dataset_options": dm.training_options(),
                                  "trainer_options": trainer_training_options(trainer)}


@dataclass(frozen=True)
class TrainedAs:
    """What a checkpoint's model trained as: its family and dataset (``None`` in checkpoints written before
    they were named), the data's shape and classes, and its options (the last three: its hyperparameters).
    Evaluating or resuming it as another family or on another dataset would fail on tensor shapes, or,
    where the shapes agree, record a model under a dataset it never trained on."""

    family: str | None
    dataset: str | None
    data_shape: tuple[int, ...] | None
    num_classes: int | None
    options: dict[str, Any] = field(default_factory=dict)  # the model's options (its other hyperparameters)
    training: dict[str, float] = field(default_factory=dict)  # its training's totals (:func:`_training`)
    # the options that chose its training's examples and batches, and its seed (checkpoints before
    # 2026-11-28: none)
    dataset_options: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    trainer_options: dict[str, Any] = field(default_factory=dict)  # :func:`trainer_training_options`

    def check(self, ckpt_path: str | Path, family: str, dm: GenerativeDataModule) -> None:
        """ConfigError naming the training run's ``model=`` and ``dataset=`` where this run asks for
        others."""
        holds = f"checkpoint {ckpt_path} holds model={self.family} trained on dataset={self.dataset}"
        if self.family is not None and self.family != family:
            raise ConfigError(f"{holds}, and this run asks for model={family}: pass the training run's "
                              f"model={self.family} dataset={self.dataset} {OPTIONS}")
        if self.dataset is not None and self.dataset != dm.name:
            raise ConfigError(f"{holds}, and this run asks for dataset={dm.name} (its record would name a "
                              f"dataset the model never trained on): pass the training run's "
                              f"dataset={self.dataset} {OPTIONS}")
        data = (tuple(dm.data_shape), dm.num_classes)
        if self.data_shape is not None and (self.data_shape, self.num_classes) != data:
            raise ConfigError(f"checkpoint {ckpt_path} holds a model of data shape {list(self.data_shape)} "
                              f"(classes: {self.num_classes}), and dataset={dm.name} has {list(data[0])} "
                              f"(classes: {data[1]}): pass the training run's model= and dataset= {OPTIONS}")

    def check_seed(self, ckpt_path: str | Path, seed: int, train: bool) -> None:
        """ConfigError where this run's seed is not the one the checkpoint's model trained with: its record
        would name that seed's run (a resumed run goes on with the checkpoint's random state), and a sweep
        of seeds over one checkpoint would show its evaluation's noise as the spread over seeds."""
        if self.seed is None or seed == self.seed:
            return
        noise = " (eval.seed=<n> draws other noise for the evaluation)" if not train else ""
        raise ConfigError(f"ckpt_path={ckpt_path} holds a model trained with seed={self.seed}, and this run "
                          f"would record it as seed={seed}'s: give seed={self.seed}{noise}, or train "
                          f"seed={seed} anew without ckpt_path")

    def differing(self, hparams: Mapping[str, Any], only: frozenset[str] | None = None) -> list[str]:
        """:func:`differing_options` of the config's ``hparams`` (those named in ``only``, where given)
        against the checkpoint's."""
        chosen = {k: v for k, v in hparams.items() if only is None or k in only}
        return differing_options(chosen, self.options)

    def check_resumable(self, ckpt_path: str | Path, hparams: Mapping[str, Any],
                        evaluation: frozenset[str] = frozenset(),
                        dataset_options: Mapping[str, Any] | None = None,
                        trainer_options: Mapping[str, Any] | None = None) -> None:
        """ConfigError naming the model options (``hparams``, the config's), the dataset's training options
        (:meth:`~genbench.data.base.GenerativeDataModule.training_options`) and the trainer's
        (:func:`trainer_training_options`) that differ from the checkpoint's: a resumed run goes on training
        the checkpoint's model, whose optimizer state (its learning rate among it) comes from the
        checkpoint, on the checkpoint's data from its place in an epoch (counted in batches), and its record
        states one config for all of its training (its precision, its quality curve one sampler). Options
        newer than the checkpoint are not compared; those of ``evaluation`` that differ are named as ones
        eval.py takes after the training."""
        differ = (self.differing(hparams)
                  + differing_options(dataset_options or {}, self.dataset_options, "dataset")
                  + differing_options(trainer_options or {}, self.trainer_options, "trainer"))
        if differ:
            later = self.differing(hparams, evaluation)
            hint = (f"; {', '.join(o.split('=')[0] for o in later)}: evaluation options, which eval.py takes "
                    "from its config: evaluate the resumed run's checkpoint with them") if later else ""
            raise ConfigError(f"ckpt_path={ckpt_path} resumes a model trained with other options than this "
                              f"run's: {', '.join(differ)}; a resumed run goes on with the checkpoint's "
                              f"model, optimizer and data: drop these overrides, or train anew without "
                              f"ckpt_path"
                              + hint)

    def check_budget(self, ckpt_path: str | Path, max_steps: int, max_epochs: int | None) -> None:
        """ConfigError where the checkpoint has trained past ``trainer.max_steps`` or ``trainer.max_epochs``:
        Lightning would train none, and the record, ``ok``, describe a model of more training than its
        config's. A checkpoint at the limit resumes to an evaluation (a sweep's job that stopped in it)."""
        limits = (("steps", "max_steps", max_steps), ("epochs", "max_epochs", max_epochs))
        for unit, key, limit in limits:
            done = self.training.get(f"train_{unit}")
            if limit not in (None, -1) and done is not None and done > limit:
                named = f" model={self.family} dataset={self.dataset}" if self.family and self.dataset else ""
                evaluate = f"python eval.py ckpt_path={ckpt_path}{named}"
                raise ConfigError(f"ckpt_path={ckpt_path} has trained {done} {unit}, past this run's "
                                  f"trainer.{key}={limit}, so resuming it would train none: give "
                                  f"trainer.{key} above {done} to train on, or evaluate it ({evaluate})")


def differing_options(config: Mapping[str, Any], trained: Mapping[str, Any],
                      group: str = "model") -> list[str]:
    """``<group>.<key>=<config's> (the checkpoint's: <value>)`` for each option of both that differs, nested
    ones by their dotted key (``model.optimizer.lr``), as a command line names them."""
    ours = dotted({key: value for key, value in config.items() if key in trained})
    theirs = dotted({key: value for key, value in trained.items() if key in config})
    pairs = {key: (ours.get(key, ABSENT), theirs.get(key, ABSENT)) for key in sorted(ours | theirs)}
    return [f"{group}.{key}={_shown(new)} (the checkpoint's: {_shown(old)})"
            for key, (new, old) in pairs.items() if new != old]


def _shown(value: Any) -> str:
    return "absent" if value is ABSENT else repr(value)


def read_trained_as(ckpt_path: str | Path) -> TrainedAs:
    """What the checkpoint trained as. ConfigError naming a checkpoint torch cannot read as tensors (cut
    short, not a checkpoint, or holding objects that unpickling would run as code). torch's own message
    suggests ``weights_only=False``, which is what must never be done with a file from outside."""
    try:
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        # an OSError is the file's (permissions, a disk), but for EINVAL: torch's zip reader seeking past the
        # end of some files cut short
        if isinstance(e, OSError) and e.errno != errno.EINVAL:
            raise ConfigError(f"ckpt_path={ckpt_path} cannot be opened ({e}); give a run's checkpoint "
                              "(<run>/checkpoints/last.ckpt)") from None
        detail = (str(e).strip().splitlines() or [""])[0].split(". ")[0][:200]  # its first sentence
        why = ("it holds objects other than tensors, which genbench does not unpickle (they could run code)"
               if "Weights only load failed" in str(e) else "it is cut short or not a checkpoint")
        raise ConfigError(f"ckpt_path={ckpt_path} cannot be read ({type(e).__name__}: {detail}): {why}; "
                          "give another (a run's checkpoints/last.ckpt) or train again") from None
    named = checkpoint.get(TRAINED_AS) or {}
    hparams = checkpoint.get("hyper_parameters") or {}
    shape = hparams.get("data_shape")
    options = {key: value for key, value in hparams.items() if key not in ("data_shape", "num_classes")}
    return TrainedAs(named.get("family"), named.get("dataset"), None if shape is None else tuple(shape),
                     hparams.get("num_classes"), options, _training(checkpoint),
                     named.get("dataset_options") or {}, named.get("seed"),
                     named.get("trainer_options") or {})


def _training(checkpoint: dict) -> dict[str, float]:
    """The totals of the training that wrote ``checkpoint``, as a training run records them: its optimizer
    steps and epochs, and the examples, seconds and FLOPs its callbacks counted up to the checkpoint's
    writing (where they did: checkpoints before a counter have none of its numbers)."""
    callbacks = checkpoint.get("callbacks") or {}
    counter, flops = callbacks.get("ExampleCounter") or {}, callbacks.get("TrainingFlops") or {}
    out: dict[str, float] = {}
    if isinstance(checkpoint.get("global_step"), int):
        out["train_steps"] = checkpoint["global_step"]
    # the epochs Lightning counts to stop at max_epochs: ``epoch`` lags by one in a checkpoint written at
    # an epoch's end
    epochs = (((checkpoint.get("loops") or {}).get("fit_loop") or {}).get("epoch_progress") or {})
    if isinstance(processed := (epochs.get("current") or {}).get("processed"), int):
        out["train_epochs"] = processed
    examples = counter.get("examples_all_processes", counter.get("examples"))  # one process's, before
    if examples is not None:
        out["train_examples"] = int(examples)
    if counter.get("train_seconds") is not None:
        out["train_seconds"] = float(counter["train_seconds"])
    if flops.get("per_example") is not None and examples is not None:
        out["train_flops_per_example"] = float(flops["per_example"])
        out["train_flops"] = float(flops["per_example"]) * int(examples)
    return out


def load_checkpoint(cls: type[GenerativeModel], ckpt_path: str | Path, device: torch.device,
                    dm: GenerativeDataModule | None = None,
                    options: Mapping[str, Any] | None = None) -> GenerativeModel:
    """The ``cls`` model of the checkpoint, built from its own hyperparameters but for the evaluation options
    of ``options`` (the config's: a sampler, its steps; :func:`genbench.schema.evaluation_options`), on
    ``device``. ConfigError when it cannot be read, was trained (given ``dm``) as another family or on another
    dataset (:meth:`TrainedAs.check`), or does not fit this version's family (other tensors, or an option
    the schema no longer has)."""
    trained_as = read_trained_as(ckpt_path)
    if dm is not None:
        trained_as.check(ckpt_path, cls.family, dm)
    evaluation = {k: v for k, v in (options or {}).items() if k in evaluation_options(cls.config_schema)}
    try:
        return cls.load_from_checkpoint(ckpt_path, map_location=device, weights_only=True, **evaluation)
    except ConfigError as e:  # a schema's check across options: a sampler's steps beyond the model's T
        differ = ", ".join(trained_as.differing(evaluation))
        raise ConfigError(f"ckpt_path={ckpt_path}: the config's evaluation options do not fit the model it "
                          f"holds ({e}): {differ}; pass the checkpoint's, or others that fit it {OPTIONS}"
                          ) from None
    except (RuntimeError, TypeError) as e:
        # torch's strict load_state_dict (other tensor names or shapes), or an option this version's schema
        # no longer has (a renamed one: the dataclass's "unexpected keyword argument")
        lines = str(e).splitlines()
        if "Error(s) in loading state_dict" in str(e):
            problem = lines[1].strip() if len(lines) > 1 else str(e)
        elif "unexpected keyword argument" in str(e):
            problem = f"its option {str(e).rsplit(' ', 1)[-1]} is not one of this version's"
        else:
            raise
        raise ConfigError(f"checkpoint {ckpt_path} does not fit this version's {cls.family} ({problem}): "
                          "it was saved by another genbench, or by another family than this run's model=; "
                          f"pass the training run's model= {OPTIONS}, or evaluate it at "
                          "the commit that wrote it (provenance.git_commit in its run's metrics.json), or "
                          "train it again") from None


@dataclass
class Trained:
    cfg: DictConfig
    dm: GenerativeDataModule
    model: GenerativeModel
    device: torch.device
    ckpt: Path


def load_trained(config_dir: Path, overrides: list[str], own: frozenset[str] = frozenset()) -> Trained:
    """train.py's config composed with ``overrides`` and checked as a run's is; its ``ckpt_path`` loaded
    in eval mode, with the checkpoint's own values of the model options in ``own`` (those the script sets
    itself: a sweep of samplers and their steps); its dataset set up for testing. ConfigError names a
    missing or unfitting checkpoint."""
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    validate(cfg)  # a ckpt_path that is no file is refused there
    if not cfg.ckpt_path:
        raise ConfigError("no checkpoint: pass ckpt_path=<run>/checkpoints/last.ckpt")
    ckpt = Path(cfg.ckpt_path)
    if cfg.get("torch_threads"):
        torch.set_num_threads(cfg.torch_threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dm: GenerativeDataModule = hydra.utils.instantiate(cfg.dataset, _convert_="all")
    dm.setup("test")
    options = {k: v for k, v in OmegaConf.to_container(cfg.model, resolve=True).items() if k not in own}
    model = load_checkpoint(hydra.utils.get_class(cfg.model._target_), ckpt, device, dm, options).eval()
    return Trained(cfg, dm, model, device, ckpt)


@contextmanager
def one_line_errors() -> Iterator[None]:
    """A script's own errors (a ConfigError, a DatasetError: they name the problem and the fix) logged in
    one line, exiting 2 as a bad command line does, instead of a traceback; a Ctrl-C in one line too,
    exiting 130 as the shell's convention says."""
    try:
        yield
    except GenbenchError as e:
        logging.error("%s", e)
        sys.exit(2)
    except KeyboardInterrupt:
        logging.error("interrupted (Ctrl-C) before the script finished: it wrote nothing more")
        sys.exit(130)


def run_script(main: Callable[[], int]) -> None:
    """Exits with an evaluation-only script's ``main()``; genbench's errors (no checkpoint, one that does
    not fit, a missing data file) as :func:`one_line_errors` says."""
    with one_line_errors():
        sys.exit(main())
