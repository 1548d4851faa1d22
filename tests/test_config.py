"""Config composition for every dataset, and wrong values rejected with the key named."""

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import hydra
import pytest
import pytorch_lightning as pl
import torch
import yaml
from hydra.errors import ConfigCompositionException

from genbench.config import ExtrasSchema, presets_for_other_models, validate
from genbench.errors import ConfigError
from genbench.evaluation.stage import EvalConfig
from genbench.models.base import GenerativeModel
from genbench.models.registry import families
from genbench.performance import PerformanceConfig
from genbench.results import read_record
from genbench.schema import Schema, check_params
from genbench.train import instantiate
from tests.helpers import DATASETS, ROOT, compose_train, in_a_hydra_run, train_py


def test_the_suites_runs_never_use_the_repositorys_own_data_outputs_cache_or_dataset_classifiers():
    """A user's feature_nets/ (``scripts/train_feature_net.py dataset=digits``) made 12 tests fail and the
    suite wrote into their cache/: runs in the test processes compose under a fresh root (conftest)."""
    paths = compose_train([]).paths
    for key in ("data_dir", "log_dir", "cache_dir", "feature_net_dir"):
        assert ROOT.resolve() not in Path(paths[key]).resolve().parents, (key, paths[key])


def test_every_dataset_config_is_present():
    expected = {"gaussians8", "gaussians25", "moons", "swissroll", "checkerboard", "rings", "digits", "mnist",
                "fashion_mnist", "cifar10"}
    assert expected <= set(DATASETS)


@pytest.mark.parametrize("dataset", DATASETS)
def test_vae_composes_and_builds_on_every_dataset(dataset):
    cfg = compose_train([f"dataset={dataset}", "model=vae"])
    validate(cfg)
    dm = hydra.utils.instantiate(cfg.dataset, _convert_="all")  # reads no files until setup()
    model = hydra.utils.instantiate(cfg.model, data_shape=dm.data_shape, num_classes=dm.num_classes,
                                    _convert_="all")
    assert model.data_shape == dm.data_shape
    assert model.likelihood_kind == "bound" and model.has_latent
    assert model.sample(3).shape == (3, *dm.data_shape)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.latent_dim=0", "model.latent_dim"),
        ("model.optimizer.lr=-0.001", "model.optimizer"),
        ("dataset.batch_size=0", "dataset.batch_size"),
        ("model.latent_dim=many", "model.latent_dim"),
        ("model.hidden_dims=[64,0]", "model.hidden_dims"),
        ("model.sample_mode=median", "model.sample_mode"),
        ("+model.latnet_dim=4", "model.latnet_dim"),
        ("seed=-3", "seed"),
        ("eval.speed_repeats=0", "eval.speed_repeats"),
        ("budget_steps={vae: 0}", "budget_steps"),
        ("trainer.max_steps=0", "trainer.max_steps"),  # would record an untrained model as ok
        ("trainer.max_steps=abc", "trainer.max_steps"),
        ("trainer.max_epochs=0", "trainer.max_epochs"),  # no epoch: untrained, as max_steps=0
        ("trainer.max_epochs=1.5", "trainer.max_epochs"),
        ("ckpt_path=/no/such.ckpt", "ckpt_path=/no/such.ckpt: no such file"),
        ("ckpt_path=/", "ckpt_path=/: a folder, not a file"),
        # the k-NN metrics need k + 1 points: torch's kthvalue failed the run after its training
        ("eval.num_samples=3", "eval.num_samples=3: must be > eval.manifold_k=3"),
        ("eval.num_real=2", "eval.num_real=2: must be > eval.manifold_k=3"),
        ("eval.plot_samples_vector=3", "eval.plot_samples_vector=3: must be >= 4"),
    ],
)
def test_wrong_values_are_rejected_naming_the_key(override, key):
    cfg = compose_train([override])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(cfg)


