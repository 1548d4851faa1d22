"""scripts/bench_gpu.py runs end to end on a CPU at its smoke sizes (the GPU numbers come from the same
code on a GPU machine)."""

import contextlib
import json
import os
import re
import subprocess
import sys
import types

import pytest
import torch

from tests.helpers import ROOT


@pytest.fixture
def bench_gpu(script):
    return script("bench_gpu")


@pytest.mark.parametrize("family", ["vae", "autoregressive"])  # autoregressive: the ar10k part's path
def test_bench_gpu_times_training_sampling_and_evaluation_of_a_family(bench_gpu, tmp_path, family):
    rows = bench_gpu.main(["--small", "--families", family, "--test-batches", "1", "--out", str(tmp_path)])
    (row,) = json.loads((tmp_path / "bench_gpu.json").read_text())
    assert row == json.loads(json.dumps(rows[0])) and row["family"] == family
    assert row["device"] == "cpu" and row["eval_sample_device"] == "cpu" and row["host_threads"] >= 1
    assert row["genbench_steps_per_s"] > 0 and row["hand_loop_steps_per_s"] > 0
    assert row["sample_ms_per_sample"] > 0 and row["eval_seconds"] > 0 and row["eval_samples"] == 8
    assert row["eval_real_images"] == 8  # eval.num_real: as many as generated


def test_the_kernel_profile_counts_layout_copies_per_step(bench_gpu):
    kernels = [("void cudnn::ops::nchwToNhwcKernel<float>(...)", 600.0, 40),
               ("void at::native::elementwise_kernel<128, 2, direct_copy_kernel_cuda(...)>(...)", 200.0, 20),
               ("void at::native::elementwise_kernel<128, 4, silu_kernel(...)>(...)", 1000.0, 100),
               ("sm90_xmma_fprop_implicit_gemm_tf32", 3200.0, 40)]
    summary = bench_gpu.kernel_summary(kernels, steps=4, top=2)
    assert summary["kernel_ms_per_step"] == 5.0 / 4 and summary["kernels_per_step"] == 200 / 4
    assert summary["copy_kernel_ms_per_step"] == 0.8 / 4 and summary["copy_kernels_per_step"] == 60 / 4
    assert [k["name"] for k in summary["top_kernels"]] == [kernels[3][0], kernels[2][0]]
    assert summary["top_kernels"][0] == {"name": kernels[3][0], "ms_per_step": 0.8, "per_step": 10}
    row = {"family": "diffusion", "precision": "32", "device": "cuda", "host_threads": 16, "batch_size": 128,
           "lightning_overhead": 1.0, **summary}
    assert "| 1.2 (50); copies 0.2 (15) |" in bench_gpu.markdown([row])


def test_the_hand_loops_profile_lists_the_cuda_runtime_calls_where_the_host_waits(bench_gpu, tmp_path):
    """The hand loop's runtime calls per step, to set beside genbench's (``bench_host_step``): only the CUDA
    runtime's, by host time. On a CPU a real profile has none, and its operators are per step."""
    rows = [(5.0, 1.0, "cudaEventSynchronize"), (2.0, 10.0, "aten::convolution"),
            (1.0, 30.0, "cudaLaunchKernel"), (0.5, 0.25, "cudaHostAlloc")]
    summary = bench_gpu.runtime_summary(rows, top=2)
    assert summary["runtime_ms_per_step"] == 6.5
    assert summary["top_runtime_calls"] == [
        {"name": "cudaEventSynchronize", "ms_per_step": 5.0, "per_step": 1.0},
        {"name": "cudaLaunchKernel", "ms_per_step": 1.0, "per_step": 30.0}]
    (row,) = bench_gpu.main(["--small", "--families", "vae", "--train-only", "--profile-steps", "3",
                             "--out", str(tmp_path)])
    assert row["kernel_ms_per_step"] == 0 and row["runtime_ms_per_step"] == 0
    assert row["top_runtime_calls"] == []
    profile = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
    with profile:
        for _ in range(4):
            torch.ones(3).add_(1)
    calls = {name: n for _, n, name in bench_gpu.host_rows(profile, 4)}
    assert calls["aten::add_"] == 1


def test_the_genbench_timer_waits_for_the_device_only_where_the_hand_loop_does(bench_gpu, monkeypatch):
    """Before the first timed batch and after the last: a wait at every batch (as before) kept a GPU's host
    from running ahead, which the hand loop it is compared with does."""
    waits = []
    monkeypatch.setattr(bench_gpu, "synchronize", lambda device: waits.append(timer.batches))
    timer = bench_gpu.BatchTimer(warmup=3, timed=5)
    module = types.SimpleNamespace(device=torch.device("cpu"))
    for i in range(8):
        timer.on_train_batch_start(None, module, None, i)
        with pytest.raises(RuntimeError, match=f"stopped after {i} of 8 batches"):
            timer.per_second()
        timer.on_train_batch_end(None, module, None, None, i)
    assert waits == [3, 8]  # as batch 3 (0-based) starts, and as batch 7 ends
    assert timer.per_second() == 5 / (timer.end - timer.start) > 0


