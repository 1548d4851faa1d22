"""The GPU speed switches: off on a CPU unless asked for, the same math when on, recorded with the run."""

import math
import traceback
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import _get_current_dispatch_mode

import genbench.train as genbench_train
from genbench.errors import ConfigError
from genbench.models.compiled import compile_for_training, graphs_compiled, trained_networks
from genbench.performance import Performance, PerformanceConfig, resolve, tf32_mode
from genbench.progress import logs_this_step
from genbench.train import RunResult, instantiate, run
from tests.helpers import FAMILIES, compose_train

SWITCHES_ON = ["performance.tf32=true", "performance.channels_last=true", "performance.fused_optimizer=true",
               "performance.pin_memory=true"]


def test_auto_turns_a_switch_on_for_cuda_only_and_compile_stays_off():
    assert resolve("auto", torch.device("cuda", 0)) and not resolve("auto", torch.device("cpu"))
    assert resolve("true", torch.device("cpu")) and not resolve("false", torch.device("cuda"))
    assert not resolve("auto", torch.device("cuda"), auto=False)


def _digits_run(tmp_path, *overrides: str):
    cfg = compose_train(["dataset=digits", "debug=default", "evaluate=false", "trainer.max_epochs=null",
                         "trainer.accelerator=cpu", "trainer.limit_train_batches=1.0", "trainer.max_steps=6",
                         f"paths.output_dir={tmp_path}", *overrides])
    return run(cfg, tmp_path)