@pytest.mark.parametrize(("override", "message"), [
    ("tags=abc", "bad config value for 'tags': 'abc' is not a list: give one in brackets (tags=[...])"),
    ("model.hidden_dims=64",
     "bad config value for 'model.hidden_dims': 64 is not a list: give one in brackets "
     "(model.hidden_dims=[...])"),
    ("eval.num_samples=many",  # OmegaConf's own lines after the first (full_key, object_type) left out
     "bad config value for 'eval.num_samples': Value 'many' of type 'str' could not be converted to Integer"),
    ("extras.print_config=abc",
     "bad config value for 'extras.print_config': 'abc' is not a bool: give extras.print_config=true or "
     "extras.print_config=false"),
])
def test_a_value_of_the_wrong_type_is_named_with_the_type_it_needs(override, message):
    with pytest.raises(ConfigError) as error:
        validate(compose_train([override]))
    assert str(error.value) == message


@pytest.mark.parametrize(("override", "named"), [
    ("model.beta=nan", "model.beta=nan"),                        # bounded: was "must be > 0", misleading
    ("model.min_log_scale=-inf", "model.min_log_scale=-inf"),    # unbounded
    ("model.optimizer.lr=inf", "model.optimizer=.*lr=inf"),      # Adam takes an infinite rate
    ("+model.optimizer.betas=[0.9,nan]", "betas=\\[0.9, nan\\]"),  # an item of an optimizer's list
    ("eval.speed_max_seconds=inf", "eval.speed_max_seconds=inf"),  # no cap is null, as documented
])
def test_nan_or_inf_in_an_option_is_refused_before_anything_trains(override, named):
    """They passed the checks and surfaced as a diverged run, which the matrix counts against the family."""
    with pytest.raises(ConfigError, match=f"{named}: must be a finite number, not NaN or inf"):
        validate(compose_train(["model=vae", override]))


@pytest.mark.parametrize(("override", "message"), [
    ("+trainer.max_stepz=5", "'trainer.max_stepz': pytorch_lightning.Trainer takes no max_stepz; did you "
                             "mean trainer.max_steps?"),
    ("+callbacks.quality_curve.first_stp=3", "'callbacks.quality_curve.first_stp'.*did you mean "
                                             "callbacks.quality_curve.first_step?"),
    ("+logger.csv.foo=1", "'logger.csv.foo': pytorch_lightning.loggers.CSVLogger takes no foo; valid keys"),
])
def test_a_key_the_trainer_a_callback_or_a_logger_does_not_take_is_named_before_anything_runs(override,
                                                                                             message):
    """Hydra would raise an InstantiationException with a traceback once the run had started."""
    with pytest.raises(ConfigError, match=f"unknown config key {message}"):
        validate(compose_train(["logger=csv", override]))


@pytest.mark.parametrize("override", ["trainer.gradient_clip_val=1.0", "+trainer.accumulate_grad_batches=2"])
def test_lightnings_clipping_or_accumulation_for_a_family_that_steps_its_own_optimizers_is_refused(override):
    """Lightning applies neither to manual optimization (the GAN's), and refused them at trainer.fit, with a
    traceback; the families Lightning steps take them, and the GAN takes their neutral values."""
    key, value = override.lstrip("+").split("=")
    with pytest.raises(ConfigError, match=rf"^{key}={value}: model=gan steps its own optimizers in each "
                                          rf"training step \(Lightning's manual optimization\), to which "
                                          rf"Lightning does not apply {key}: leave it out"):
        validate(compose_train(["model=gan", override]))
    validate(compose_train(["model=vae", override]))
    neutral = ["model=gan", "trainer.gradient_clip_val=0", "+trainer.accumulate_grad_batches=1"]
    validate(compose_train(neutral))


def test_unknown_key_without_plus_fails_at_composition_naming_it():
    with pytest.raises(ConfigCompositionException, match="latnet_dim"):
        compose_train(["model.latnet_dim=4"])