def test_the_hand_loop_gives_the_other_players_weights_no_gradients_as_lightning_does(bench_gpu):
    generator, critic = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)
    critic.bias.requires_grad_(False)  # frozen by its owner: stays frozen afterwards
    opt_g, opt_d = torch.optim.Adam(generator.parameters()), torch.optim.Adam(critic.parameters())
    with bench_gpu.frozen_except(opt_g, [opt_d, opt_g]):
        critic(generator(torch.randn(4, 2))).mean().backward()
    assert critic.weight.grad is None and generator.weight.grad is not None
    assert critic.weight.requires_grad and not critic.bias.requires_grad and generator.weight.requires_grad


def test_the_hand_loop_freezes_the_critic_in_a_gan_step_in_the_runs_tf32_setting(bench_gpu, tmp_path,
                                                                                   monkeypatch):
    """The hand loop takes the switches genbench's run took; the run restored torch's flags at its end."""
    seen, real = [], bench_gpu.frozen_except

    @contextlib.contextmanager
    def recording(optimizer, optimizers):
        with real(optimizer, optimizers):
            seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
            yield

    monkeypatch.setattr(bench_gpu, "frozen_except", recording)
    bench_gpu.main(["--small", "--families", "gan", "--train-only", "--out", str(tmp_path),
                    "performance.tf32=true"])
    assert len(seen) == 3 and set(seen) == {(True, True)}  # G's step of each of the 3 hand-loop batches


def test_rounds_alternate_which_loop_goes_first_and_report_medians(bench_gpu, tmp_path, monkeypatch):
    """One genbench window, then one hand-loop window, always in that order, could not separate a 5%
    overhead from drift between the two: the 2nd round runs the hand loop first."""
    order, genbench, hand = [], bench_gpu.genbench_steps_per_s, bench_gpu.hand_loop
    monkeypatch.setattr(bench_gpu, "genbench_steps_per_s",
                        lambda *a: order.append("genbench") or genbench(*a))
    monkeypatch.setattr(bench_gpu, "hand_loop", lambda *a, **k: order.append("hand") or hand(*a, **k))
    (row,) = bench_gpu.main(["--small", "--families", "vae", "--train-only", "--rounds", "3", "--steps", "3",
                             "--out", str(tmp_path)])
    assert order == ["genbench", "hand", "hand", "genbench", "genbench", "hand"]
    assert row["rounds"] == 3 and row["timed_steps"] == 3  # an option given wins over --small's sizes
    assert row["genbench_steps_per_s"] == sorted(row["genbench_rounds"])[1]
    assert row["hand_loop_steps_per_s"] == sorted(row["hand_loop_rounds"])[1]
    pairs = zip(row["genbench_rounds"], row["hand_loop_rounds"], strict=True)
    assert row["round_ratios"] == [h / g for g, h in pairs]


def test_a_family_cut_short_keeps_the_stages_that_finished(bench_gpu, tmp_path, monkeypatch):
    """The row is saved after training and after sampling: a part stopped by its time limit in the
    evaluation (ar10k, fulltest) still has its steps/s and ms/sample."""
    def stuck(*args, **kwargs):
        raise TimeoutError("the part's time limit")

    monkeypatch.setattr(bench_gpu, "evaluate", stuck)
    with pytest.raises(TimeoutError):
        bench_gpu.main(["--small", "--families", "vae", "--out", str(tmp_path)])
    (row,) = json.loads((tmp_path / "bench_gpu.json").read_text())
    assert row["genbench_steps_per_s"] > 0 and row["sample_ms_per_sample"] > 0 and "eval_seconds" not in row


def test_the_hand_loop_runs_a_gan_with_a_schedule_stepping_each_players_own(bench_gpu, tmp_path):
    """configure_optimizers then returns a dict per player (the loop took them for optimizers), and the
    GAN steps its schedules itself through lr_schedulers()."""
    (row,) = bench_gpu.main(["--small", "--families", "gan", "--train-only", "--out", str(tmp_path),
                             "+model.scheduler._target_=genbench.models.schedule.warmup_cosine",
                             "+model.scheduler._partial_=true", "+model.scheduler.warmup_steps=1"])
    assert row["hand_loop_steps_per_s"] > 0
    scheduled = {"scheduler": {"_target_": "genbench.models.schedule.warmup_cosine", "_partial_": True}}
    from genbench.models.gan import GAN

    model = GAN((2,), **scheduled)
    model.trainer = types.SimpleNamespace(max_steps=8, estimated_stepping_batches=8)
    optimizers, schedulers = bench_gpu.optimizers_and_schedules(model.configure_optimizers())
    assert len(optimizers) == 2 and len(schedulers) == 2
    assert all(isinstance(o, torch.optim.Optimizer) for o in optimizers)


