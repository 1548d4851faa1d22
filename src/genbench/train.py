"""One run: validate the config, seed, build data/model/trainer/loggers, train, evaluate, write the record.

:func:`task` is what ``train.py`` calls. Every way a run ends leaves a true ``metrics.json``: ``ok``;
``failed`` or ``diverged`` (a NaN loss, non-finite weights or metrics) with the reason, recorded instead of
raised in a multirun so one broken job never kills a sweep, and exiting non-zero in a single run;
``interrupted`` (SIGINT, SIGTERM) naming the last checkpoint, exiting 128 + the signal number.
"""

import contextlib
import copy
import difflib
import functools
import logging
import math
import os
import re
import sys
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities.exceptions import MisconfigurationException
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from genbench.callbacks import (
    DivergenceGuard,
    LoggedStepResumes,
    RandomStateResumes,
    ValidationKeepsRandomness,
)
from genbench.config import RunSchema, command_line_keys, presets_for_other_models, validate
from genbench.data.base import LOADER_OPTIONS, GenerativeDataModule, RequiredSplits
from genbench.errors import ConfigError, DivergedError, GenbenchError
from genbench.evaluation import Evaluation, evaluate
from genbench.evaluation.compute import TrainingFlops, training_flops
from genbench.evaluation.cost import ExampleCounter, peak_memory, reset_peak_memory
from genbench.evaluation.curves import QualityCurve
from genbench.evaluation.device import device_name, evaluation_device
from genbench.evaluation.stage import needed_splits
from genbench.extras import announce, lightning_lines_to_the_run_log, quiet_known_noise
from genbench.interrupts import (
    RankFailed,
    dead_training_processes,
    describe,
    exit_code,
    ignore_signals,
    record_if_stuck,
    recording,
    signals_raise,
    watch_training_processes,
)
from genbench.loggers import finish
from genbench.models.base import GenerativeModel
from genbench.models.registry import families
from genbench.performance import (
    Performance,
    PerformanceConfig,
    channels_last_acts,
    resolve,
    tf32_acts,
    tf32_mode,
)
from genbench.progress import StepProgress, interactive
from genbench.results import RunDirTaken, claim_run_dir, provenance, write_record
from genbench.runmode import is_multirun, kept_environment
from genbench.schema import evaluation_options, typed_option
from genbench.stages import (
    EVALUATION,
    MACHINE,
    TRAINING,
    TrainingStarted,
    current_stage,
    dead_loader_worker,
    failed_in,
    stage,
)
from genbench.sweep_config import resume_command
from genbench.sweeps import ddp_processes_run_this_job, resuming_sweep, settle_earlier_attempt
from genbench.trained_run import (
    NamesTraining,
    differing_options,
    load_checkpoint,
    read_trained_as,
    trainer_training_options,
)

log = logging.getLogger(__name__)
UNUSED_PARAMETERS_DDP = "ddp_find_unused_parameters_true"  # Lightning's registered name
# How another DDP rank's log says its run failed (_record_failure), for rank zero's record
RANK_ERROR = re.compile(r"run (\w+) on rank \d+: (.*?) \(rank zero records the run in ", re.DOTALL)


def _output_dir(cfg: DictConfig) -> Path:
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _instantiate_all(node: DictConfig | None) -> list[Any]:
    """Every entry of a group that holds several named objects (``logger``, ``callbacks``)."""
    return [hydra.utils.instantiate(c) for c in (node or {}).values() if c is not None]




def _summary(family: str, dataset: str, metrics: dict) -> str:
    parts = [f"{family} on {dataset}"]
    if "nll_bpd" in metrics:
        parts.append(f"test NLL {metrics['nll_nats']:.3f} nats = {metrics['nll_bpd']:.4f} bits/dim "
                     f"({metrics['likelihood_kind']})")
    if "nll_iwae_bpd" in metrics:
        parts.append(f"IWAE {metrics['nll_iwae_bpd']:.4f} bits/dim")
    parts.append(f"sampling {metrics['sample_ms_per_sample']:.4f} ms/sample "
                 f"(batch {metrics['sample_batch_size']}, NFE {metrics['nfe']})")
    for name in sorted(metrics):
        if name == "fid_inception" or (name.startswith("fd_") and name != "fd_data_space"):
            parts.append(f"{name} {metrics[name]:.4g}")
    if "train_seconds" in metrics:
        parts.append(f"trained {metrics['train_seconds']:.1f} s")
    parts.append(f"{metrics['num_parameters']:,} parameters")
    return " | ".join(parts)


