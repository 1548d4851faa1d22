"""Every family at its CIFAR-10 config on this machine's accelerator (or CPU): training steps/s through
genbench and through a hand-written loop of the same model and batches, sampling ms/sample at one common
batch size, the evaluation stage's wall time for N generated images, and peak GPU memory.

    python scripts/bench_gpu.py                          # GPU sizes: 100 timed steps, 10,000 eval samples
    python scripts/bench_gpu.py --small --families vae   # CPU smoke sizes (the test suite runs this)

The data are synthetic CIFAR-format batches (random images; no download here) and the Inception network
has random weights: timings are real, quality numbers are not. Results: a table on stdout and
``bench_gpu.json`` in ``--out``; every number names the device and the host threads.
"""

import argparse
import contextlib
import gc
import json
import logging
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from genbench.config import validate  # noqa: E402
from genbench.data.formats import write_cifar_batch  # noqa: E402
from genbench.evaluation import evaluate  # noqa: E402
from genbench.evaluation.cost import peak_memory, reset_peak_memory  # noqa: E402
from genbench.evaluation.device import device_name  # noqa: E402
from genbench.evaluation.inception import save_random_weights  # noqa: E402
from genbench.evaluation.speed import sampling_speed, synchronize  # noqa: E402
from genbench.models.compiled import compile_for_training  # noqa: E402
from genbench.performance import Performance, tf32_mode  # noqa: E402
from genbench.train import run  # noqa: E402

EXPERIMENTS = {"vae": ["model=vae", "dataset=cifar10", "dataset.batch_size=128"]}  # no GPU preset of its own


def family_overrides(family: str) -> list[str]:
    return EXPERIMENTS.get(family, [f"experiment={family}_cifar10"])


def training_overrides(family: str, data_root: Path, out_dir: Path, accelerator: str) -> list[str]:
    """A family's CIFAR-10 config trained on synthetic data in ``data_root`` as the benchmarks time it: one
    device, no logger, training callbacks or validation, data in the main process, outputs in ``out_dir``."""
    return [*family_overrides(family), f"dataset.root={data_root}", "dataset.num_workers=0", "logger=none",
            "callbacks=none", f"trainer.accelerator={accelerator}", "trainer.devices=1",
            "trainer.max_epochs=null", "trainer.check_val_every_n_epoch=1000", f"paths.output_dir={out_dir}",
            f"paths.root_dir={out_dir}", "extras.print_config=false"]


def families() -> list[str]:
    return sorted(p.stem for p in (ROOT / "configs" / "model").glob("*.yaml"))


def write_cifar(root: Path, train_per_batch: int, test: int) -> Path:
    """CIFAR-10's python batches with random images, in the real on-disk format."""
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = test if name == "test_batch" else train_per_batch
        write_cifar_batch(root / "cifar-10-batches-py" / name, rng.integers(0, 256, (n, 3072)),
                          [i % 10 for i in range(n)])
    return root


def family_counts(text: str) -> dict[str, int]:
    """``autoregressive=2000,ebm=5000`` -> {"autoregressive": 2000, "ebm": 5000}."""
    return {name: int(n) for name, n in (item.split("=") for item in text.split(",") if item)}


