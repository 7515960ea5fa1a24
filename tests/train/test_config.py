"""Tests of the typed training configuration: defaults ← YAML ← key=value overrides."""

from __future__ import annotations


import pytest
import yaml

from defocus.errors import DefocusError, InputError
from defocus.optics.forward import ForwardSpec
from defocus.train.config import (
    TrainConfig,
    config_from_dict,
    dump_config,
    load_config,
    loss_spec_for,
    parse_override,
)



def test_defaults_follow_the_paper_where_it_matters():
    cfg = load_config()
    assert isinstance(cfg, TrainConfig)
    assert cfg.optim.lr == 5e-4 and cfg.optim.weight_decay == 5e-4
    assert cfg.loss.weights == {"reconstruction": 1e3, "aif_vs_coarse": 1e2, "aif_sharpness": 10.0,
                                "depth_smoothness": 10.0}
    assert cfg.data.n_typical == 5
    assert cfg.data.presets == ["nyuv2", "defocusnet"]
    assert cfg.loss.forward == ForwardSpec("gaussian", "srgb", "layered", 1.5, False, 1.0)
    assert cfg.protocol_loss == {"paper": {"psf": "gaussian", "light": "srgb", "blur_scale": 1.0},
                                 "realistic": {"psf": "disk", "light": "linear", "blur_scale": 1.0}}
    assert loss_spec_for(cfg, "paper") == ForwardSpec("gaussian", "srgb")
    assert loss_spec_for(cfg, "realistic") == ForwardSpec("disk", "linear")
    # Defaults are fresh objects: mutating one config never leaks into the next.
    cfg.data.presets.append("x")
    cfg.loss.weights["reconstruction"] = 1.0
    again = load_config()
    assert again.data.presets == ["nyuv2", "defocusnet"]
    assert again.loss.weights["reconstruction"] == 1e3