def test_speed_switches_train_the_same_model_and_are_recorded(tmp_path):
    plain = _digits_run(tmp_path / "plain")
    fast = _digits_run(tmp_path / "fast", *SWITCHES_ON)
    assert plain.metrics["train_speedups"] == "none" and plain.metrics["train_precision"] == "32-true"
    # a CPU has no TF32 to take, and no copy to a GPU that pinned batches would speed up
    assert fast.metrics["train_speedups"] == "channels_last,fused_optimizer" and not fast.dm.pin_memory
    conv = next(m for m in fast.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    # NHWC kernels and one fused Adam step per group instead of a loop: the same updates up to rounding,
    # which Adam's normalization can blow up to a fraction of a step (lr 1e-3) where a gradient is near 0.
    # Measured after 6 steps: at most 2.8e-4 with channels_last, 2.3e-7 with the fused Adam alone.
    for (name, p), q in zip(plain.model.named_parameters(), fast.model.parameters(), strict=True):
        assert (p - q).abs().max() < 1e-3, name


def _tf32_flags() -> tuple[bool, bool]:
    """torch's TF32 flags: (float32 matmuls, cuDNN convolutions)."""
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


class _FlagsInTraining(pl.Callback):
    def __init__(self) -> None:
        self.seen: set[tuple[bool, bool]] = set()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.add(_tf32_flags())


@pytest.fixture
def torch_default_tf32():
    """torch's default flags (float32 matmuls, TF32 cuDNN convolutions) for the test; then as before."""
    before = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = True
    yield
    torch.set_float32_matmul_precision(before[0])
    torch.backends.cudnn.allow_tf32 = before[1]


@pytest.mark.parametrize("tf32", [True, False])
def test_the_tf32_switch_sets_both_flags_for_training_and_either_evaluation_then_restores_them(
        tf32, tmp_path, monkeypatch, torch_default_tf32):
    """``false`` is float32 throughout: torch's own default runs cuDNN's convolutions in TF32, under a record
    that said no TF32. train.py's evaluation and eval.py's (``train=false``) run in the run's numerics, where
    eval.py used torch's defaults; and a run leaves torch's flags as it found them (a sweep's next run)."""
    evaluated, real_evaluate = [], genbench_train.evaluate

    def evaluate(*args, **kwargs):
        evaluated.append(_tf32_flags())
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(genbench_train, "evaluate", evaluate)
    trained, flags = tmp_path / "trained", _FlagsInTraining()
    common = ["debug=default", "trainer.accelerator=cpu", f"performance.tf32={str(tf32).lower()}",
              "eval.num_samples=64", "eval.num_real=64"]
    result = run(compose_train([*common, f"paths.output_dir={trained}"]), trained, callbacks=[flags])
    assert flags.seen == {(tf32, tf32)} and _tf32_flags() == (False, True)
    # The flags are set as asked, but a CPU has no TF32: the record says what acted (it once said tf32).
    assert result.metrics["eval_tf32"] is False and "tf32" not in result.metrics["train_speedups"]
    ckpt, out = trained / "checkpoints" / "last.ckpt", tmp_path / "eval"
    again = run(compose_train([*common, "train=false", f"ckpt_path={ckpt}", f"paths.output_dir={out}"]), out)
    assert evaluated == [(tf32, tf32)] * 2 and again.metrics["eval_tf32"] is False
    assert _tf32_flags() == (False, True)


class _Fails(pl.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        raise RuntimeError("stopped in training")  # as the divergence guard or a bug would stop a run


def test_a_run_that_fails_in_training_still_restores_torchs_tf32_flags(tmp_path, torch_default_tf32):
    """Lightning calls no callback's teardown when fit raises: the flags came back only on success."""
    cfg = compose_train(["debug=default", "trainer.accelerator=cpu", "performance.tf32=true",
                         f"paths.output_dir={tmp_path}"])
    with pytest.raises(RuntimeError, match="stopped in training"):
        run(cfg, tmp_path, callbacks=[_Fails()])
    assert _tf32_flags() == (False, True)


def test_tf32_mode_gives_back_a_matmul_precision_the_legacy_flag_cannot_hold(torch_default_tf32):
    torch.set_float32_matmul_precision("medium")
    for enabled in (True, False):
        with tf32_mode(enabled):
            assert _tf32_flags() == (enabled, enabled)
        assert torch.get_float32_matmul_precision() == "medium"


class Graphs:
    """A torch.compile backend that keeps, for each graph dynamo hands it, whether its shapes are symbolic
    (a dynamic batch size arrives as a SymInt input), and runs the graph as it is: no inductor, so no C++
    compiler, and the same math."""

    def __init__(self) -> None:
        self.dynamic: list[bool] = []
        self.modes: set[str] = set()  # the compile modes asked for

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list) -> Callable:
        self.dynamic.append(any(isinstance(x, torch.SymInt) for x in example_inputs))
        return gm.forward


def _counting_compiles(monkeypatch) -> Graphs:
    counter, real = Graphs(), torch.compile
    torch._dynamo.reset()

    def compile_counting(fn, mode, dynamic):
        counter.modes.add(mode)
        return real(fn, backend=counter, dynamic=dynamic)

    monkeypatch.setattr(torch, "compile", compile_counting)
    return counter


TINY_UNET = ["model=diffusion", "model.unet_channels=8", "model.channel_mults=[1]", "model.attention=false",
             "model.num_res_blocks=1", "callbacks=none"]


@pytest.mark.parametrize(("mode", "recorded"), [("default", "compile"),
                                                ("reduce-overhead", "compile(reduce-overhead)")])
def test_compile_runs_the_training_steps_only_in_static_shapes(mode, recorded, tmp_path, monkeypatch):
    """A run that validates (the sanity check's bound, in eval mode) and trains past an epoch's last, smaller
    batch compiles its U-Net once per training batch size, not for validation or sampling, and trains to
    the weights an eager run reaches."""
    counter = _counting_compiles(monkeypatch)
    steps = ["trainer.max_steps=13"]  # 12 batches an epoch, the last one smaller
    compiled = _digits_run(tmp_path / "compiled", *TINY_UNET, *steps, "performance.compile=true",
                           f"performance.compile_mode={mode}")
    n_train = len(compiled.dm.train_set)
    assert n_train % 128 and math.ceil(n_train / 128) < 13  # the run did see the smaller batch
    assert compiled.metrics["train_speedups"] == recorded and counter.modes == {mode}
    assert counter.dynamic == [False, False]  # the full batch and the smaller one
    model = compiled.model.eval()
    with torch.no_grad():
        model.sample(5)
        model.log_likelihood(compiled.dm.split_tensor("test")[:7])
    assert len(counter.dynamic) == 2
    eager = _digits_run(tmp_path / "eager", *TINY_UNET, *steps)
    for (name, p), q in zip(compiled.model.named_parameters(), eager.model.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6), name


class Steps(pl.Callback):
    """The global step at each training batch's start, and the validations after the sanity check."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.validations = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.steps.append(trainer.global_step)

    def on_validation_end(self, trainer, pl_module) -> None:
        self.validations += not trainer.sanity_checking


def _whole_and_resumed(tmp_path: Path, *overrides: str) -> tuple[RunResult, RunResult, Path]:
    """A whole compiled run of the tiny U-Net on digits, 12 steps in 5-batch epochs with validation after
    each, checkpoints every 3 steps by a callback; then a run resumed from the step-6 checkpoint to 12,
    which validates at the end of the second epoch (step 10)."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    common = ["dataset=digits", "debug=default", "trainer.max_epochs=null", *TINY_UNET,
              "trainer.max_steps=12", "trainer.limit_train_batches=5", "trainer.limit_val_batches=1",
              "trainer.check_val_every_n_epoch=1", "trainer.gradient_clip_val=1.0",
              "performance.compile=true", *overrides]
    every = ModelCheckpoint(dirpath=tmp_path / "every", every_n_train_steps=3, save_top_k=-1)
    seen = {"whole": Steps(), "resumed": Steps()}
    whole = run(compose_train([*common, f"paths.output_dir={tmp_path / 'whole'}"]), tmp_path / "whole",
                callbacks=[every, seen["whole"]])
    (checkpoint,) = (tmp_path / "every").glob("*-step=6.ckpt")
    plain = checkpoint.rename(tmp_path / "step6.ckpt")  # Hydra's override grammar: no "=" in the path
    resumed = run(compose_train([*common, f"ckpt_path={plain}", f"paths.output_dir={tmp_path / 'resumed'}"]),
                  tmp_path / "resumed", callbacks=[seen["resumed"]])
    assert [(s.steps, s.validations) for s in seen.values()] == [(list(range(12)), 2),
                                                                 (list(range(6, 12)), 1)]
    return whole, resumed, plain


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_a_compiled_run_resumed_from_its_checkpoint_trains_the_weights_of_the_run_never_stopped(
        precision, tmp_path, monkeypatch):
    """A whole compiled run: validation each epoch (eager), checkpoints written by a callback inside an
    epoch, and a run resumed from one that compiles again and goes on to the uninterrupted run's weights.
    Its checkpoint holds the eager model's keys: the compiled calls sit beside the modules, not in them.
    bf16-mixed too: with compile, the setting that doubles diffusion's GPU step (BENCHMARKS.md)."""
    counter = _counting_compiles(monkeypatch)
    whole, resumed, checkpoint = _whole_and_resumed(tmp_path, "trainer.accelerator=cpu", "evaluate=false",
                                                    f"trainer.precision={precision}")
    assert whole.metrics["train_speedups"] == "compile" and whole.metrics["train_precision"] == precision
    weights = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    assert list(weights) == list(whole.model.state_dict())
    # the second run compiled its own graph: reusing the first's, it recorded that it had trained eager
    assert resumed.metrics["train_steps"] == 12 and resumed.metrics["train_speedups"] == "compile"
    assert counter.dynamic == [False, False]
    resumed_weights, whole_weights = resumed.model.state_dict(), whole.model.state_dict()
    for name, value in whole_weights.items():
        assert torch.equal(resumed_weights[name], value), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU and GENBENCH_TEST_GPU=1")