class BatchTimer(pl.Callback):
    """Wall-clock of the ``timed`` batches after ``warmup``: steady-state steps/s. Like the hand loop, it
    waits for the device only as the first timed batch starts and as the last one ends: a wait at every
    batch would stop the host from queueing the next step while the GPU runs this one. (Its window opens
    after Lightning's copy of the first batch to the device and closes before the last batch's model hook,
    the EMA update: one batch's small work in each loop, which the hand loop times.)"""

    def __init__(self, warmup: int, timed: int) -> None:
        self.warmup, self.timed, self.batches, self.start, self.end = warmup, timed, 0, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.batches == self.warmup:
            synchronize(pl_module.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches += 1
        if self.batches == self.warmup + self.timed:
            synchronize(pl_module.device)
            self.end = time.perf_counter()

    def per_second(self) -> float:
        if self.batches < self.warmup + self.timed:
            raise RuntimeError(f"training stopped after {self.batches} of {self.warmup + self.timed} batches")
        return self.timed / (self.end - self.start)


def applied_switches(model: pl.LightningModule) -> dict[str, Any]:
    """The speed switches genbench's Performance callback took for this run, with the compile mode (empty:
    none ran)."""
    performance = next((cb for cb in model.trainer.callbacks if isinstance(cb, Performance)), None)
    if performance is None:
        return {}
    return {**performance.applied, "tf32": performance.tf32_flags,  # set even where they do nothing
            "compile_mode": performance.cfg.compile_mode}


@contextlib.contextmanager
def frozen_except(optimizer: torch.optim.Optimizer, optimizers: list[torch.optim.Optimizer]):
    """The hand loop's ``toggled_optimizer``: the other optimizers' parameters get no gradients inside (as
    Lightning's toggle, and the usual ``requires_grad_(False)`` of D during a GAN's G step)."""
    mine = {id(p) for group in optimizer.param_groups for p in group["params"]}
    frozen = [p for opt in optimizers if opt is not optimizer for group in opt.param_groups
              for p in group["params"] if p.requires_grad and id(p) not in mine]
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)


def optimizers_and_schedules(configured: Any) -> tuple[list[torch.optim.Optimizer], list[Any]]:
    """What ``configure_optimizers`` returned, unpacked as Lightning does: an optimizer, a list of them, a
    dict with ``optimizer`` and ``lr_scheduler`` (itself a scheduler or a dict holding one), or a list of
    such dicts (a GAN with a schedule)."""
    items = configured if isinstance(configured, (list, tuple)) else [configured]
    optimizers, schedulers = [], []
    for item in items:
        if isinstance(item, dict):
            scheduler = item.get("lr_scheduler")
            if scheduler is not None:
                schedulers.append(scheduler["scheduler"] if isinstance(scheduler, dict) else scheduler)
            item = item["optimizer"]
        optimizers.append(item)
    return optimizers, schedulers


class StepCounter:
    """The hand loop's stand-in for a trainer: ``global_step`` advances with every optimizer step, as
    Lightning's does, because the families read it (the EMA averages once per step, a GAN's critic cycle
    counts steps); the run's length for a schedule comes from genbench's trainer."""

    def __init__(self, trainer: pl.Trainer) -> None:
        self.global_step, self.training = 0, False  # training=False: log_training hands nothing on
        self.max_steps = trainer.max_steps
        self.estimated_stepping_batches = trainer.estimated_stepping_batches

    def counting(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        step = optimizer.step

        def counted(*args: Any, **kwargs: Any) -> Any:
            result = step(*args, **kwargs)
            self.global_step += 1
            return result

        optimizer.step = counted
        return optimizer


def hand_loop(model: pl.LightningModule, loader, device: torch.device, batches: int, warmup: int,
              clip: float | None, switches: dict[str, Any], precision: str,
              profiler: contextlib.AbstractContextManager | None = None) -> float:
    """The same model, batches and speed switches without Lightning: (autocast) training_step, backward,
    (clipping,) step, the weight averages' update (EMA) and the per-step learning-rate schedule.
    Manual-optimization families (GAN, EBM) get plain stand-ins for ``optimizers``/``manual_backward``/
    ``toggled_optimizer``. ``profiler`` wraps the timed batches."""
    model.to(device).train()
    model.fused_optimizer = switches.get("fused_optimizer", False)
    channels_last = switches.get("channels_last", False)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if switches.get("compile"):
        compile_for_training(model, switches.get("compile_mode", "default"))
    optimizers, schedulers = optimizers_and_schedules(model.configure_optimizers())
    counter = StepCounter(model.trainer)
    optimizers = [counter.counting(opt) for opt in optimizers]
    model.trainer = counter
    model.on_train_start()
    model.log = lambda *a, **k: None
    if not model.automatic_optimization:  # the family steps its optimizers and schedules itself
        model.optimizers = lambda: optimizers
        one_or_all = None if not schedulers else schedulers[0] if len(schedulers) == 1 else schedulers
        model.lr_schedulers = lambda: one_or_all  # as Lightning's: None, the one, or the list
        model.manual_backward = lambda loss: loss.backward()
        model.toggled_optimizer = lambda opt: frozen_except(opt, optimizers)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)  # as Lightning's
                if precision.startswith("bf16") else contextlib.nullcontext())
    with tf32_mode(switches.get("tf32", False)):  # genbench's run restored torch's flags at its end
        done, start, timed = 0, 0.0, contextlib.ExitStack()
        while done < batches:
            for i, batch in enumerate(loader):
                if done == warmup:
                    synchronize(device)
                    if profiler is not None:
                        timed.enter_context(profiler)
                    start = time.perf_counter()
                batch = [b.to(device, non_blocking=True) for b in batch]
                if channels_last and batch[0].dim() == 4:
                    batch[0] = batch[0].contiguous(memory_format=torch.channels_last)
                with autocast:
                    out = model.training_step(batch, i)
                if model.automatic_optimization:
                    loss = out["loss"] if isinstance(out, dict) else out
                    loss.backward()
                    if clip:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
                    optimizers[0].step()
                    model.update_averages(counter.global_step)
                    optimizers[0].zero_grad(set_to_none=True)
                    for scheduler in schedulers:
                        scheduler.step()
                done += 1
                if done == batches:
                    break
        synchronize(device)
    seconds = time.perf_counter() - start
    timed.close()
    return (batches - warmup) / seconds