def _choice(cfg: DictConfig, group: str) -> str:
    """The option chosen for a config group (``digits``), falling back to its class name."""
    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get(group)
        if choice:
            return str(choice)
    return str(OmegaConf.select(cfg, f"{group}._target_", default="?")).rsplit(".", 1)[-1]


def apply_budget(cfg: DictConfig) -> None:
    """``budget_steps.<family>`` becomes ``trainer.max_steps`` for that family, before the trainer is built
    (the run's record takes the config as it ran, so it and the matrix show that budget); a family not
    named keeps ``trainer.max_steps``. A name that is no family is a config error."""
    budgets = cfg.get("budget_steps") or {}
    if not budgets:
        return
    known = families()
    unknown = sorted(set(budgets) - set(known))
    if unknown:
        raise ConfigError(f"budget_steps names {unknown}, which are no families; the families are "
                          f"{sorted(known)}")
    family = getattr(hydra.utils.get_class(cfg.model._target_), "family", None)  # validate() checked it
    if family in budgets:
        cfg.trainer.max_steps = int(budgets[family])


def require_a_bound(trainer: DictConfig) -> None:
    """With ``max_steps=-1`` the training is bounded by ``max_epochs``, ``max_time`` or ``fast_dev_run``;
    where none is set Lightning would silently train 1,000 epochs (``max_epochs`` unset) or forever (-1)."""
    if trainer.get("max_steps", -1) != -1 or trainer.get("max_time") or trainer.get("fast_dev_run"):
        return
    epochs = trainer.get("max_epochs")
    if epochs in (None, -1):
        what = "unset (Lightning would take 1,000 epochs)" if epochs is None else "-1 (no end)"
        raise ConfigError(f"trainer.max_steps=-1 trains until trainer.max_epochs, which is {what}: give "
                          "trainer.max_steps=<optimizer steps> or trainer.max_epochs=<epochs>")