def test_a_whole_bf16_run_with_cuda_graphs_validates_resumes_and_evaluates_on_a_gpu(tmp_path):
    """The test above on the GPU, in the setting that doubled diffusion's step (BENCHMARKS.md): inductor's
    kernels in CUDA graphs under bf16 autocast, eager validation between the compiled steps, a resumed run
    that starts at the checkpoint's step and compiles again, then the evaluation stage on the GPU. The
    weights are not compared: cuDNN's convolution backward is not deterministic."""
    torch._dynamo.reset()
    before = graphs_compiled()
    runs = _whole_and_resumed(tmp_path, "trainer.accelerator=gpu", "trainer.precision=bf16-mixed",
                              "performance.compile_mode=reduce-overhead")[:2]
    assert graphs_compiled() - before == 2  # one graph of the 128-image batch, in each run
    for result in runs:
        metrics = result.metrics
        assert metrics["train_steps"] == 12
        assert metrics["train_precision"] == "bf16-mixed"
        # no fused Adam: Lightning cannot clip its gradients in mixed precision
        assert metrics["train_speedups"] == "tf32,channels_last,compile(reduce-overhead)"
        assert metrics["sample_device"] == "cuda:0" and math.isfinite(metrics["nll_bpd"])
        assert all(bool(p.isfinite().all()) for p in result.model.parameters())


def test_no_compiled_call_is_made_under_the_flop_counter(tmp_path, monkeypatch):
    """The first training batch runs under FlopCounterMode (TrainingFlops). A compiled call there made torch
    2.11's dynamo mark ``nn.Module._call_impl`` as never to be compiled (pytorch/pytorch#190286), so every
    network of the run trained eager; the batch must call its networks eager, and the later ones compiled."""
    under_a_mode: list[bool] = []
    real = torch.compile
    torch._dynamo.reset()

    def compile_watched(fn, mode, dynamic):
        compiled = real(fn, backend="eager", dynamic=dynamic)

        def call(*args, **kwargs):
            under_a_mode.append(_get_current_dispatch_mode() is not None)
            return compiled(*args, **kwargs)
        return call

    monkeypatch.setattr(torch, "compile", compile_watched)
    graphs = graphs_compiled()
    result = _digits_run(tmp_path, *TINY_UNET, "trainer.max_steps=3", "performance.compile=true")
    assert result.metrics["train_flops_per_example"] > 0  # the first batch was counted
    assert under_a_mode == [False, False]  # the two batches after it, compiled; none under the counter
    assert graphs_compiled() > graphs  # and dynamo did compile them