COPY_KERNELS = re.compile(r"nchwtonhwc|nhwctonchw|direct_copy_kernel", re.IGNORECASE)


def kernel_profile(profile: "torch.profiler.profile", steps: int, top: int = 12) -> dict[str, Any]:
    """GPU kernel time and kernel launches per training step, from a profile of ``steps`` hand-loop steps:
    a step much longer than its kernels is bound by the host launching them. Also the copy kernels: cuDNN's
    NCHW<->NHWC conversions and ATen's generic strided copies (layout changes, such as those CUDA's
    NCHW-only GroupNorm adds to a channels_last network, and ``contiguous()`` after a permute; autocast's
    float32->bf16 casts have kernels of their own, not counted), the ``top`` kernels by time, and the
    host's CUDA runtime calls (:func:`runtime_summary`)."""
    kernels = [(e.key, e.self_device_time_total, e.count) for e in profile.key_averages()
               if e.device_type == torch.autograd.DeviceType.CUDA]
    return {**kernel_summary(kernels, steps, top), **runtime_summary(host_rows(profile, steps), top)}


def host_rows(profile: "torch.profiler.profile", steps: int) -> list[tuple[float, float, str]]:
    """(host ms, calls) per step of each CUDA runtime call and torch operator the host ran, by host time:
    a runtime call's own time, an operator's own time beside the operators it called."""
    rows = [(e.self_cpu_time_total / 1e3 / steps, e.count / steps, e.key) for e in profile.key_averages()
            if e.device_type == torch.autograd.DeviceType.CPU]
    return sorted(rows, reverse=True)


def runtime_summary(rows: list[tuple[float, float, str]], top: int = 12) -> dict[str, Any]:
    """The CUDA runtime's calls among ``rows`` (:func:`host_rows`), the ``top`` by host time: where the host
    waits for the device (``cudaStreamSynchronize``, ``cudaEventSynchronize``, a ``cudaMemcpyAsync`` from
    pageable memory) or pins memory (``cudaHostAlloc``); the other loop's list says which it has and this
    one has not. Empty on a CPU."""
    calls = [row for row in rows if row[2].startswith("cuda")]
    return {"runtime_ms_per_step": sum(ms for ms, _, _ in calls),
            "top_runtime_calls": [{"name": name, "ms_per_step": ms, "per_step": n}
                                  for ms, n, name in calls[:top]]}