def instantiate(node: DictConfig, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that lets genbench's own errors (a ConfigError, a DatasetError) through
    as they are, not wrapped in Hydra's InstantiationException: they name the problem and the fix."""
    try:
        return hydra.utils.instantiate(node, **kwargs, _convert_="all")
    except InstantiationException as e:
        if isinstance(e.__cause__, GenbenchError):
            raise e.__cause__ from None
        raise


def _build_trainer(node: DictConfig, **kwargs: Any) -> pl.Trainer:
    """Lightning's Trainer from ``trainer``; its refusal of its options on this machine (``trainer=gpu``
    where there is no GPU, more devices than there are, an unknown strategy) is a ConfigError that names
    the options and what the machine has."""
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as e:
        if not isinstance(e.__cause__, MisconfigurationException | ValueError):
            raise
        asked = ", ".join(f"trainer.{key}={node.get(key)}" for key in ("accelerator", "devices", "strategy")
                          if key in node)
        mps = " and MPS" if torch.backends.mps.is_available() else ""
        gpus = torch.cuda.device_count()
        raise ConfigError(f"Lightning refuses {asked} here: {e.__cause__} This machine has {gpus} CUDA "
                          f"GPU(s){mps} besides its CPU: use trainer=default (the accelerator there is), "
                          "trainer=cpu, or devices and a strategy it has") from None


def _ddp_for(model: GenerativeModel, trainer: DictConfig) -> dict[str, str]:
    """``trainer.strategy=ddp`` for a model some of whose parameters take no gradient in a step (a GAN's):
    Lightning's DDP that looks for them each step, where plain DDP stopped the run at its first step
    ("parameters that were not used in producing the loss")."""
    if not (model.unused_parameters_per_step and trainer.get("strategy") == "ddp"):
        return {}
    log.info("%s under DDP: each step leaves some parameters without a gradient, so DDP looks for them "
             "(trainer.strategy=%s)", model.family, UNUSED_PARAMETERS_DDP)
    return {"strategy": UNUSED_PARAMETERS_DDP}


@dataclass
class RunResult:
    metrics: dict[str, Any]
    model: GenerativeModel
    dm: GenerativeDataModule
    evaluation: Evaluation
    is_global_zero: bool = True


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """``n`` intra-op threads for the run and its DDP processes (Lightning's launcher sets a count of its
    own unless OMP_NUM_THREADS is set); as they were once the run ends, for a sweep's next job in this
    process. None: torch's default."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with kept_environment("OMP_NUM_THREADS"):
            os.environ["OMP_NUM_THREADS"] = str(n)
            yield
    finally:
        torch.set_num_threads(before)


def run(cfg: DictConfig, out_dir: Path, callbacks: Sequence[pl.Callback] = (),
        trained: dict[str, Any] | None = None) -> RunResult:
    """Train (unless ``train=false``) and evaluate one model; ``callbacks`` join the trainer's own (a
    benchmark's timer, say). ``trained`` receives the training's metrics as soon as training ends, so a
    failure or an interrupt in the evaluation still has them to record."""
    quiet_known_noise()
    lightning_lines_to_the_run_log()
    checked = validate(cfg)
    if warning := presets_for_other_models():
        log.warning("%s", warning)
    with torch_threads(cfg.get("torch_threads")):
        return _run(cfg, checked, out_dir, callbacks, {} if trained is None else trained)


def _run(cfg: DictConfig, checked: dict[str, Any], out_dir: Path, callbacks: Sequence[pl.Callback],
         trained: dict[str, Any]) -> RunResult:
    apply_budget(cfg)
    if cfg.train:
        require_a_bound(cfg.trainer)
    eval_cfg = checked["eval"]
    out_dir.mkdir(parents=True, exist_ok=True)
    since_reset = reset_peak_memory()
    # to resume or to evaluate: torch's error on a bad file suggests unpickling it as code
    trained_as = read_trained_as(cfg.ckpt_path) if cfg.ckpt_path else None
    pl.seed_everything(cfg.seed, workers=True)
    dm: GenerativeDataModule = instantiate(cfg.dataset)
    model: GenerativeModel = instantiate(cfg.model, data_shape=dm.data_shape, num_classes=dm.num_classes)
    if trained_as is not None:
        trained_as.check(cfg.ckpt_path, model.family, dm)
        trained_as.check_seed(cfg.ckpt_path, checked["run"].seed, cfg.train)
        if not cfg.train:  # a resumed run is checked once its trainer has read the trainer's options
            if changed := trained_as.differing(model.hparams, evaluation_options(model.config_schema)):
                log.info("evaluating %s with the config's evaluation options: %s", cfg.ckpt_path,
                         ", ".join(changed))
            chosen = {k: v for k, v in dm.training_options().items() if k not in LOADER_OPTIONS}  # which data
            if other := differing_options(chosen, trained_as.dataset_options, "dataset"):
                log.warning("evaluating %s on data chosen otherwise than its training's: %s; the record "
                            "states this run's dataset options", cfg.ckpt_path, ", ".join(other))
    # the splits the run reads hold examples: checked before training, not after it
    training = ("train", "train=true", "give it some (dataset.train_slice on files) or evaluate a checkpoint "
                "(train=false)")
    splits = RequiredSplits(([training] if cfg.train else [])
                            + (needed_splits(eval_cfg, model, dm) if cfg.evaluate else []))
    checkpoints = ModelCheckpoint(dirpath=out_dir / "checkpoints", save_last=True)
    counter = ExampleCounter()
    performance = Performance(checked["performance"])
    started = TrainingStarted()
    callbacks = [splits, checkpoints, counter, TrainingFlops(), DivergenceGuard(),
                 ValidationKeepsRandomness(), RandomStateResumes(), LoggedStepResumes(),
                 NamesTraining(checked["run"].seed), performance, started,
                 *_instantiate_all(cfg.get("callbacks")), *callbacks]
    # One bar over max_steps with an ETA on a terminal (log lines elsewhere), not Lightning's per epoch.
    curve = next((c for c in callbacks if isinstance(c, QualityCurve)), None)
    callbacks.append(StepProgress(bar=cfg.trainer.get("enable_progress_bar", True) and interactive(),
                                  watching=curve.time_spent_and_to_come if curve else None))
    loggers = _instantiate_all(cfg.get("logger"))
    trainer = _build_trainer(cfg.trainer, logger=loggers or False, callbacks=callbacks,
                             enable_progress_bar=False, **_ddp_for(model, cfg.trainer))
    if trained_as is not None and cfg.train:  # before a logger starts its run
        trained_as.check_resumable(cfg.ckpt_path, model.hparams, evaluation_options(model.config_schema),
                                   dm.training_options(), trainer_training_options(trainer))
        trained_as.check_budget(cfg.ckpt_path, cfg.trainer.max_steps, cfg.trainer.get("max_epochs"))
    for lg in trainer.loggers:  # fields a dashboard groups and filters runs by
        lg.log_hyperparams({"family": model.family, "dataset": dm.name, "seed": cfg.seed,
                            "tags": list(cfg.get("tags") or []),
                            "config": OmegaConf.to_container(cfg, resolve=True)})
    try:
        evaluation_device(eval_cfg.device, trainer.strategy.root_device)  # a bad one fails before training
        if not cfg.train:  # a fit checks them in its setup, once the data is prepared
            splits.check(dm)
        # Evaluating a checkpoint: its training's totals, as the training run recorded them.
        metrics = (_train(cfg, trainer, model, dm, counter, started, since_reset) if cfg.train
                   else dict(trained_as.training))
        if cfg.train:  # what ran: the speed switches taken and the precision
            metrics["train_speedups"] = ",".join(performance.taken()) or "none"
            metrics["train_precision"] = str(trainer.precision)
        trained.update(metrics)
        with stage(EVALUATION):  # and what comes before it: the checkpoint, the device
            return _evaluate(cfg, trainer, model, dm, eval_cfg, checked["performance"], out_dir, metrics,
                             since_reset)
    finally:
        for lg in trainer.loggers:
            finish(lg)


def _train(cfg: DictConfig, trainer: pl.Trainer, model: GenerativeModel, dm: GenerativeDataModule,
           counter: ExampleCounter, started: TrainingStarted, since_reset: bool) -> dict[str, Any]:
    """Fit, check the weights, and return the training's metrics; a failure once Lightning's setup is done
    is marked as one of training."""
    counter.start()
    with stage(TRAINING, lambda: started.started):
        trainer.fit(model, datamodule=dm, ckpt_path=cfg.ckpt_path, weights_only=True)
    with stage(TRAINING):  # also where fit had nothing left to train (a resumed run at its budget)
        # Totals over the model's whole training: a resumed run adds the time and examples of its
        # checkpoint's history (carried in the checkpoint by the counter).
        metrics: dict[str, Any] = {"train_seconds": counter.seconds}
        metrics["train_steps"] = trainer.global_step
        metrics["train_epochs"] = trainer.current_epoch
        metrics["train_examples"] = counter.examples
        metrics["train_examples_per_second"] = metrics["train_examples"] / metrics["train_seconds"]
        metrics.update(training_flops(trainer, metrics["train_examples"]))
        metrics["train_processes"] = trainer.world_size
        metrics["train_device"] = str(trainer.strategy.root_device)  # DDP: rank zero's
        metrics["train_device_name"] = device_name(trainer.strategy.root_device)
        metrics["train_torch_threads"] = torch.get_num_threads()  # per process: they matter on a CPU
        # The training device's own peak: the record's peak_memory_mb is the evaluation device's, another
        # one where eval.device says so.
        peak = peak_memory(trainer.strategy.root_device, since_reset)
        metrics.update({f"train_{key}": value for key, value in peak.items()})
        _check_finite_weights(model, "after training")
    return metrics


def _evaluate(cfg: DictConfig, trainer: pl.Trainer, model: GenerativeModel, dm: GenerativeDataModule,
              eval_cfg: Any, performance_cfg: PerformanceConfig, out_dir: Path, metrics: dict[str, Any],
              since_reset: bool) -> RunResult:
    """Evaluate the trained model (or ``cfg.ckpt_path``'s) where it trained, on rank zero only."""
    evaluation = Evaluation()
    device = evaluation_device(eval_cfg.device, trainer.strategy.root_device)
    if not cfg.train:  # the config check made sure there is a checkpoint
        model = _load_checkpoint(model, cfg.ckpt_path, device)
        _check_finite_weights(model, f"in checkpoint {cfg.ckpt_path}")
    if not trainer.is_global_zero:  # DDP: the other processes only train; rank zero evaluates once
        return RunResult(metrics, model, dm, evaluation, is_global_zero=False)
    # Where the model trained (DDP: rank zero's own device): Lightning's teardown has moved it to the CPU.
    # In the layout the switch gives on that device, whichever script evaluates: a model that trained in
    # NHWC and the same weights loaded by eval.py then sample with the same kernels.
    channels_last = channels_last_acts(performance_cfg.channels_last, device, model)
    model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    if cfg.evaluate:  # in the run's float32 numerics, whichever script evaluates
        tf32 = resolve(performance_cfg.tf32, device)
        with tf32_mode(tf32):
            evaluation = evaluate(model, dm, eval_cfg, out_dir)
        metrics.update(evaluation.metrics)
        metrics["eval_tf32"] = tf32_acts(performance_cfg.tf32, device)
        metrics["eval_channels_last"] = channels_last
    metrics.update(peak_memory(model.device, since_reset))  # after evaluation: its sampling counts too
    for lg in trainer.loggers:
        lg.log_metrics({f"test/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))},
                       step=trainer.global_step)
        if cfg.evaluate:  # each metric's provenance, and why any metric is missing
            lg.log_hyperparams({"metric_provenance": evaluation.provenance,
                                "unavailable_metrics": evaluation.unavailable})
        lg.save()
    return RunResult(metrics, model, dm, evaluation)


def _load_checkpoint(model: GenerativeModel, ckpt_path: str, device: torch.device) -> GenerativeModel:
    """The checkpoint's model on ``device``, built from its own hyperparameters but for the config's
    evaluation options (a sampler, its steps); the config's other options that differ are warned about
    (they do not apply to a trained model)."""
    loaded = load_checkpoint(type(model), ckpt_path, device, options=model.hparams)
    evaluation = evaluation_options(model.config_schema)
    # An option the checkpoint predates has the schema's default in the loaded model, not None.
    kept = {k: loaded.hparams.get(k, getattr(loaded.hp, k, None)) for k in model.hparams
            if k not in evaluation}
    differ = differing_options(model.hparams, kept)
    if differ:
        log.warning("evaluating %s with its own hyperparameters, not the config's: %s", ckpt_path,
                    ", ".join(differ))
    return loaded


def _check_finite_weights(model: GenerativeModel, where: str) -> None:
    """DivergedError naming the parameters that hold NaN or inf: such a model's metrics mean nothing."""
    bad = [f"{name} ({int((~p.isfinite()).sum())} of {p.numel()} values)"
           for name, p in model.named_parameters() if not bool(p.isfinite().all())]
    if bad:
        raise DivergedError(f"the model's weights are not finite {where}: {', '.join(bad[:5])}"
                            f"{' and more' if len(bad) > 5 else ''}; training diverged (lower "
                            "model.optimizer.lr)")


def _as_it_runs(cfg: DictConfig) -> dict:
    """The config as the run's record will hold it (its family's budget applied); as given where that
    fails (the run itself will say why)."""
    config = copy.deepcopy(cfg)
    with contextlib.suppress(Exception):
        apply_budget(config)
    return OmegaConf.to_container(config, resolve=False)


def _evaluated_config(config: dict, model: GenerativeModel) -> dict:
    """The run's config with ``model`` replaced by the evaluated checkpoint's options (``train=false``; an
    option newer than the checkpoint at its default), so the record describes the model that was measured."""
    instantiation = {k: v for k, v in config["model"].items() if k.startswith("_")}  # _target_, _recursive_
    return {**config, "model": {**instantiation, **model.hp.to_dict()}}


def _last_checkpoint(cfg: DictConfig, out_dir: Path) -> str | None:
    """The checkpoint of the model a record describes: the evaluated one, or this run's last, or (a resumed
    run stopped before it wrote one) the one it resumed from."""
    if not cfg.get("train", True):
        return cfg.get("ckpt_path")
    last = out_dir / "checkpoints" / "last.ckpt"
    return str(last) if last.is_file() else cfg.get("ckpt_path")


def _recorded_seed(cfg: DictConfig) -> int | None:
    """The seed as the config check reads it (``seed='3'`` is 3); None for one it refuses as no integer
    (``seed=abc``): that run fails on it, by name, and must still leave its record."""
    try:
        return typed_option(RunSchema, cfg, "seed")
    except ConfigError:
        return None


def _seed_of_the_evaluated_checkpoint(cfg: DictConfig) -> None:
    """``train=false`` without ``seed=`` on its command line evaluates under the seed the checkpoint trained
    with, as it takes the checkpoint's model options: a seed sweep's job is evaluated as that seed's run
    without the seed retyped. A seed given is checked against the checkpoint's (``TrainedAs.check_seed``)."""
    if not HydraConfig.initialized() or "seed" in command_line_keys():
        return
    try:
        if typed_option(RunSchema, cfg, "train") or not cfg.get("ckpt_path"):
            return
        seed = read_trained_as(cfg.ckpt_path).seed
    except GenbenchError:  # the config check names it, into the run's record
        return
    if seed is not None and seed != _recorded_seed(cfg):
        log.info("evaluating %s under the seed it trained with: seed=%d", cfg.ckpt_path, seed)
        cfg.seed = seed


def task(cfg: DictConfig) -> dict:
    """Run and always leave a true ``metrics.json``: failures and interrupts are recorded, not lost."""
    started = datetime.now()
    out_dir = _output_dir(cfg)
    _seed_of_the_evaluated_checkpoint(cfg)
    common = dict(family=_choice(cfg, "model"), dataset=_choice(cfg, "dataset"), seed=_recorded_seed(cfg))
    prov = provenance(OmegaConf.to_container(cfg, resolve=False), common["seed"], started)
    # The directory is this run's alone (DDP's other ranks share rank zero's).
    settle = (functools.partial(settle_earlier_attempt, cfg, out_dir, _as_it_runs(cfg))
              if resuming_sweep(cfg) else None)
    claim = claim_run_dir(out_dir, settle) if rank_zero_only.rank == 0 else contextlib.nullcontext()
    trained: dict[str, Any] = {}  # finished work a failure in the evaluation must not lose
    watch_training_processes()  # DDP: a rank that dies ends the run with a record
    record_if_stuck(lambda status, error: _record_stuck(cfg, out_dir, status, error, common, prov, trained))
    try:  # the watcher's way to record belongs to this run only
        try:
            with claim as kept, signals_raise():
                if kept is not None:  # a resumed sweep's job that had finished
                    return kept
                announce(cfg, out_dir)  # config_tree.log: after the claim, never over another run's
                try:
                    with ddp_processes_run_this_job(cfg):
                        result = run(cfg, out_dir, trained=trained)
                    if not result.is_global_zero:
                        return {"status": "ok", "rank": rank_zero_only.rank}
                    with stage(EVALUATION):  # its last step: the record
                        record = _record_result(cfg, out_dir, result, common, prov)
                except BaseException as e:  # interrupts too (signals_raise; Lightning's own SystemExit)
                    return _record_failure(cfg, out_dir, e, common, prov, trained)
        except RunDirTaken as e:  # refused: whatever record is there belongs to another run
            log.error("%s", e)
            if is_multirun():
                return {"status": "failed"}
            sys.exit(1)
        if record["status"] != "ok" and not is_multirun():
            sys.exit(1)
        return record
    finally:
        record_if_stuck(None)


def _record_result(cfg: DictConfig, out_dir: Path, result: RunResult, common: dict, prov: dict) -> dict:
    """Write the record of a run that finished: ``ok``, or ``diverged`` naming the metrics that are NaN or
    inf (the others are kept)."""
    ignore_signals()  # the run is done: a late Ctrl-C must not cut its record short
    common.update(family=result.model.family, dataset=result.dm.name)
    prov["config"] = OmegaConf.to_container(cfg, resolve=False)  # as it ran: with its family's budget
    if not cfg.train:
        prov["config"] = _evaluated_config(prov["config"], result.model)
    non_finite = ", ".join(f"{k}={v}" for k, v in result.metrics.items()
                           if isinstance(v, float) and not math.isfinite(v))
    error = None
    if non_finite:
        error = (f"DivergedError: metrics {non_finite} are not finite: the model's samples or likelihoods "
                 "are NaN or inf")
    path = out_dir / "metrics.json"
    with recording():
        record = write_record(path, status="diverged" if error else "ok", metrics=result.metrics,
                              provenance=prov, unavailable=result.evaluation.unavailable,
                              metric_provenance=result.evaluation.provenance, error=error,
                              capabilities=result.model.capabilities(),
                              checkpoint=_last_checkpoint(cfg, out_dir), **common)
    if error:
        log.error("run diverged: %s (recorded in %s)", error, path)
        return record
    if cfg.evaluate:
        log.info("%s", _summary(common["family"], common["dataset"], result.metrics))
    log.info("wrote %s", path)
    return record


def _record_failure(cfg: DictConfig, out_dir: Path, e: BaseException, common: dict, prov: dict,
                    trained: dict[str, Any]) -> dict:
    """Record a run that raised (``failed``/``diverged``) or was interrupted, with the metrics of a training
    that finished, then end it as it must end: interrupts exit 128 + signal; failures return their status
    in a multirun and exit non-zero alone."""
    ignore_signals()  # a signal now must not cut the record short
    interrupted = not isinstance(e, Exception | RankFailed)
    status = "interrupted" if interrupted else "diverged" if isinstance(e, DivergedError) else "failed"
    checkpoint = _last_checkpoint(cfg, out_dir)
    error = f"{type(e).__name__}: {e}"
    if rank_zero_only.rank == 0 and not interrupted:  # DDP: a rank that died is the cause, not the socket
        error += _dead_ranks_note(out_dir, named=isinstance(e, RankFailed))  # RankFailed names them
    if dead_loader_worker(e):
        error += (f"; a process loading the data died (killed by the kernel when memory runs out, most "
                  f"often): give the run more memory or fewer loader processes (dataset.num_workers="
                  f"{cfg.dataset.get('num_workers', 0)})")
    where = failed_in(e)
    if interrupted or where == MACHINE:  # the family's training can go on where the machine stopped it
        error += _resume_note(checkpoint)
    if rank_zero_only.rank == 0:
        with recording():
            _write_unfinished(cfg, out_dir, status, error, where, checkpoint, common, prov, trained)
    else:
        log.error("run %s on rank %d: %s (rank zero records the run in %s)", status, rank_zero_only.rank,
                  error, out_dir / "metrics.json")  # read back by RANK_ERROR
    if interrupted:
        sys.exit(exit_code(e))
    if is_multirun():
        log.debug(traceback.format_exc())
        return {"status": status}
    if isinstance(e, GenbenchError | RankFailed):
        sys.exit(1)
    raise e


def _record_stuck(cfg: DictConfig, out_dir: Path, status: str, error: str, common: dict, prov: dict,
                  trained: dict[str, Any]) -> None:
    """The record of a DDP run whose rank zero did not answer when another rank died (stuck in the
    processes' rendezvous or a collective), written from the watcher's thread before it kills rank zero;
    with what the dead ranks' logs say, the stage the run was in and the training that finished, as
    :func:`_record_failure`. Only the run's rank zero records (each node's first process has a watcher)."""
    if rank_zero_only.rank != 0:
        return
    checkpoint = _last_checkpoint(cfg, out_dir)
    error += _dead_ranks_note(out_dir, named=True)
    if status == "interrupted":
        error += _resume_note(checkpoint)
    _write_unfinished(cfg, out_dir, status, error, current_stage(), checkpoint, common, prov, trained)


def _resume_note(checkpoint: str | None) -> str:
    """What the error of a run that was interrupted, or that the machine stopped, adds: the checkpoint to
    resume from, or that there is none; in a sweep, the command that finishes it (this job going on from
    that checkpoint)."""
    note = (f"; the last checkpoint is kept: resume with ckpt_path={checkpoint}" if checkpoint
            else "; no checkpoint had been written yet")
    if is_multirun() and (command := resume_command(Path(HydraConfig.get().sweep.dir))):
        note += f"; finish the sweep with: {command}"
    return note


def _write_unfinished(cfg: DictConfig, out_dir: Path, status: str, error: str, failed_stage: str,
                      checkpoint: str | None, common: dict, prov: dict, trained: dict[str, Any]) -> None:
    """Write the record of a run that did not finish (``failed``, ``diverged``, ``interrupted``): the
    config as it ran (with its family's budget), the stage it failed in, the metrics of a training that
    finished and its last checkpoint."""
    provenance = {**prov, "config": OmegaConf.to_container(cfg, resolve=False), "failed_in": failed_stage}
    path = out_dir / "metrics.json"
    write_record(path, status=status, metrics=dict(trained), provenance=provenance, error=error,
                 checkpoint=checkpoint, **common)
    log.error("run %s: %s (recorded in %s)", status, error, path)


def _dead_ranks_note(out_dir: Path, named: bool) -> str:
    """Under DDP, the other ranks' processes that exited with an error (not listed again where the error has
    ``named`` them, as the watcher's RankFailed does), each with the error its own log (Hydra's
    ``train_ddp_process_<rank>.log``) says it failed with: rank zero itself only saw a closed connection.
    Empty for a single process."""
    dead = dead_training_processes(wait=0.0 if named else 5.0)
    notes = [describe(dead)] if dead and not named else []
    for rank, _, _ in dead:
        try:
            said = RANK_ERROR.findall((out_dir / f"train_ddp_process_{rank}.log").read_text(errors="replace"))
        except OSError:  # no log (Hydra's logging off), or unreadable: the exit code says what is known
            said = []
        if said:
            notes.append(f"local rank {rank}'s log says: {said[-1][0]}: {said[-1][1]}")
    return "".join(f"; {note}" for note in notes)


def objective(record: dict, metric: str | None) -> float | dict | None:
    """What the sweeper optimizes: ``record``'s ``metric``, or the record itself. None where the run did not
    finish ``ok`` with a finite value: Optuna's sweeper marks such a trial failed and goes on (a NaN made
    the whole search stop at the first failed trial)."""
    if not metric:
        return record
    metrics = record.get("metrics", {})
    if record.get("status") == "ok" and metric not in metrics:  # a misspelt name failed every trial unsaid
        near = difflib.get_close_matches(metric, list(metrics), n=3)
        hint = f" (did you mean {' or '.join(near)}?)" if near else ""
        log.error("optimized_metric=%s is not in this run's metrics.json%s: the sweeper gets no value",
                  metric, hint)
    value = metrics.get(metric)
    finite = type(value) in (int, float) and math.isfinite(value)
    return float(value) if record.get("status") == "ok" and finite else None