def test_a_run_that_compiled_no_graph_does_not_record_compile(tmp_path, monkeypatch, caplog):
    """Where torch.compile runs its function eager (as torch 2.11 did after a call under the FLOP counter),
    the record leaves compile out and the log says why."""
    torch._dynamo.reset()
    monkeypatch.setattr(torch, "compile", lambda fn, mode, dynamic: fn)  # "compiled", yet never traced
    result = _digits_run(tmp_path, *TINY_UNET, "trainer.max_steps=2", "performance.compile=true")
    assert "compile" not in result.metrics["train_speedups"]
    assert "compiled no graph" in caplog.text


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU and GENBENCH_TEST_GPU=1")
def test_compile_with_cuda_graphs_trains_and_then_samples_eagerly_on_a_gpu(tmp_path):
    """The real path of the CPU test above: inductor and CUDA graphs (reduce-overhead) in the training steps,
    one graph per training batch size, then eager sampling from the trained weights."""
    torch._dynamo.reset()
    before = graphs_compiled()
    cfg = compose_train(["dataset=digits", "debug=default", "evaluate=false", "trainer.accelerator=gpu",
                         "trainer.max_epochs=null", "trainer.limit_train_batches=1.0", "trainer.max_steps=13",
                         *TINY_UNET, "performance.compile=true", "performance.compile_mode=reduce-overhead",
                         "performance.pin_memory=true",  # off by default: the pinned path is tested here
                         f"paths.output_dir={tmp_path}"])
    result = run(cfg, tmp_path)
    assert graphs_compiled() - before == 2
    assert (result.metrics["train_speedups"]
            == "tf32,channels_last,fused_optimizer,pin_memory,compile(reduce-overhead)")
    assert result.model.trainer.train_dataloader.pin_memory
    assert all(bool(p.isfinite().all()) for p in result.model.parameters())
    with torch.no_grad():
        assert result.model.eval().sample(5).shape == (5, *result.dm.data_shape)
    assert graphs_compiled() - before == 2


def test_a_gradient_penalty_trains_under_compile(tmp_path, monkeypatch):
    """WGAN-GP differentiates the critic twice, which torch.compile's autograd (AOTAutograd, as inductor
    uses it) refuses mid-training; the penalty's critic call runs eager (``models.compiled.eager``) and the
    run trains to the weights of an eager one."""
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, mode, dynamic: real(fn, backend="aot_eager",
                                                                        dynamic=dynamic))
    gan = ["model=gan", "model.loss=wgan-gp", "callbacks=none", "trainer.max_steps=6"]
    compiled = _digits_run(tmp_path / "compiled", *gan, "performance.compile=true")
    eager = _digits_run(tmp_path / "eager", *gan)
    for (name, p), q in zip(compiled.model.named_parameters(), eager.model.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-5), name


@pytest.mark.parametrize(("family", "networks"), [
    ("diffusion", ["net"]), ("gan", ["generator", "d_features", "d_head"]), ("flow", None)])
def test_the_networks_compiled_are_those_the_training_steps_call(family, networks):
    """Each trained parameter in exactly one compiled network; never the EMA copy (frozen), a parameterless
    noise schedule or a container that is never called (a flow's ModuleLists: their layers instead)."""
    model = instantiate(compose_train([f"model={family}", "dataset=digits"]).model, data_shape=(1, 8, 8),
                        num_classes=10)
    compiled = list(trained_networks(model))
    owned = [id(p) for network in compiled for p in network.parameters()]
    assert sorted(owned) == sorted(id(p) for p in model.parameters() if p.requires_grad)
    assert not any(isinstance(m, (torch.nn.ModuleList, torch.nn.ModuleDict)) for m in compiled)
    names = {id(m): name for name, m in model.named_modules()}
    if networks is None:  # the flow: its layers, more than dynamo's default limit of 8 graphs of one code
        assert len(compiled) > 8 and all(names[id(m)].startswith(("levels.", "splits.")) for m in compiled)
    else:
        assert [names[id(m)] for m in compiled] == networks