def kernel_summary(kernels: list[tuple[str, float, int]], steps: int, top: int = 12) -> dict[str, Any]:
    """(name, device microseconds, launches) of each kernel over ``steps`` steps, as per-step figures."""
    copies = [k for k in kernels if COPY_KERNELS.search(k[0])]
    return {"kernel_ms_per_step": sum(us for _, us, _ in kernels) / 1e3 / steps,
            "kernels_per_step": sum(n for _, _, n in kernels) / steps,
            "copy_kernel_ms_per_step": sum(us for _, us, _ in copies) / 1e3 / steps,
            "copy_kernels_per_step": sum(n for _, _, n in copies) / steps,
            "top_kernels": [{"name": name[:160], "ms_per_step": us / 1e3 / steps, "per_step": n / steps}
                            for name, us, n in sorted(kernels, key=lambda k: -k[1])[:top]]}


def genbench_steps_per_s(cfg, out_dir: Path, warmup: int, steps: int):
    """Train through genbench's ``run`` (no evaluation) and time ``steps`` batches after ``warmup``."""
    timer = BatchTimer(warmup, steps)
    result = run(cfg, out_dir, callbacks=[timer])
    return timer.per_second(), result


def free_memory(device: torch.device) -> float:
    """Free what earlier families left (a model and its trainer point at each other, so only the garbage
    collector frees them) and start the peak here; the MB still allocated, to read the peaks against."""
    gc.collect()
    if device.type != "cuda":
        return 0.0
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.memory_allocated() / 2**20