def test_a_bad_key_a_preset_set_names_the_preset_and_the_model_it_is_for(tmp_path):
    """experiment=vae_mnist_test_files model=flow: the preset's model.latent_dim was refused with "Fix the
    spelling or remove it", of a key the command line never gave. A key the command line gave is not
    blamed on the preset."""
    train_py(["experiment=vae_mnist_test_files", "model=flow", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    error = read_record(tmp_path / "run" / "metrics.json")["error"]
    assert "unknown config key 'model.latent_dim'" in error and (
        "(model.latent_dim is not on the command line: experiment=vae_mnist_test_files sets it, a preset for "
        "model=vae, not model=flow: run the preset with its own model, or leave experiment= out") in error
    with (in_a_hydra_run(["experiment=vae_mnist_test_files", "+model.latnt_dim=3"]) as cfg,
          pytest.raises(ConfigError) as typed):
        validate(cfg)
    assert "unknown config key 'model.latnt_dim'" in str(typed.value)
    assert "not on the command line" not in str(typed.value)


def test_hydra_job_chdir_is_refused_before_any_path_is_read():
    """With it the job started inside its run directory, where paths.root_dir=. held no data, no feature
    nets and no cache: a run on digits recorded its feature-net metrics unavailable, with a command that
    trains the net into the run directory."""
    refused = r"hydra.job.chdir=true is not supported: .*\(paths.root_dir=\.: data/, feature_nets/, cache/"
    with (in_a_hydra_run(["hydra.job.chdir=true", "ckpt_path=outputs/no_such.ckpt"]) as cfg,
          pytest.raises(ConfigError, match=refused)):
        validate(cfg)
    with in_a_hydra_run([]) as cfg:
        validate(cfg)  # Hydra's own default, chdir=false (configs/hydra/default.yaml)


def test_a_preset_for_another_model_names_the_options_it_sets_on_the_runs_model(tmp_path):
    """``experiment=<a GAN preset> model=vae`` gave the VAE the preset's latent_dim without a word; options
    equal to the run's model's own defaults, or typed on the command line, are not named."""
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "gan_small.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /model: gan\nmodel:\n  latent_dim: 4\n  beta: 1.0\n"
        "  optimizer: {lr: 0.0005}\n")
    preset = [f"hydra.searchpath=[file://{tmp_path}]", "experiment=gan_small", "model=vae"]
    train_py([*preset, "trainer=debug", "logger=none", "evaluate=false", f"hydra.run.dir={tmp_path / 'run'}"],
             tmp_path)
    assert ("experiment=gan_small is a preset for model=gan; this run's model=vae takes its model options "
            "model.latent_dim=4, model.optimizer={'lr': 0.0005}, not vae's own defaults (leave experiment= "
            "out for those)") in (tmp_path / "run" / "train.log").read_text()  # beta 1.0 is the VAE's own
    assert read_record(tmp_path / "run" / "metrics.json")["status"] == "ok"
    with in_a_hydra_run([*preset, "model.latent_dim=4", "model.optimizer.lr=0.0005"]):
        assert presets_for_other_models() == ""
    with in_a_hydra_run(preset):  # the same lookup in this process: it finds the preset's file
        assert "experiment=gan_small is a preset for model=gan" in presets_for_other_models()


def test_unknown_option_fails_listing_the_available_ones():
    with pytest.raises(ConfigCompositionException, match=r"(?s)mnisst.*Available options.*mnist"):
        compose_train(["dataset=mnisst"])


@pytest.mark.parametrize("family", ["vae", "gan", "autoregressive", "diffusion"])
def test_one_conditional_option_off_by_default_for_every_family_that_takes_labels(family, tmp_path):
    """On labelled digits every family is unconditional unless model.conditional=true, so the landscapes
    compare like with like; asked for on data without labels, it is a config error."""
    def build(*overrides: str):
        cfg = compose_train([f"model={family}", *overrides])
        dm = hydra.utils.instantiate(cfg.dataset, _convert_="all")
        return instantiate(cfg.model, data_shape=dm.data_shape, num_classes=dm.num_classes)

    assert not build("dataset=digits").is_conditional
    conditional = build("dataset=digits", "model.conditional=true")
    assert conditional.is_conditional and conditional.capabilities()["is_conditional"]
    with pytest.raises(ConfigError, match="model.conditional=true, but the dataset has no labels"):
        build("dataset=moons", "model.conditional=true")


@pytest.mark.parametrize("family", ["flow", "ebm"])
def test_families_without_labels_have_no_conditional_option(family):
    with pytest.raises(ConfigError, match="unknown config key 'model.conditional'"):
        validate(compose_train([f"model={family}", "dataset=digits", "+model.conditional=true"]))


@pytest.mark.parametrize("family", sorted(families()))
def test_every_family_samples_with_the_labels_it_can_condition_on_and_refuses_others(family):
    """sample(n, labels) asks for p(x | y): an unconditional model cannot give it and says so (it used to
    ignore them in four families), and a conditional one needs one label per sample."""
    def build(*overrides: str) -> GenerativeModel:
        cfg = compose_train([f"model={family}", "dataset=digits", *overrides])
        dm = hydra.utils.instantiate(cfg.dataset, _convert_="all")
        return instantiate(cfg.model, data_shape=dm.data_shape, num_classes=dm.num_classes).eval()

    labels = torch.tensor([3, 7])
    with pytest.raises(ValueError, match=f"this {family} model generates without classes.*sample without"):
        build().sample(2, labels)
    if families()[family].supports_labels:
        conditional = build("model.conditional=true")
        with pytest.raises(ValueError, match="2 labels for 3 samples"):
            conditional.sample(3, labels)
        assert conditional.sampling_labels(2, labels).tolist() == [3, 7]
        assert len(conditional.sampling_labels(5, None, draw=True)) == 5


def test_every_model_yaml_lists_its_schema_at_its_defaults(tmp_path, script):
    """The dataclass holds each default; the YAML is a checked copy (scripts/sync_model_configs.py)."""
    sync = script("sync_model_configs")

    assert sync.differing() == []
    broken = tmp_path / "vae.yaml"  # a changed default, a missing option and an unknown one
    text = (ROOT / "configs" / "model" / "vae.yaml").read_text()
    broken.write_text(text.replace("latent_dim: 8", "latent_dim: 9").replace("iwae_k: 64\n", "")
                      + "extra: 1\n")
    assert sync.differing(tmp_path) == [broken]
    broken.write_text(sync.render(broken))
    assert sync.differing(tmp_path) == []
    repaired = broken.read_text()
    assert "latent_dim: 8" in repaired and "iwae_k: 64" in repaired and "extra" not in repaired
    assert repaired.splitlines()[:2] == text.splitlines()[:2]  # the header and _target_ kept


@pytest.mark.parametrize(("group", "schema"), [("eval", EvalConfig), ("performance", PerformanceConfig),
                                             ("extras", ExtrasSchema)])
def test_a_groups_default_yaml_lists_its_schema_at_its_defaults(group, schema):
    """The dataclass holds each default; ``configs/<group>/default.yaml`` lists the same options at the same
    values (an interpolation, such as ``${seed}``, stands for a value that lives elsewhere)."""
    listed = yaml.safe_load((ROOT / "configs" / group / "default.yaml").read_text())
    assert set(listed) == {f.name for f in dataclasses.fields(schema)}
    default = schema()
    for key, value in listed.items():
        if not (isinstance(value, str) and value.startswith("${")):
            assert getattr(check_params(schema, {key: value}, group), key) == getattr(default, key), key


@pytest.mark.parametrize("family", families())
def test_every_family_takes_its_optimizer_and_schedule_from_config(family):
    """``model.optimizer`` / ``model.scheduler`` are Hydra partials the model builds: any class, checked
    when the config is validated, with the option at fault named."""
    cfg = compose_train([f"model={family}", "dataset=moons"])
    cfg.model.optimizer = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.01, "momentum": 0.9}
    cfg.model.scheduler = {"_target_": "torch.optim.lr_scheduler.StepLR", "_partial_": True, "step_size": 5}
    validate(cfg)
    dm = hydra.utils.instantiate(cfg.dataset, _convert_="all")
    model = instantiate(cfg.model, data_shape=dm.data_shape, num_classes=dm.num_classes)
    model.trainer = pl.Trainer(max_steps=20, logger=False, accelerator="cpu")
    setup = model.configure_optimizers()
    for part in setup if isinstance(setup, list) else [setup]:
        assert isinstance(part["optimizer"], torch.optim.SGD)
        assert part["optimizer"].defaults["momentum"] == 0.9
        assert isinstance(part["lr_scheduler"], torch.optim.lr_scheduler.StepLR) or \
            isinstance(part["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.StepLR)

    def fails(*overrides: str) -> str:
        with pytest.raises(ConfigError) as error:
            validate(compose_train([f"model={family}", *overrides]))
        return str(error.value)

    assert "model.optimizer=" in fails("model.optimizer.lr=-1") and "Invalid learning rate" in fails(
        "model.optimizer.lr=-1")
    message = fails("model.optimizer._target_=torch.optim.SGD", "+model.optimizer.amsgrad=true")
    assert "SGD takes no option" in message and "'amsgrad'" in message and "~model.optimizer." in message
    cfg.model.scheduler = {"_target_": "torch.optim.lr_scheduler.StepLR", "step_size": 5}
    with pytest.raises(ConfigError, match=r"model\.scheduler=.*needs _partial_: true"):
        validate(cfg)


def test_a_family_whose_schema_has_no_optimizer_fails_at_once():
    """A new family's schema extends OptimizationConfig; one that does not is told so when it is built, not
    when training reaches configure_optimizers."""
    @dataclass
    class BareConfig(Schema):
        width: int = 4

    class Bare(GenerativeModel):  # no ``family`` attribute: not registered as one
        config_schema = BareConfig

    with pytest.raises(TypeError, match=r"Bare.config_schema must extend .*OptimizationConfig"):
        Bare((2,))


@pytest.mark.parametrize("experiment", ["landscape_toy", "landscape_digits"])
def test_a_landscape_runs_on_any_launcher_named_on_the_command_line(experiment):
    """Two joblib jobs by default; the README's hydra/launcher=submitit_local failed to compose when the
    experiment set hydra.launcher.n_jobs, a key submitit's launcher does not have."""
    from hydra import compose, initialize_config_dir

    from tests.helpers import CONFIG_DIR

    launchers = {}
    for choice in ([], ["hydra/launcher=submitit_local"]):
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(config_name="train", overrides=[f"experiment={experiment}", *choice],
                          return_hydra_config=True)
        launchers[tuple(choice)] = cfg.hydra.launcher
    assert launchers[()]._target_.endswith("SurvivingJoblibLauncher") and launchers[()].n_jobs == 2
    submitit = launchers[("hydra/launcher=submitit_local",)]
    assert submitit._target_.endswith("LocalLauncher") and "n_jobs" not in submitit


@pytest.mark.parametrize("experiment", ["diffusion_cifar10", "flow_matching_cifar10"])
def test_the_costly_cifar10_evaluations_score_1024_test_images_unless_a_debug_run_limits_them(experiment):
    """eval=many_network_calls: 8 test batches of 128 and 1 + 3 timed calls; a debug run's
    trainer.limit_test_batches still wins, as it does in eval/default.yaml; null scores the whole split."""
    cfg = compose_train([f"experiment={experiment}"])
    validate(cfg)
    ev = cfg.eval
    assert (ev.max_test_batches * cfg.dataset.batch_size, ev.speed_warmup, ev.speed_repeats) == (1024, 1, 3)
    debug = compose_train([f"experiment={experiment}", "debug=default"])
    assert debug.eval.max_test_batches == debug.trainer.limit_test_batches == 2
    whole = compose_train([f"experiment={experiment}", "eval.max_test_batches=null"])
    assert whole.eval.max_test_batches is None
    assert compose_train(["experiment=gan_cifar10"]).eval.max_test_batches is None