class _OwnLinear(torch.nn.Linear):
    """A layer with its forward in this file, as a family's network has."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T + self.bias


def test_every_network_gets_its_graphs_past_dynamos_limit_of_eight(monkeypatch):
    """All networks compile one code (nn.Module._call_impl), of which dynamo keeps 8 graphs by default and
    runs the rest eager: 12 layers of 12 shapes must get 12 graphs. The layers' forward is not torch's own:
    torch 2.11 traces no frame of torch's modules from there (``nn.Linear`` got no graph on the H100), and a
    family's networks are its own code."""
    counter = _counting_compiles(monkeypatch)
    with torch._dynamo.config.patch(recompile_limit=8):  # the default, whatever an earlier test left
        layers = torch.nn.ModuleList(_OwnLinear(4 + i, 5 + i) for i in range(12))
        assert len(compile_for_training(layers, "default")) == 12
        x = torch.randn(3, 4)
        for layer in layers:
            x = layer(x)
    assert len(counter.dynamic) == 12


def test_compile_reaches_the_layers_of_a_flow(tmp_path, monkeypatch):
    """A flow keeps its layers in ModuleLists, which are never called themselves: compiling the lists (as
    compile did before) compiled nothing, though the record said compile."""
    counter = _counting_compiles(monkeypatch)
    _digits_run(tmp_path, "model=flow", "callbacks=none", "trainer.max_steps=3", "performance.compile=true")
    assert counter.dynamic


def test_auto_pins_the_training_batches_of_a_gpu_run_and_never_of_a_cpu_run_and_the_default_none():
    """A batch's copy from pageable memory to the GPU may first wait for every queued kernel (CUDA's
    documented behaviour), and the GPU then idles while the host prepares the next step. ``auto`` pins the
    data module's training batches for a CUDA device (the trainer is a stand-in: this machine may have no
    GPU), and not on a CPU, even when asked: nothing copies them there, and the record must not say it.
    Nor under ``auto`` where persistent workers meet reloaded loaders (Lightning: unstable). Validation and
    test batches stay unpinned, as ``eval.py`` has them. The default pins nothing: on an H200 pinned batches
    slowed genbench's step (BENCHMARKS.md)."""
    cfg = compose_train(["dataset=digits"])
    plain = instantiate(cfg.dataset)
    workers = instantiate(compose_train(["dataset=digits", "dataset.num_workers=2"]).dataset)
    default = str(cfg.performance.pin_memory).lower()
    cases = [("cuda", default, plain, 0, False), ("cuda", "auto", plain, 0, True),
             ("cpu", "auto", plain, 0, False), ("cpu", "true", plain, 0, False),
             ("cuda", "false", plain, 0, False), ("cuda", "auto", workers, 0, True),
             ("cuda", "auto", workers, 1, False), ("cuda", "true", workers, 1, True),
             ("cuda", "auto", plain, 1, True)]
    for device, setting, dm, reloads, pinned in cases:
        dm.setup()
        trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)),
                                  precision="32-true", gradient_clip_val=None, datamodule=dm,
                                  reload_dataloaders_every_n_epochs=reloads)
        model = torch.nn.Linear(2, 2)
        callback = Performance(PerformanceConfig(tf32="false", channels_last="false", pin_memory=setting))
        callback.setup(trainer, model, "fit")
        callback.teardown(trainer, model, "fit")  # torch's TF32 flags as they were
        case = (device, setting, dm.hp.num_workers, reloads)
        assert callback.applied["pin_memory"] is pinned and dm.pin_memory is pinned, case
        assert dm.train_dataloader().pin_memory is pinned, case
        assert not dm.val_dataloader().pin_memory and not dm.test_dataloader().pin_memory, case


def test_the_training_loader_lightning_makes_takes_the_switch(tmp_path, monkeypatch):
    """The switch acts in the callbacks' setup, which must come before Lightning asks for the loader: the
    loader the run trained from is pinned (forced on here: this machine may have no GPU)."""
    monkeypatch.setattr("genbench.performance.pin_memory_acts", lambda setting, device, trainer: True)
    result = _digits_run(tmp_path)
    assert result.model.trainer.train_dataloader.pin_memory
    assert "pin_memory" in result.metrics["train_speedups"]


@pytest.mark.parametrize("precision, clip, fused", [("bf16-mixed", 1.0, False), ("bf16-mixed", None, True),
                                                    ("32-true", 1.0, True)])