def test_the_hand_loop_averages_once_per_step_as_genbench_does(bench_gpu, tmp_path, monkeypatch):
    """The families read the trainer's step (the EMA averages once per optimizer step): on genbench's
    finished trainer the hand loop averaged once in 6 batches, and a GAN at n_critic=2 never stepped G."""
    import genbench.models.base as base

    calls, real = [], base.ema_update
    monkeypatch.setattr(base, "ema_update", lambda *a: calls.append(1) or real(*a))
    bench_gpu.main(["--small", "--families", "flow_matching", "--train-only", "--steps", "5", "--out",
                    str(tmp_path)])
    assert len(calls) == 2 * 6  # 1 warm-up + 5 timed batches, in genbench's run and in the hand loop


def test_the_gpu_session_script_starts_and_lists_the_parts_it_has(tmp_path):
    """scripts/bench_gpu_session.sh runs on a lent GPU, where a mistake costs minutes of a 15-minute loan:
    on a CPU it starts (its checks of the machine, its results file) and refuses an unknown part, and its
    usage line and its refusal name exactly the parts it has."""
    script = ROOT / "scripts" / "bench_gpu_session.sh"
    text = script.read_text()
    parts = re.findall(r"^    (\w+)\)", text, flags=re.MULTILINE)
    usage = re.search(r"# parts: ([\w ]+)\n", text).group(1).split()
    refusal = re.search(r"unknown part \$name \(([\w ]+)\)", text).group(1).split()
    assert sorted(parts) == sorted(usage) == sorted(refusal) and len(parts) == 10
    env = {**os.environ, "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work"), "PY": sys.executable,
           "TRAINER": "cpu"}
    done = subprocess.run(["bash", str(script), "no_such_part"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "unknown part no_such_part" in done.stdout, done.stdout + done.stderr
    assert "torch" in (tmp_path / "work" / "machine.log").read_text()
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == {}


def test_the_host_step_profile_names_the_operators_of_a_window_of_batches(script, capsys):
    """--runtime-batches: torch's profiler over a window of batches of a second run, which cProfile does not
    slow down (and whose batches it does not count), per batch (on a GPU the CUDA runtime's calls, where a
    wait for the device shows). Each batch makes one Adam step and the same convolutions, so their counts
    per batch are whole numbers; a window past the run's end keeps the batches it saw."""
    host_step = script("bench_host_step")
    cprofiled = []

    def window(steps: int, batches: int) -> tuple[str, dict[str, float]]:
        host_step.main(["--family", "vae", "--steps", str(steps), "--batch", "2", "--top", "500",
                        "--runtime-batches", str(batches)])
        first, windowed = capsys.readouterr().out.split("torch's profiler over ")
        cprofiled.append(first.splitlines()[0])
        head, *lines = windowed.splitlines()
        return head, {line.split()[-1]: float(line.split()[2]) for line in lines}

    head, calls = window(steps=10, batches=3)  # batches 1 to 3 of 10
    assert cprofiled[-1].startswith("vae, batch 2, 10 optimizer steps in 10 batches")
    assert head.startswith("3 batches of a run without cProfile, ")
    assert float(head.split()[7]) > 0  # ms a batch
    assert calls["Optimizer.step#Adam.step"] == 1
    assert calls["aten::convolution_backward"] >= 2 and calls["aten::convolution_backward"].is_integer()
    head, _ = window(steps=4, batches=10)  # batches 1 to 3 of 4
    assert head.startswith("3 batches")


@pytest.mark.parametrize(("family", "batches"), [("vae", 6), ("gan", 3)])
def test_the_host_step_profile_finds_the_loop_and_genbenchs_callbacks_once_a_batch(script, family, batches):
    """6 optimizer steps: the VAE's 6 batches, the GAN's 3 (each a critic's and a generator's step). Before,
    rows were per optimizer step and left out what ran once a GAN batch, genbench's callbacks among them."""
    rows = script("bench_host_step").main(["--family", family, "--steps", "6", "--batch", "2", "--top", "0"])

    def row(file: str, name: str) -> tuple[float, float, int, str]:
        return next(r for r in rows if file in r[3] and r[3].endswith(f" {name}"))

    step, guard = row("training_epoch_loop.py", "advance"), row("genbench/callbacks.py", "on_train_batch_end")
    assert step[2] == batches and guard[2] == batches  # Lightning's batch, genbench's divergence guard
    assert 0 < guard[0] < step[0]  # the guard's time is part of the step's
    assert all(0 <= own <= cumulative + 1e-9 for cumulative, own, _, _ in rows)
