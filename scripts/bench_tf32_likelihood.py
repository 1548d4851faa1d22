"""How far TF32 moves an exact likelihood: a normalizing flow trained briefly on a dataset is scored on its
test split in float32 and in TF32, with the same dequantization noise, and the change of the mean bits/dim
is set beside the mean's standard error.

    python scripts/bench_tf32_likelihood.py                       # a GPU: torch's TF32 flags on, then off
    python scripts/bench_tf32_likelihood.py --emulate round       # a CPU: TF32's inputs emulated, rounded
    python scripts/bench_tf32_likelihood.py --emulate truncate    #   ... or with their low bits dropped

Why: the evaluation stage runs in the run's ``performance.tf32`` setting, TF32 by default on a GPU. TF32
tensor cores read 10 of float32's 23 mantissa bits of each matmul and convolution input and add up in
float32. Sources differ on whether kernels round the dropped bits or truncate them (PyTorch's numerical
accuracy notes say "only the first 10 bits of the input mantissa are read"), so on a CPU both are emulated:
each input of ``EMULATED`` is rounded (to nearest, ties to even) or truncated to 10 bits first.
"""

import argparse
import contextlib
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from torch import Tensor
from torch.overrides import TorchFunctionMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from genbench.evaluation.device import device_name  # noqa: E402
from genbench.evaluation.likelihood import seeded_log_likelihoods  # noqa: E402
from genbench.performance import tf32_mode  # noqa: E402
from genbench.train import run  # noqa: E402

DROPPED = 13  # float32 has 23 mantissa bits, TF32 10
EMULATED = {F.conv1d, F.conv2d, F.linear, torch.matmul, torch.mm, torch.bmm, torch.Tensor.__matmul__,
            torch.Tensor.matmul, torch.Tensor.mm}


def to_tf32(x: Tensor, mode: str) -> Tensor:
    """``x`` with the low 13 mantissa bits of each float32 value rounded (to nearest, ties to even) or
    truncated away: the value a TF32 tensor core reads."""
    bits = x.contiguous().view(torch.int32)
    if mode == "round":
        bits = bits + ((1 << (DROPPED - 1)) - 1) + ((bits >> DROPPED) & 1)
    return (bits & ~((1 << DROPPED) - 1)).view(torch.float32).view_as(x)


class EmulatedTF32(TorchFunctionMode):
    """Float32 matmuls and convolutions read their two operands as TF32 (``mode``: round or truncate)."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode, self.calls = mode, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in EMULATED:
            self.calls += 1
            args = tuple(to_tf32(a, self.mode) if i < 2 and isinstance(a, Tensor) and a.dtype == torch.float32
                         else a for i, a in enumerate(args))
        return func(*args, **(kwargs or {}))


def measure(dataset: str, steps: int, emulate: str | None, out: Path) -> dict[str, Any]:
    accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "model=flow", f"dataset={dataset}", f"trainer.max_steps={steps}",
            f"trainer.accelerator={accelerator}", "logger=none", "callbacks=none", "evaluate=false",
            "trainer.enable_progress_bar=false", f"paths.output_dir={out}", "extras.print_config=false"])
    result = run(cfg, out)
    device = torch.device("cuda" if accelerator == "gpu" else "cpu")
    model, dm = result.model.to(device).eval(), result.dm
    dm.setup("test")
    with tf32_mode(False):
        exact = seeded_log_likelihoods(model, (x for x, _ in dm.test_dataloader()), seed=0)
    emulation = EmulatedTF32(emulate) if emulate else None
    with tf32_mode(emulate is None), emulation or contextlib.nullcontext():  # torch's TF32, or emulated
        tf32 = seeded_log_likelihoods(model, (x for x, _ in dm.test_dataloader()), seed=0)
    to_bpd = 1 / (model.data_dim * math.log(2))
    change = (tf32 - exact) * to_bpd
    return {"dataset": dataset, "device": str(device), "device_name": device_name(device),
            "tf32": f"emulated ({emulate})" if emulate else "torch's flags", "train_steps": steps,
            "dims": model.data_dim, "test_examples": len(exact),
            "emulated_calls": emulation.calls if emulation else None,
            "fp32_bpd": -exact.mean().item() * to_bpd, "tf32_bpd": -tf32.mean().item() * to_bpd,
            "change_of_mean_bpd": -change.mean().item(), "se_of_mean_bpd": exact.std().item() * to_bpd
            / math.sqrt(len(exact)), "median_abs_change_bpd": change.abs().median().item(),
            "max_abs_change_bpd": change.abs().max().item()}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["digits", "moons"])
    parser.add_argument("--steps", type=int, default=1000, help="training steps of each flow")
    parser.add_argument("--emulate", choices=["round", "truncate"], default=None,
                        help="emulate TF32 on any device (else torch's flags, which only a GPU obeys)")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_tf32_likelihood"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in args.datasets:
            rows.append(measure(dataset, args.steps, args.emulate, Path(tmp) / dataset))
            (args.out / "bench_tf32_likelihood.json").write_text(json.dumps(rows, indent=2))  # kept if cut
    print("| dataset | device | TF32 | test examples | float32 bpd | TF32 bpd | change of the mean | "
          "its standard error | per-example change: median, max |")
    print("|" + " --- |" * 9)
    for r in rows:
        print(f"| {r['dataset']} | {r['device_name']} ({r['device']}) | {r['tf32']} | {r['test_examples']} | "
              f"{r['fp32_bpd']:.5f} | {r['tf32_bpd']:.5f} | {r['change_of_mean_bpd']:+.2e} | "
              f"{r['se_of_mean_bpd']:.2e} | {r['median_abs_change_bpd']:.1e}, "
              f"{r['max_abs_change_bpd']:.1e} |")
    return rows


if __name__ == "__main__":
    main()