def test_auto_leaves_the_fused_adam_out_where_lightning_cannot_clip_its_gradients(precision, clip, fused):
    # On the H200 (BENCHMARKS.md) bf16-mixed with diffusion_cifar10's gradient clipping failed in Lightning's
    # mixed-precision plugin: "Adam ... does not allow for gradient clipping ... a 'fused' optimizer?"
    gpu = SimpleNamespace(root_device=torch.device("cuda", 0))  # what auto decides on for a GPU run
    trainer = SimpleNamespace(strategy=gpu, precision=precision, gradient_clip_val=clip)
    model = torch.nn.Linear(2, 2)
    callback = Performance(PerformanceConfig(tf32="false", channels_last="false"))
    callback.setup(trainer, model, "fit")
    callback.teardown(trainer, model, "fit")  # torch's TF32 flags as they were
    assert callback.applied["fused_optimizer"] is fused and model.fused_optimizer is fused


def test_a_fused_adam_asked_for_where_it_cannot_clip_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="fused_optimizer=true cannot train with .*precision=bf16-mixed"):
        _digits_run(tmp_path, "performance.fused_optimizer=true", "trainer.precision=bf16-mixed",
                    "trainer.gradient_clip_val=1.0")


GPU = pytest.param("gpu", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                   reason="needs a CUDA GPU and GENBENCH_TEST_GPU=1"))


@pytest.mark.parametrize("accelerator", ["cpu", GPU])
@pytest.mark.parametrize("saved, resumed", [("false", "true"), ("true", "false")])
def test_a_resumed_run_steps_with_its_own_optimizer_implementation(tmp_path, accelerator, saved, resumed):
    """Adam's load_state_dict put the checkpoint's ``fused`` back: a run resumed with fused_optimizer=true
    from a run without it stepped with the loop Adam while its record said fused_optimizer, and the
    converse. On a GPU the step counts also move: a fused Adam keeps them on the device, the others on
    the CPU (there a count on the device would be read back in every step)."""
    switches = ("trainer.accelerator=" + accelerator, "performance.channels_last=false")
    _digits_run(tmp_path / "first", *switches, f"performance.fused_optimizer={saved}", "trainer.max_steps=3")
    again = _digits_run(tmp_path / "again", *switches, f"performance.fused_optimizer={resumed}",
                        f"ckpt_path={tmp_path / 'first' / 'checkpoints' / 'last.ckpt'}")
    fused = resumed == "true"
    assert ("fused_optimizer" in again.metrics["train_speedups"]) is fused
    optimizer = again.model.trainer.optimizers[0]
    assert [bool(group["fused"]) for group in optimizer.param_groups] == [fused] * len(optimizer.param_groups)
    steps = [state["step"] for state in optimizer.state.values()]
    assert steps and all(step.item() == 6 for step in steps)  # 3 restored, 3 taken after the resume
    device = optimizer.param_groups[0]["params"][0].device if fused else torch.device("cpu")
    assert all(step.device == device for step in steps)


def test_a_fused_optimizer_is_recorded_only_where_the_class_has_one(tmp_path):
    """performance.fused_optimizer=true asks; Adam has a fused kernel, RMSprop none: its run says so."""
    adam = _digits_run(tmp_path / "adam", "performance.fused_optimizer=true")
    assert adam.metrics["train_speedups"] == "fused_optimizer"
    assert adam.model.trainer.optimizers[0].defaults["fused"]
    rmsprop = _digits_run(tmp_path / "rmsprop", "performance.fused_optimizer=true",
                          "model.optimizer._target_=torch.optim.RMSprop")
    assert isinstance(rmsprop.model.trainer.optimizers[0], torch.optim.RMSprop)
    assert rmsprop.metrics["train_speedups"] == "none"


class HostReads(TorchFunctionMode):
    """Records where a tensor's value is read on the host (``item``, ``bool``, ``tolist``, ``cpu``, a boolean
    mask's indices...): on a GPU each such read waits for every kernel queued before it. The expected reads
    are left out: torch.optim's (its step counts live on the host), the data loader's (its shuffling and
    seeds) and the divergence guard's ``_check`` (a host copy it made one step earlier). The rest are
    listed by their genbench call sites. A ``.to(device)`` is not watched: on a CPU it cannot be told from
    a copy to the GPU."""

    READS = {"item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__", "nonzero",
             "argwhere", "masked_select", "unique", "equal", "allclose"}

    def __init__(self) -> None:
        super().__init__()
        self.sites: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        mask = (name == "__getitem__" and len(args) > 1 and isinstance(args[1], torch.Tensor)
                and args[1].dtype == torch.bool)
        if name in self.READS or mask:
            stack = traceback.extract_stack()[:-1]
            caller = stack[-1].filename.replace("\\", "/")
            ours = [f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in stack
                    if "/genbench/" in f.filename]
            guard = bool(ours) and ours[-1].startswith("callbacks.py") and ours[-1].endswith(" _check")
            host_side = "/torch/optim/" in caller or "/torch/utils/data/" in caller  # CPU tensors by design
            if not host_side and not guard:
                self.sites.append(f"{name} at {' <- '.join(reversed(ours)) or caller}")
        return func(*args, **(kwargs or {}))