def test_yaml_overlay(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(
        "name: exp1\n"
        "model: {name: daifnet_tiny}\n"
        "data:\n  presets: [defocusnet]\n  size: [40, 48]\n"
        "optim:\n  epochs: 3\n  lr: 0.001\n  weight_decay: 1e-4\n"
        "loss:\n  weights: {reconstruction: 5.0}\n  forward: {light: linear}\n"
    )
    cfg = load_config(p)
    assert cfg.name == "exp1"
    assert cfg.model.name == "daifnet_tiny"
    assert cfg.data.presets == ["defocusnet"] and cfg.data.size == [40, 48]
    assert cfg.optim.epochs == 3 and cfg.optim.lr == 0.001
    assert cfg.optim.weight_decay == 1e-4  # YAML 1.1 reads 1e-4 as a string; the config still takes it
    assert cfg.loss.forward == ForwardSpec(light="linear")
    # A mapping in YAML updates the default mapping (other weights keep their defaults).
    assert cfg.loss.weights["reconstruction"] == 5.0 and cfg.loss.weights["aif_vs_coarse"] == 1e2
    # Untouched keys keep their defaults.
    assert cfg.optim.batch_size == TrainConfig().optim.batch_size
    assert cfg.data.protocols == ["paper", "realistic"]


def test_shipped_configs_load_by_name_and_path(tmp_path, monkeypatch):
    from defocus.train.config import packaged_configs

    shipped = packaged_configs()
    assert {"tiny", "release"} <= set(shipped)
    for name in ("tiny", "release", "tiny.yaml", "release.yaml"):
        assert load_config(name).name == name.replace(".yaml", "")
    assert load_config(shipped["tiny"]).name == "tiny"
    tiny = load_config("tiny")
    assert tiny.model.name == "daifnet_tiny" and tiny.data.size == [32, 32]
    # A file of that name in the working folder wins over the packaged config.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").write_text("name: local\n")
    assert load_config("tiny").name == "local"
    with pytest.raises(DefocusError, match="packaged configs: .*release"):
        load_config("no_such_config")


def test_overrides_nested_lists_numbers_bools(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim: {epochs: 3}\nname: from_yaml\n")
    cfg = load_config(
        p,
        [
            "optim.epochs=7",
            "optim.lr=1e-3",
            "optim.batch_size=4.0",
            "data.presets=[nyuv2]",
            "data.size=[16, 24]",
            "data.stack_dirs=[a/b, c]",
            "loss.forward.light=linear",
            "loss.forward.blur_scale=1.2",
            "loss.weights.reconstruction=2",
            "protocol_loss.paper.psf=disk",
            "name=over",
            "seed=3",
        ],
    )
    assert cfg.optim.epochs == 7 and isinstance(cfg.optim.epochs, int)  # override beats YAML
    assert cfg.optim.lr == 1e-3 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.batch_size == 4 and isinstance(cfg.optim.batch_size, int)
    assert cfg.data.presets == ["nyuv2"]
    assert cfg.data.size == [16, 24]
    assert cfg.data.stack_dirs == ["a/b", "c"]
    assert cfg.loss.forward == ForwardSpec(light="linear", blur_scale=1.2)
    assert cfg.loss.weights["reconstruction"] == 2 and cfg.loss.weights["depth_smoothness"] == 10.0
    assert cfg.protocol_loss["paper"] == {"psf": "disk", "light": "srgb", "blur_scale": 1.0}  # one field changed
    assert loss_spec_for(cfg, "paper") == ForwardSpec("disk", "srgb")
    assert cfg.name == "over" and cfg.seed == 3


def test_float_field_accepts_integer_value():
    cfg = load_config(None, ["optim.lr=1"])
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)


def test_parse_override():
    assert parse_override("a.b.c=1") == {"a": {"b": {"c": 1}}}
    assert parse_override("x=[1, 2]") == {"x": [1, 2]}
    assert parse_override("x=a=b") == {"x": "a=b"}
    with pytest.raises(DefocusError):
        parse_override("no_equals_sign")


@pytest.mark.parametrize(
    "override,named",
    [
        ("optim.epochz=3", "optim.epochz"),
        ("nosuchkey=1", "nosuchkey"),
        ("data.size.x=1", "data.size"),  # a list is not a section
    ],
)
def test_unknown_key_names_it(override, named):
    with pytest.raises(DefocusError, match=named.replace(".", r"\.")):
        load_config(None, [override])


def test_unknown_key_in_yaml_names_it(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  learning_rate: 0.1\n")
    with pytest.raises(DefocusError, match=r"optim\.learning_rate"):
        load_config(p)


@pytest.mark.parametrize(
    "override",
    [
        "optim.epochs=many",
        "optim.epochs=2.5",
        "optim.lr=fast",
        "loss.linear_light=1",
        "loss.linear_light=maybe",
        "loss.forward.multires=1",
        "loss.forward.psf=airy",
        "loss.forward.level_ratio=fine",
        "loss.forward.colour=1",
        "loss.forward=disk",
        "protocol_loss.paper.psf=airy",
        "protocol_loss.paper.linear_light=maybe",
        "data.presets=nyuv2",
        "model=daifnet",  # a section needs a mapping
        "optim.epochs=[1, 2]",
    ],
)
def test_wrong_type_is_defocus_error(override):
    key = override.split("=")[0]
    with pytest.raises(DefocusError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_bad_yaml_is_defocus_error(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("optim: {epochs: 3\nname: [unclosed\n")
    with pytest.raises(DefocusError, match="YAML"):
        load_config(p)
    q = tmp_path / "list.yaml"
    q.write_text("- 1\n- 2\n")
    with pytest.raises(DefocusError, match="mapping"):
        load_config(q)
    with pytest.raises(DefocusError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_empty_yaml_gives_defaults(tmp_path):
    p = tmp_path / "empty.yaml"
    p.write_text("")
    assert load_config(p).to_dict() == TrainConfig().to_dict()


def test_dump_round_trip():
    cfg = load_config(None, ["optim.epochs=4", "data.size=[20, 30]", "loss.forward.psf=disk", "name=rt",
                             "loss.forward.blur_scale=0.9", "protocol_loss.realistic.level_ratio=1.3"])
    text = dump_config(cfg)
    back = config_from_dict(yaml.safe_load(text))
    assert back.to_dict() == cfg.to_dict()
    assert back.loss.forward == ForwardSpec("disk", blur_scale=0.9)  # blur_scale kept
    assert loss_spec_for(back, "realistic") == ForwardSpec("disk", "linear", level_ratio=1.3)


def test_configs_of_before_loss_forward_are_still_read():
    """Resolved configs in older checkpoints and user YAMLs set the loss's forward model as loose keys of loss
    (psf, linear_light, level_ratio, multires) and protocol_loss entries as {psf, linear_light}."""
    old = {"name": "old", "loss": {"weights": {"reconstruction": 1000.0}, "psf": "disk", "linear_light": True,
                                   "level_ratio": 1.3, "multires": False},
           "protocol_loss": {"paper": {"psf": "gaussian", "linear_light": False},
                             "realistic": {"psf": "disk", "linear_light": True}}}
    cfg = config_from_dict(old).validate()
    assert cfg.loss.forward == ForwardSpec("disk", "linear", level_ratio=1.3)
    assert loss_spec_for(cfg, "paper") == ForwardSpec("gaussian", "srgb", level_ratio=1.3)
    assert loss_spec_for(cfg, "realistic") == ForwardSpec("disk", "linear", level_ratio=1.3)
    over = load_config(None, ["loss.linear_light=true", "loss.psf=disk", "protocol_loss.paper.linear_light=true"])
    assert over.loss.forward == ForwardSpec("disk", "linear")
    assert over.protocol_loss["paper"] == {"psf": "gaussian", "light": "linear", "blur_scale": 1.0}


def test_batches_forward_spec_gives_the_lens_on_the_loss_renderer():
    cfg = load_config(None, ["loss.forward.level_ratio=1.25", "loss.forward.multires=true"])
    variant = ForwardSpec("gennorm", "linear", "layered", blur_scale=1.1)
    assert loss_spec_for(cfg, variant) == ForwardSpec("gennorm", "linear", "layered", 1.25, True, 1.1)
    assert loss_spec_for(cfg, "paper") == ForwardSpec("gaussian", "srgb", "layered", 1.25, True, 1.0)


@pytest.mark.parametrize(
    "override,named",
    [
        ("optim.epochs=-1", "optim.epochs"),
        ("optim.epochs=0", "optim.epochs"),
        ("optim.steps_per_epoch=0", "optim.steps_per_epoch"),
        ("optim.batch_size=0", "optim.batch_size"),
        ("optim.lr=-1", "optim.lr"),
        ("optim.lr=.nan", "optim.lr"),
        ("optim.lr=.inf", "optim.lr"),
        ("optim.epochs=true", "optim.epochs"),
        ("data.size=[0, 0]", "data.size"),
        ("data.size=[5]", "data.size"),
        ("data.size=[100000, 100000]", "data.size"),
        ("data.size=[a, b]", "data.size"),
        ("data.n_max=1", "data.n_max"),
        ("data.n_min=0", "data.n_min"),
        ("data.p_typical=2", "data.p_typical"),
        ("data.pitch_scale=[2, 1]", "data.pitch_scale"),
        ("data.rgbd_depth_range=[5, 1]", "data.rgbd_depth_range"),
        ("data.presets=[1]", "data.presets"),
        ("seed=-1", "seed"),
        ("save_every_epochs=0", "save_every_epochs"),
        ("keep_checkpoints=0", "keep_checkpoints"),
        ("name=null", "name"),
        ("name=123", "name"),
        ("name=''", "name"),
        ("out_dir=[]", "out_dir"),
        ("dist_timeout_s=0", "dist_timeout_s"),
        ("loss.weights.reconstruction=-1", "loss.weights.reconstruction"),
        ("loss.weights={reconstruction: 0, aif_vs_coarse: 0, aif_sharpness: 0, depth_smoothness: 0}", "loss.weights"),
        ("model.name=classical", "model.name"),
        ("model.config.nosuch=1", "model.config.nosuch"),
        ("model.config.widths=[]", "widths"),
        ("model.config.prior_presmooth=.inf", "prior_presmooth"),
        ("model.config.bottleneck=1000000", "bottleneck"),
        ("loss.forward.psf=airy", "loss.forward.psf"),
        ("loss.forward.blur_scale=0", "loss.forward.blur_scale"),
        ("loss.forward.blur_scale=-.inf", "loss.forward.blur_scale"),
        ("loss.forward.blur_scale=1e30", "loss.forward.blur_scale"),  # kernels wider than any memory
        ("loss.forward.method=fft", "loss.forward.method"),
        ("loss.forward.level_ratio=1", "loss.forward.level_ratio"),
        ("loss.forward.nosuch=1", "loss.forward.nosuch"),
        ("protocol_loss.studio={psf: disk}", "protocol_loss.studio"),
        ("protocol_loss.paper=disk", "protocol_loss.paper"),
        ("protocol_loss.paper.light=log", "protocol_loss.paper.light"),
        ("protocol_loss.paper.nosuch=1", "protocol_loss.paper.nosuch"),
        ("data.protocols=[paper, studio]", "data.protocols"),
        ("data.stack_protocol=studio", "data.stack_protocol"),
    ],
)
def test_nonsense_values_are_refused_up_front(override, named):
    """TrainConfig.validate (called by load_config): one DefocusError naming the key, before anything is trained or
    written, instead of a traceback deep inside training or an empty run."""
    with pytest.raises(InputError, match=named.replace(".", r"\.")) as exc:
        load_config("tiny", [override])
    assert "\n" not in str(exc.value) and "--" not in str(exc.value)


def test_valid_configs_pass_validation_unchanged():
    for name in (None, "tiny", "release"):
        cfg = load_config(name)
        assert cfg.validate() is cfg
    edge = load_config("tiny", ["data.size=[6, 6]", "data.n_min=1", "data.n_max=1", "optim.grad_clip=0",
                                "optim.weight_decay=0", "optim.warmup_steps=0", "val_scenes=0", "data.p_typical=1",
                                "data.scenes_per_group=0", "data.stack_dirs=[a]", "model.config.prior_presmooth=auto"])
    assert edge.data.size == [6, 6] and edge.optim.grad_clip == 0.0


def test_a_missing_data_path_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    """The release config's RGB-D index exists only beside the repository: elsewhere the run stops at once, with the
    key named and how to clear it, and leaves no run folder behind."""
    from defocus.cli import main

    monkeypatch.chdir(tmp_path)
    rc = main(["train", "--config", "tiny", "data.rgbd_index=no/such/INDEX.csv", f"out_dir={tmp_path / 'runs'}",
               "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "data.rgbd_index" in err[0] and "data.rgbd_index=''" in err[0]
    assert not (tmp_path / "runs").exists()
    rc = main(["train", "--config", "tiny", "data.stack_dirs=[no_such_stack]", f"out_dir={tmp_path / 'runs'}",
               "--quiet"])
    assert rc == 2 and "no_such_stack" in capsys.readouterr().err and not (tmp_path / "runs").exists()


def test_a_run_that_fails_while_building_its_data_leaves_no_folder(tmp_path, monkeypatch):
    import defocus.train.trainer as trainer
    from defocus.errors import InputError
    from defocus.train.config import load_config

    def broken(*args, **kwargs):
        raise InputError("a data source failed")

    monkeypatch.setattr(trainer, "build_training_groups", broken)
    cfg = load_config("tiny", [f"out_dir={tmp_path / 'runs'}", "name=r"])
    with pytest.raises(InputError, match="data source failed"):
        trainer.train(cfg, progress=False)
    assert not (tmp_path / "runs" / "r").exists()
