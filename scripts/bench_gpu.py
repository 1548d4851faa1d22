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
import json
import statistics
import sys
import tempfile
import time
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
from genbench.evaluation.inception import save_random_weights  # noqa: E402
from genbench.evaluation.speed import sampling_speed  # noqa: E402
from genbench.train import run  # noqa: E402

EXPERIMENTS = {"vae": ["model=vae", "dataset=cifar10", "dataset.batch_size=128"]}  # no GPU preset of its own


def family_overrides(family: str) -> list[str]:
    return EXPERIMENTS.get(family, [f"experiment={family}_cifar10"])


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


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class BatchTimer(pl.Callback):
    """Wall-clock of the batches after ``warmup``, with the device synchronized: steady-state steps/s."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.batches, self.start, self.end = warmup, 0, 0.0, 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches += 1
        if self.batches == self.warmup:
            sync(pl_module.device)
            self.start = time.perf_counter()
        elif self.batches > self.warmup:
            sync(pl_module.device)
            self.end = time.perf_counter()

    def per_second(self) -> float:
        return (self.batches - self.warmup) / (self.end - self.start)


def hand_loop(model: pl.LightningModule, loader, device: torch.device, batches: int, warmup: int,
              clip: float | None) -> float:
    """The same model and batches without Lightning: training_step, backward, (clipping,) step, and the
    family's end-of-batch hook (its EMA update). Manual-optimization families (GAN, EBM) get plain
    stand-ins for ``optimizers``/``manual_backward``/``toggled_optimizer``."""
    model.to(device).train()
    configured = model.configure_optimizers()
    if isinstance(configured, dict):
        configured = configured["optimizer"]
    optimizers = configured if isinstance(configured, (list, tuple)) else [configured]
    model.log = lambda *a, **k: None
    if not model.automatic_optimization:
        model.optimizers = lambda: optimizers
        model.manual_backward = lambda loss: loss.backward()
        model.toggled_optimizer = lambda opt: contextlib.nullcontext()
    done, start = 0, 0.0
    while done < batches:
        for i, batch in enumerate(loader):
            if done == warmup:
                sync(device)
                start = time.perf_counter()
            batch = [b.to(device, non_blocking=True) for b in batch]
            out = model.training_step(batch, i)
            if model.automatic_optimization:
                loss = out["loss"] if isinstance(out, dict) else out
                loss.backward()
                if clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
                optimizers[0].step()
                optimizers[0].zero_grad(set_to_none=True)
            model.on_train_batch_end(out, batch, i)
            done += 1
            if done == batches:
                break
    sync(device)
    return (batches - warmup) / (time.perf_counter() - start)


def bench_family(family: str, args: argparse.Namespace, data_root: Path, inception: Path,
                 out_dir: Path) -> dict[str, Any]:
    accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    overrides = [*family_overrides(family), f"dataset.root={data_root}", "dataset.num_workers=0",
                 "logger=none", "callbacks=none", f"trainer.accelerator={accelerator}", "trainer.devices=1",
                 "trainer.max_epochs=null", "trainer.check_val_every_n_epoch=1000", "train=true",
                 f"paths.output_dir={out_dir}", f"paths.root_dir={out_dir}", "extras.print_config=false",
                 f"eval.num_samples={args.eval_samples}", f"eval.num_real={args.eval_samples}",
                 f"eval.inception_weights={inception}", "eval.feature_net=false",
                 f"eval.speed_batch_size={args.sample_batch}", "eval.speed_repeats=1", "eval.speed_warmup=0",
                 f"eval.max_test_batches={args.test_batches}", *args.override]
    if args.batch:
        overrides.append(f"dataset.batch_size={args.batch}")
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*overrides, "evaluate=false"])
    steps_per_batch = 2 if family == "gan" else 1  # Lightning counts a GAN's D and G steps
    cfg.trainer.max_steps = (args.warmup + args.steps) * steps_per_batch
    device = torch.device("cuda" if accelerator == "gpu" else "cpu")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    timer = BatchTimer(args.warmup)
    result = run(cfg, out_dir, callbacks=[timer])
    model, dm = result.model, result.dm
    row: dict[str, Any] = {"family": family, "device": str(device), "host_threads": torch.get_num_threads(),
                           "batch_size": cfg.dataset.batch_size, "timed_steps": args.steps,
                           "parameters": result.metrics.get("num_parameters", model.num_parameters()),
                           "genbench_steps_per_s": timer.per_second()}
    torch.manual_seed(0)
    fresh = type(model)(data_shape=dm.data_shape, num_classes=dm.num_classes,
                        **{k: v for k, v in model.hparams.items() if k not in ("data_shape", "num_classes")})
    clip = cfg.trainer.get("gradient_clip_val") or (family == "flow" and model.hp.grad_clip) or None
    row["hand_loop_steps_per_s"] = hand_loop(fresh, dm.train_dataloader(), device, args.warmup + args.steps,
                                             args.warmup, clip)
    row["lightning_overhead"] = row["hand_loop_steps_per_s"] / row["genbench_steps_per_s"]
    del fresh
    model.to(device).eval()
    times = [sampling_speed(model, args.sample_batch, 1, 1 if i == 0 else 0)["sample_ms_per_sample"]
             for i in range(args.sample_repeats)]
    row["sample_batch"], row["sample_ms_per_sample"] = args.sample_batch, statistics.median(times)
    row["nfe"] = model.nfe()
    eval_cfg = validate(cfg)["eval"]
    start = time.perf_counter()
    evaluation = evaluate(model, dm, eval_cfg, out_dir)
    sync(device)
    row["eval_seconds"] = time.perf_counter() - start
    row["eval_samples"] = args.eval_samples
    row["eval_sample_device"] = evaluation.metrics.get("sample_device")
    if device.type == "cuda":
        row["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return row


def markdown(rows: list[dict]) -> str:
    head = ("| family | device (threads) | batch | genbench steps/s | hand loop steps/s | overhead | "
            "ms/sample (batch, NFE) | eval s (samples) | peak GPU MB |")
    lines = [head, "|" + " --- |" * 9]
    for r in rows:
        memory = r.get("peak_gpu_memory_mb")
        cells = [r["family"], f"{r['device']} ({r['host_threads']})", r["batch_size"],
                 f"{r['genbench_steps_per_s']:.2f}", f"{r['hand_loop_steps_per_s']:.2f}",
                 f"{r['lightning_overhead']:.2f}x",
                 f"{r['sample_ms_per_sample']:.4g} ({r['sample_batch']}, {r['nfe']})",
                 f"{r['eval_seconds']:.1f} ({r['eval_samples']})", "-" if memory is None else f"{memory:.0f}"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default="all", help="comma-separated, or all (every configs/model)")
    parser.add_argument("--steps", type=int, default=100, help="timed training batches per family")
    parser.add_argument("--warmup", type=int, default=10, help="untimed training batches first")
    parser.add_argument("--batch", type=int, default=None, help="training batch (default: the preset's)")
    parser.add_argument("--sample-batch", type=int, default=256)
    parser.add_argument("--sample-repeats", type=int, default=3)
    parser.add_argument("--eval-samples", type=int, default=10000)
    parser.add_argument("--test-batches", type=int, default=10, help="test batches the likelihood uses")
    parser.add_argument("--small", action="store_true", help="CPU smoke sizes: 2 steps, tiny batches")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_gpu"))
    parser.add_argument("override", nargs="*", help="extra Hydra overrides for every family")
    args = parser.parse_args(argv)
    if args.small:
        args.steps, args.warmup, args.batch = 2, 1, args.batch or 4
        args.sample_batch, args.sample_repeats, args.eval_samples, args.test_batches = 2, 1, 8, 1
    names = families() if args.families == "all" else args.families.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = write_cifar(Path(tmp) / "data", train_per_batch=64 if args.small else 2000, test=64)
        inception = save_random_weights(Path(tmp) / "inception.pt")
        for family in names:
            rows.append(bench_family(family, args, data, inception, Path(tmp) / family))
            print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    (args.out / "bench_gpu.json").write_text(json.dumps(rows, indent=2))
    print(markdown(rows))
    return rows


if __name__ == "__main__":
    main()