class ReadsAfterWarmup(pl.Callback):
    """Watches each training batch after the first few (a data-dependent init may read its data once), from
    its start hook until the next batch starts (so every callback's end hook is in), or validation or the
    epoch's end comes first. Per watched batch: the reads, and whether the loggers wrote on it."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.reads, self.batches, self.watching = warmup, HostReads(), 0, False
        self.per_batch: list[list[str]] = []
        self.logged: list[bool] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._close()
        self.batches += 1
        if self.batches > self.warmup:
            self.reads.__enter__()
            self.watching = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.watching:
            self.logged.append(logs_this_step(trainer))

    def on_validation_start(self, trainer, pl_module) -> None:
        self._close()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._close()

    def on_train_end(self, trainer, pl_module) -> None:
        self._close()

    def _close(self) -> None:
        if self.watching:
            self.reads.__exit__(None, None, None)
            self.per_batch.append(self.reads.sites)
            self.reads.sites, self.watching = [], False

    @property
    def sites(self) -> list[str]:
        return [site for sites in self.per_batch for site in sites]


def test_the_progress_bar_reads_the_loss_only_when_one_is_logged(tmp_path, monkeypatch):
    """A terminal's progress bar shows the last logged loss: it read that GPU value at every step, so every
    step waited for the GPU; now it reads a new value once, on the steps the loggers write."""
    watch = ReadsAfterWarmup(warmup=3)
    monkeypatch.setattr("genbench.train.interactive", lambda: True)
    cfg = compose_train(["model=vae", "dataset=digits", "logger=none", "evaluate=false",
                         "trainer.max_steps=11", "trainer.log_every_n_steps=4", "trainer.accelerator=cpu",
                         f"paths.output_dir={tmp_path}"])
    run(cfg, tmp_path, callbacks=[watch])
    assert watch.logged.count(True) == 2  # steps 8 and 12 of the 8 watched
    assert [bool(sites) for sites in watch.per_batch] == watch.logged, watch.per_batch


CONDITIONAL = [("vae", "model.conditional=true"), ("gan", "model.conditional=true model.loss=wgan-gp"),
               ("diffusion", "model.conditional=true"), ("autoregressive", "model.conditional=true")]


@pytest.mark.parametrize(("family", "options"), [(family, "") for family in FAMILIES] + CONDITIONAL)
def test_a_training_step_never_waits_for_the_device(family, options, tmp_path):
    """A GPU step runs ahead of its kernels unless the host reads a device value; a read in every step
    (the flow's ActNorm read its init flag: 48 per CIFAR-10 step) serializes host and GPU. Loggers read
    their values only every ``log_every_n_steps``. Label-conditional models too (labels dropped for
    classifier-free guidance, a projection discriminator with its gradient penalty)."""
    watch = ReadsAfterWarmup(warmup=3)
    cfg = compose_train([f"model={family}", *options.split(), "dataset=digits", "logger=none",
                         "evaluate=false", "trainer.max_steps=16", "trainer.log_every_n_steps=1000",
                         "trainer.accelerator=cpu", f"paths.output_dir={tmp_path}"])
    run(cfg, tmp_path, callbacks=[watch])
    assert len(watch.per_batch) >= 5  # batches (a GAN's batch is two of the 16 optimizer steps)
    assert not watch.sites, "host reads of device values:\n" + "\n".join(watch.sites)


def test_a_fused_adam_is_not_chosen_where_the_family_clips_its_own_gradients_in_mixed_precision():
    """The flow clips at model.grad_clip itself: with bf16-mixed on a GPU the fused Adam made Lightning stop
    the run at its first step ("Adam does not allow for gradient clipping")."""
    import types

    from genbench.models.flow import Flow
    from genbench.models.vae import VAE
    from genbench.performance import fused_can_clip

    mixed = types.SimpleNamespace(precision="bf16-mixed", gradient_clip_val=None)
    plain = types.SimpleNamespace(precision="32-true", gradient_clip_val=None)
    flow, unclipped, vae = Flow((2,)), Flow((2,), grad_clip=0.0), VAE((2,))
    assert flow.clips_gradients() and not fused_can_clip(mixed, flow)
    assert fused_can_clip(plain, flow) and fused_can_clip(mixed, unclipped) and fused_can_clip(mixed, vae)


def test_the_optimizers_own_implementation_choice_wins_over_the_fused_switch():
    """+model.optimizer.foreach=true with the switch on failed ("fused and foreach cannot be True
    together"); +model.optimizer.fused=false ran fused."""
    from genbench.models.optim import adam_node, build_optimizer

    params = [torch.nn.Parameter(torch.zeros(2))]
    assert build_optimizer(adam_node(), params, fused=True).defaults["fused"] is True
    foreach = build_optimizer({**adam_node(), "foreach": True}, params, fused=True).defaults
    assert foreach["foreach"] is True and not foreach["fused"]
    assert not build_optimizer({**adam_node(), "fused": False}, params, fused=True).defaults["fused"]


def test_a_channels_last_batch_draws_the_same_noise_as_a_contiguous_one():
    """randn_like of an NHWC tensor draws other numbers from the same seed: with 3 channels a run with
    channels_last was another random run (1-channel data hid it: both layouts are one memory order).
    Measured before: training losses 1.000329 and 0.996628 for the same diffusion model, batch and seed."""
    from genbench.models.diffusion import Diffusion
    from genbench.models.flow_matching import FlowMatching

    torch.manual_seed(0)
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    small = dict(unet_channels=8, channel_mults=[1, 2], num_res_blocks=1, attention=False, backbone="unet")
    diffusion = Diffusion((3, 8, 8), timesteps=20, sampling_steps=5, **small)
    for model in (diffusion, FlowMatching((3, 8, 8), **small)):
        model.log_training = lambda values, batch_size: None
        losses = []
        for batch in (x, x.contiguous(memory_format=torch.channels_last)):
            torch.manual_seed(1)
            losses.append(model.training_step((batch, torch.zeros(4, dtype=torch.long)), 0).item())
        assert losses[0] == pytest.approx(losses[1], rel=1e-6), (model.family, losses)


def test_the_evaluation_runs_in_the_switchs_layout_after_training_and_from_a_checkpoint(tmp_path,
                                                                                         monkeypatch):
    """A model that trained in NHWC was evaluated in NHWC, and eval.py's model of the same weights in NCHW:
    other kernels, other rounding. Both now take the layout the switch gives on the device."""
    layouts, real_evaluate = [], genbench_train.evaluate

    def evaluate(model, *args, **kwargs):
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
        layouts.append(conv.weight.is_contiguous(memory_format=torch.channels_last))
        return real_evaluate(model, *args, **kwargs)

    monkeypatch.setattr(genbench_train, "evaluate", evaluate)
    common = ["model=diffusion", "dataset=digits", "debug=default", "trainer.accelerator=cpu",
              "model.sampling_steps=2", "model.bound_timesteps=2", "eval.num_samples=16", "eval.num_real=16",
              "eval.inception=false"]
    for channels_last in (True, False):
        out = tmp_path / str(channels_last)
        switch = f"performance.channels_last={str(channels_last).lower()}"
        trained = run(compose_train([*common, switch, f"paths.output_dir={out}"]), out)
        again = run(compose_train([*common, switch, "train=false", f"ckpt_path={out}/checkpoints/last.ckpt",
                                   f"paths.output_dir={out}/eval"]), out / "eval")
        assert trained.metrics["eval_channels_last"] is again.metrics["eval_channels_last"] is channels_last
    assert layouts == [True, True, False, False]


@pytest.mark.parametrize("family", ["flow", "ebm"])
def test_validation_scores_the_likelihood_in_float32_under_bf16_mixed(family):
    """Lightning runs validation under the trainer's autocast: the logged val/nll_nats was a bf16 number
    (the flow: 2.7438 against float32's 2.7347 here; the recorded test NLL was always float32). The EBM
    integrates its log Z once per pass, in an epoch-start hook, which Lightning runs outside the autocast
    (in bf16 this log Z would be 3.9688 against 3.9409)."""
    from torch.utils.data import DataLoader, TensorDataset

    from genbench.models.ebm import EBM
    from genbench.models.flow import Flow

    torch.manual_seed(0)
    model, x = {"flow": Flow, "ebm": EBM}[family]((2,)), torch.randn(64, 2)
    if family == "ebm":
        model.fit_data_stats(x)
    nll = {}
    for precision in ("32-true", "bf16-mixed"):
        trainer = pl.Trainer(precision=precision, accelerator="cpu", logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False)
        data = DataLoader(TensorDataset(x, torch.zeros(64)), batch_size=32)
        nll[precision] = trainer.validate(model, data, verbose=False)[0]["val/nll_nats"]
    assert nll["bf16-mixed"] == pytest.approx(nll["32-true"], rel=1e-6), nll