def bench_family(family: str, args: argparse.Namespace, data_root: Path, inception: Path,
                 out_dir: Path, row: dict[str, Any], save: Callable[[], None]) -> None:
    """Fill ``row`` with the family's numbers, calling ``save`` after each stage (a part cut short by its
    time limit keeps what finished)."""
    accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    eval_samples = args.eval_samples_for.get(family, args.eval_samples)
    speed = [] if args.speed_of_config else ["eval.speed_repeats=1", "eval.speed_warmup=0"]
    overrides = [*training_overrides(family, data_root, out_dir, accelerator), "train=true",
                 f"eval.num_samples={eval_samples}", f"eval.num_real={eval_samples}",
                 f"eval.inception_weights={inception}", "eval.feature_net=false",
                 f"eval.speed_batch_size={args.sample_batch}", *speed,
                 *([] if args.test_batches is None else [f"eval.max_test_batches={args.test_batches}"]),
                 *args.override]
    if args.batch:
        overrides.append(f"dataset.batch_size={args.batch}")
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*overrides, "evaluate=false"])
    steps_per_batch = 2 if family == "gan" else 1  # Lightning counts a GAN's D and G steps
    cfg.trainer.max_steps = (args.warmup + args.steps) * steps_per_batch
    device = torch.device("cuda" if accelerator == "gpu" else "cpu")
    row["allocated_at_start_mb"] = free_memory(device)
    precision = str(cfg.trainer.get("precision") or "32")
    genbench, hand = [], []
    for round_ in range(args.rounds):  # alternating windows: genbench first in even rounds, hand loop in odd
        if round_ % 2 == 0:
            rate, trained = genbench_steps_per_s(cfg, out_dir / f"round{round_}", args.warmup, args.steps)
            genbench.append(rate)
            if round_ == 0:
                result = trained  # the model sampled and evaluated below
                if device.type == "cuda":
                    row["train_peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
        model, dm = result.model, result.dm
        switches = applied_switches(model)
        clip = cfg.trainer.get("gradient_clip_val") or (family == "flow" and model.hp.grad_clip) or None
        hand.append(hand_loop(fresh_model(model, dm), dm.train_dataloader(), device, args.warmup + args.steps,
                              args.warmup, clip, switches, precision))
        if round_ % 2 == 1:
            genbench.append(genbench_steps_per_s(cfg, out_dir / f"round{round_}", args.warmup, args.steps)[0])
        row.update({"device": str(device), "device_name": device_name(device),
                    "host_threads": torch.get_num_threads(), "batch_size": cfg.dataset.batch_size,
                    "timed_steps": args.steps, "rounds": len(hand), "precision": precision,
                    "parameters": result.metrics.get("num_parameters", model.num_parameters()),
                    "speedups": result.metrics.get("train_speedups"),
                    "genbench_steps_per_s": statistics.median(genbench), "genbench_rounds": genbench,
                    "hand_loop_steps_per_s": statistics.median(hand), "hand_loop_rounds": hand})
        row["lightning_overhead"] = row["hand_loop_steps_per_s"] / row["genbench_steps_per_s"]
        # each round's own ratio: its two windows ran back to back, so drift between rounds cancels
        row["round_ratios"] = [h / g for g, h in zip(genbench, hand, strict=True)]
        save()
    if args.profile_steps and (device.type == "cuda" or args.small):  # CPU: to exercise the code
        activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        profile = torch.profiler.profile(activities=activities)
        hand_loop(fresh_model(model, dm), dm.train_dataloader(), device, args.warmup + args.profile_steps,
                  args.warmup, clip, switches, precision, profiler=profile)
        row.update(kernel_profile(profile, args.profile_steps))
        save()
    if args.train_only:
        return
    with tf32_mode(switches.get("tf32", False)):  # as genbench's own evaluation
        model.to(device).eval()
        times = [sampling_speed(model, args.sample_batch, 1, 1 if i == 0 else 0)["sample_ms_per_sample"]
                 for i in range(args.sample_repeats)]
        row["sample_batch"], row["sample_ms_per_sample"] = args.sample_batch, statistics.median(times)
        row["nfe"] = model.nfe()
        save()
        eval_cfg = validate(cfg)["eval"]
        since_reset = reset_peak_memory()
        start = time.perf_counter()
        evaluation = evaluate(model, dm, eval_cfg, out_dir)
        synchronize(device)
    row["eval_seconds"] = time.perf_counter() - start
    row["eval_samples"] = eval_samples
    row["eval_real_images"] = evaluation.provenance.get("inception", {}).get("reference", {}).get("n_real")
    row["eval_speed_calls"] = eval_cfg.speed_repeats + eval_cfg.speed_warmup
    row["eval_test_examples"] = evaluation.metrics.get("test_examples")
    row["eval_sample_batch"] = evaluation.provenance.get("inception", {}).get("sample_batch_size")
    row["eval_sample_device"] = evaluation.metrics.get("sample_device")
    row.update({f"eval_{k}": v for k, v in peak_memory(device, since_reset).items()})
    save()


def fresh_model(model: pl.LightningModule, dm) -> pl.LightningModule:
    """A new model of the same family and options, initialised from the same seed, for the hand loop."""
    torch.manual_seed(0)
    hparams = {k: v for k, v in model.hparams.items() if k not in ("data_shape", "num_classes")}
    fresh = type(model)(data_shape=dm.data_shape, num_classes=dm.num_classes, **hparams)
    fresh.trainer = model.trainer  # configure_optimizers may read max_steps (a schedule's length)
    return fresh


def _cell(row: dict, key: str, spec: str = ".2f") -> str:
    value = row.get(key)
    return "-" if value is None else format(value, spec)


def markdown(rows: list[dict]) -> str:
    head = ("| family | setting | device (host threads) | batch | genbench steps/s | hand loop steps/s | "
            "overhead | GPU kernels ms/step (launches); of them copies | ms/sample (batch, NFE) | "
            "eval s (samples) | peak MB train / eval (GPU: allocated; CPU: eval's process RSS) |")
    lines = [head, "|" + " --- |" * 11]
    for r in rows:
        if "error" in r or "lightning_overhead" not in r:  # failed, or cut short in its first training
            why = f"failed: {r['error']}" if "error" in r else "not finished"
            lines.append(f"| {r['family']} | {r.get('label', '')} | {why} |" + " |" * 8)
            continue
        setting = " ".join(filter(None, [r.get("label"), f"{r['precision']}", f"({r.get('speedups')})"]))
        kernels = ("-" if "kernel_ms_per_step" not in r else
                   f"{r['kernel_ms_per_step']:.1f} ({r['kernels_per_step']:.0f})")
        if "copy_kernels_per_step" in r:  # rows before the copies were counted have none
            kernels += f"; copies {r['copy_kernel_ms_per_step']:.1f} ({r['copy_kernels_per_step']:.0f})"
        sampling = ("-" if "sample_ms_per_sample" not in r else
                    f"{r['sample_ms_per_sample']:.4g} ({r['sample_batch']}, {r['nfe']})")
        evaluation = "-" if "eval_seconds" not in r else f"{r['eval_seconds']:.1f} ({r['eval_samples']})"
        memory = f"{_cell(r, 'train_peak_gpu_memory_mb', '.0f')} / {_cell(r, 'eval_peak_memory_mb', '.0f')}"
        device = f"{r.get('device_name', '')} {r['device']} ({r['host_threads']})".strip()  # old rows: none
        cells = [r["family"], setting, device, r["batch_size"],
                 _cell(r, "genbench_steps_per_s"), _cell(r, "hand_loop_steps_per_s"),
                 f"{r['lightning_overhead']:.2f}x", kernels, sampling, evaluation, memory]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default="all", help="comma-separated, or all (every configs/model)")
    parser.add_argument("--steps", type=int, help="timed training batches per family and round (100)")
    parser.add_argument("--warmup", type=int, help="untimed training batches first (10)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="timed windows of each loop, alternating which goes first; medians reported")
    parser.add_argument("--batch", type=int, default=None, help="training batch (default: the preset's)")
    parser.add_argument("--sample-batch", type=int, help="(256)")
    parser.add_argument("--sample-repeats", type=int, help="(3)")
    parser.add_argument("--eval-samples", type=int, help="(10,000)")
    parser.add_argument("--test-batches", type=int,
                        help="test batches the likelihood uses (default: the config's eval.max_test_batches)")
    parser.add_argument("--speed-of-config", action=argparse.BooleanOptionalAction, default=None,
                        help="the evaluation times sampling as the config says (eval.speed_repeats, "
                             "speed_warmup; the default but with --small); --no-speed-of-config: one call")
    parser.add_argument("--test-images", type=int, default=64,
                        help="images in the synthetic test split (CIFAR-10's has 10,000)")
    parser.add_argument("--eval-samples-for", type=family_counts, default={},
                        help="per-family eval samples, e.g. autoregressive=2000 (else --eval-samples)")
    parser.add_argument("--train-only", action="store_true", help="time training only (no sampling, eval)")
    parser.add_argument("--profile-steps", type=int, default=0,
                        help="on a GPU: profile this many hand-loop steps (kernel ms and launches, and the "
                             "CUDA runtime's calls, per step)")
    parser.add_argument("--label", default="", help="a name for this configuration in the table")
    parser.add_argument("--small", action="store_true", help="CPU smoke sizes: 2 steps, tiny batches")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_gpu"))
    parser.add_argument("override", nargs="*", help="extra Hydra overrides for every family")
    args = parser.parse_args(argv)
    # Options given win; the others take the GPU sizes, or --small's CPU smoke sizes (compiling needs a
    # few warm-up batches: the first is counted uncompiled, under the FLOP counter, the second compiles).
    compiles = "performance.compile=true" in args.override
    small = dict(steps=2, warmup=3 if compiles else 1, sample_batch=2, sample_repeats=1, eval_samples=8,
                 test_batches=1)
    gpu = dict(steps=100, warmup=10, sample_batch=256, sample_repeats=3, eval_samples=10000)
    sizes = small if args.small else gpu
    for name, value in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.small:
        args.batch = args.batch or 4
    if args.speed_of_config is None:
        args.speed_of_config = not args.small
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")  # genbench's phases
    names = families() if args.families == "all" else args.families.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []

    def save() -> None:  # after every stage: a part cut short by its time limit keeps what finished
        (args.out / "bench_gpu.json").write_text(json.dumps(rows, indent=2))

    with tempfile.TemporaryDirectory() as tmp:
        data = write_cifar(Path(tmp) / "data", train_per_batch=64 if args.small else 2000,
                           test=args.test_images)
        inception = save_random_weights(Path(tmp) / "inception.pt")
        for family in names:
            rows.append({"family": family, "label": args.label})
            try:
                bench_family(family, args, data, inception, Path(tmp) / family, rows[-1], save)
            except Exception as error:  # one family's failure must not lose the others' numbers
                if args.small:
                    raise
                rows[-1]["error"] = f"{type(error).__name__}: {error}"
            save()
            print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    print(markdown(rows))
    return rows


if __name__ == "__main__":
    main()
