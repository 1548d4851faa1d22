"""scripts/bench_gpu.py runs end to end on a CPU at its smoke sizes (the GPU numbers come from the same
code on a GPU machine)."""

import json
import sys

from tests.helpers import ROOT


def test_bench_gpu_times_training_sampling_and_evaluation_of_a_family(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import bench_gpu

    rows = bench_gpu.main(["--small", "--families", "vae", "--out", str(tmp_path)])
    (row,) = json.loads((tmp_path / "bench_gpu.json").read_text())
    assert row == json.loads(json.dumps(rows[0])) and row["family"] == "vae"
    assert row["device"] == "cpu" and row["eval_sample_device"] == "cpu" and row["host_threads"] >= 1
    assert row["genbench_steps_per_s"] > 0 and row["hand_loop_steps_per_s"] > 0
    assert row["sample_ms_per_sample"] > 0 and row["eval_seconds"] > 0 and row["eval_samples"] == 8
    sys.modules.pop("bench_gpu")
