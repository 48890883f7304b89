"""RunConfig rejects a wrong setting when it is made or loaded, naming the key, the value and
what is allowed (and the params file), instead of failing minutes into training."""
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import yaml

from musecl import config as config_module
from musecl.config import ConfigError, RunConfig

PARAMS = sorted((Path(__file__).parent.parent / "params").glob("*.yaml"))

BAD = [  # (settings, substrings the message must contain)
    ({"rs_epochs": "ten"}, ["rs_epochs", "an integer >= 1", "'ten'"]),
    ({"rs_epochs": 0}, ["rs_epochs", ">= 1"]),
    ({"sv_epochs": 2.5}, ["sv_epochs", "an integer"]),
    ({"n_triplets": True}, ["n_triplets", "an integer"]),
    ({"seed": -1}, ["seed", ">= 0"]),
    ({"encoder_lr": 0}, ["encoder_lr", "a number > 0"]),
    ({"fusion_lr": "fast"}, ["fusion_lr", "a number > 0", "'fast'"]),
    ({"encoder_lr": "nan"}, ["encoder_lr", "a number > 0"]),
    ({"val_fraction": 1.0}, ["val_fraction", ">= 0 and < 1"]),
    ({"margin": -0.1}, ["margin", ">= 0 or None"]),
    ({"temperature": 0}, ["temperature", "> 0 or None"]),
    ({"block_size_m": "wide"}, ["block_size_m", "a number > 0"]),
    ({"buffer_m": -5}, ["buffer_m", "'auto' or a number >= 0"]),
    ({"encoder_patience": 0}, ["encoder_patience", "an integer >= 1 or None"]),
    ({"jobs": -1}, ["jobs", ">= 0"]),
    ({"fusion_batch_size": 1}, ["fusion_batch_size", ">= 2"]),
    ({"triplet_loss": "cosin"}, ["triplet_loss", "('cosine', 'euclidean')", "did you mean 'cosine'"]),
    ({"fusion_loss": "nce"}, ["fusion_loss", "('infonce', 'mse')", "'nce'"]),
    ({"fusion_design": "alligned"}, ["fusion_design", "did you mean 'aligned'"]),
    ({"fusion_loss": "mse"}, ["fusion_loss 'mse' needs fusion_design: paper"]),
    ({"sampling_rule": "offical"}, ["sampling_rule", "('paper', 'official')", "did you mean 'official'"]),
    ({"rs_arch": "resnet-18"}, ["rs_arch", "'lite0-head'", "did you mean 'resnet18'"]),
    ({"sv_arch": "vit"}, ["sv_arch", "'inception_v3'"]),
    ({"weights": "imagnet"}, ["weights", "'random', 'imagenet' or the path", "did you mean 'imagenet'"]),
    ({"weights": "/no/such/checkpoint.pt"}, ["weights", "existing checkpoint"]),
    ({"amp": "bf32"}, ["amp", "('off', 'bf16', 'fp16', 'auto')"]),
    ({"amp": True}, ["amp", "got True"]),
    ({"device": "gpu"}, ["device", "'cpu', 'cuda'", "'gpu'"]),
    ({"image_store": "disk"}, ["image_store must be one of", "('memory', 'shards')"]),
    ({"retrain": "sometimes"}, ["retrain must be one of", "('per_seed', 'once')"]),
    ({"probe": "lasso"}, ["probe", "('mlp', 'ridge', 'mlp-or-ridge', 'knn')"]),
    ({"splits": ["random", "diagonal"]}, ["splits", "('random', 'spatial', 'spatial-cv')", "'diagonal'"]),
    ({"splits": []}, ["splits", "non-empty"]),
    ({"seeds": [0, "one"]}, ["seeds", "an integer >= 0"]),
    ({"seeds": [0, 0]}, ["seeds", "without repeats"]),  # one result would count twice
    ({"splits": ["random", "random"]}, ["splits", "without repeats"]),
    ({"encoder_patience": 2, "val_fraction": 0}, ["encoder_patience 2", "val_fraction > 0"]),
    ({"amp": "fp16"}, ["amp 'fp16' needs a CUDA GPU"]),
    ({"weights": "imagenet", "rs_arch": "tiny"}, ["weights 'imagenet'", "'tiny'"]),
    ({"rs_epoch": 3}, ["unknown parameter(s) ['rs_epoch']", "did you mean 'rs_epochs'"]),
    ({"fusion_lrate": 1e-3}, ["fusion_lrate", "did you mean 'fusion_lr'"]),
    ({"zzz": 1}, ["unknown parameter(s) ['zzz']", "known: ["]),
]


@pytest.mark.parametrize("settings, expected", BAD, ids=[repr(s) for s, _ in BAD])
def test_a_bad_setting_is_named_with_what_is_allowed(settings, expected):
    with pytest.raises(ConfigError) as caught:
        RunConfig.from_dict(settings)
    for part in expected:
        assert part in str(caught.value)
    assert "\n" not in str(caught.value)


def test_config_error_is_a_value_error_with_the_key():
    with pytest.raises(ValueError) as caught:
        RunConfig(rs_epochs="ten")
    assert isinstance(caught.value, ConfigError) and caught.value.key == "rs_epochs"


def test_good_values_are_accepted_and_normalised(tmp_path):
    checkpoint = tmp_path / "encoder.pt"
    checkpoint.write_bytes(b"")
    config = RunConfig.from_dict({"fusion_lr": "1e-3", "encoder_lr": 1, "splits": "random", "seeds": [3], "margin": None,
                                  "buffer_m": 0, "block_size_m": 500, "device": "cuda:1", "weights": str(checkpoint),
                                  "sv_arch": "resnet18", "fusion_design": "paper", "fusion_loss": "mse", "amp": False})
    assert config.fusion.lr == pytest.approx(1e-3) and isinstance(config.fusion.lr, float)
    assert config.image.lr == 1 and config.evaluation.buffer_m == 0  # ints stay ints: cache keys hash the values
    assert config.evaluation.splits == ("random",) and config.seeds == (3,)
    assert config.machine.amp == "off"  # YAML 1.1 reads a bare `off` as false


def test_yaml_1_1_floats_and_off_load(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("fusion_lr: 1e-3\nencoder_lr: 5e-4\namp: off\n")
    config = RunConfig.from_yaml(params)
    assert (config.fusion.lr, config.image.lr, config.machine.amp) == (pytest.approx(1e-3), pytest.approx(5e-4), "off")


def test_a_renamed_setting_still_loads_with_a_warning(tmp_path):
    params = tmp_path / "old.yaml"
    params.write_text("lr: 0.001\n")  # an old params file (or a saved model's config.json)
    with pytest.warns(FutureWarning, match="'lr' is now called 'encoder_lr'"):
        config = RunConfig.from_yaml(params)
    assert config.image.lr == pytest.approx(1e-3)
    with pytest.raises(ConfigError, match="old name of 'encoder_lr'; give only 'encoder_lr'"):
        RunConfig.from_dict({"lr": 1e-3, "encoder_lr": 1e-3})


def test_every_setting_is_in_one_stage_and_the_table_shows_what_changed():
    grouped = RunConfig(n_triplets=1000).by_section()
    keys = [k for section in grouped.values() for k in section]
    assert sorted(keys) == sorted(RunConfig.keys()) and len(keys) == len(set(keys))
    assert set(grouped["machine"]) == {"device", "amp", "image_store", "train_processes", "jobs"}
    assert list(grouped)[0] == "run" and grouped["similarity sampling (eq. 1-4)"]["n_triplets"] == 1000
    html = RunConfig(n_triplets=1000)._repr_html_()
    assert all(section in html for section in ("run", "fusion (eq. 8-11)", "machine"))
    run_row = html.split("</thead>")[1].split("</tr>")[0]
    assert "<b>n_triplets: 1000</b>" in html and "seeds" in run_row and "<b>" not in run_row
    assert "rs_epochs: 201" in html and "<b>rs_epochs" not in html  # a default is not bold
    # what a default of None or a setting that does not apply means, said where it shows
    assert "margin: None (0.5 for cosine)" in html and "CNNs only" not in html  # ResNet-18 / Inception-v3
    heads = RunConfig(rs_arch="lite0-head", triplet_loss="euclidean")._repr_html_()
    assert "margin: None (5 for euclidean)" in heads and "weights: 'random' (CNNs only" in heads


def test_stages_are_typed_settings_read_by_stage_and_written_by_flat_name():
    """A params file's flat names land in their stage (fusion_lr -> config.fusion.lr, encoder_lr ->
    config.image.lr); to_dict gives them back, so saved settings and cache keys keep their names."""
    config = RunConfig(fusion_lr=1e-2, encoder_lr=1e-4, n_triplets=300, jobs=2)
    assert (config.fusion.lr, config.image.lr, config.sampling.n_triplets, config.machine.jobs) == (1e-2, 1e-4, 300, 2)
    assert isinstance(config.fusion, config_module.FusionSettings) and config.text == config_module.TextSettings()
    assert RunConfig.from_dict(config.to_dict()) == config
    assert RunConfig(fusion=config_module.FusionSettings(lr=1e-2)).to_dict()["fusion_lr"] == 1e-2
    changed = config.replace(fusion_design="paper", seed=3)
    assert changed.fusion.design == "paper" and changed.seed == 3 and changed.fusion.lr == 1e-2
    assert config.fusion.design == "aligned"  # frozen: replace made a copy
    with pytest.raises(AttributeError, match=r"read config\.fusion\.lr"):
        config.fusion_lr  # the flat name, read as an attribute, says where it lives now
    with pytest.raises(ConfigError, match="fusion_lr must be a number > 0") as err:
        config_module.FusionSettings(lr=0)  # a stage's settings are checked when made, under their flat name
    assert err.value.key == "fusion_lr"
    with pytest.raises(ConfigError, match="fusion must be a FusionSettings"):
        RunConfig(fusion={"lr": 1e-2})


def test_a_runs_written_settings_read_back_as_the_same_config(tmp_path):
    config = RunConfig.from_yaml(PARAMS[0]).replace(fusion_lr=2e-3, seeds=(1, 2), seed=1)
    (tmp_path / "config.yaml").write_text(config.to_yaml())
    assert RunConfig.from_yaml(tmp_path / "config.yaml") == config
    assert "# fusion (eq. 8-11)\nfusion_design: aligned" in config.to_yaml()


@pytest.mark.parametrize("path", PARAMS, ids=[p.name for p in PARAMS])
def test_every_params_file_loads(path):
    assert isinstance(RunConfig.from_yaml(path), RunConfig)


BAD_FILES = [  # (params file contents, substrings the message must contain after the file's name)
    (b"seed: 0\nrs_epoch: 3\n", ["unknown parameter(s) ['rs_epoch']; did you mean"]),
    (b"triplet_loss: cosin\n", ["triplet_loss must be one of"]),
    (b"seed: [0\n", ["is not valid YAML"]),
    (b"- seed\n", ["expected a mapping"]),
    (b"seed: \xff\n", ["is not UTF-8 text"]),
    # a key given twice: PyYAML would keep the last value without a word
    (b"seed: 0\nrs_epochs: 2\nseed: 1\n", ["key 'seed' is given twice in one mapping (lines 1 and 3)"]),
    (b"seeds: [0, 1]\nsplits: [random]\n\nseeds: [2]\n", ["key 'seeds' is given twice", "(lines 1 and 4)"]),
    (b"{lr: 0.1, lr: 0.2}\n", ["key 'lr' is given twice in one mapping (line 1)"]),
]


@pytest.mark.parametrize("contents, expected", BAD_FILES, ids=[c.decode("latin-1") for c, _ in BAD_FILES])
def test_a_bad_params_file_is_named(tmp_path, contents, expected):
    params = tmp_path / "typo.yaml"
    params.write_bytes(contents)
    with pytest.raises(ConfigError) as caught:
        RunConfig.from_yaml(params)
    message = str(caught.value)
    assert message.startswith(f"{params}: ") and "\n" not in message
    for part in expected:
        assert part in message


def test_a_bad_override_is_not_blamed_on_the_file(tmp_path):
    params = tmp_path / "fine.yaml"
    params.write_text("seed: 0\n")
    with pytest.raises(ConfigError) as caught:
        RunConfig.from_yaml(params, device="gpu")
    assert str(caught.value).startswith("device must be")


def test_every_key_has_a_check():
    assert set(config_module.CHECKS) == set(RunConfig.keys())


def test_allowed_values_agree_with_the_modules_that_read_them():
    from musecl import fusion
    from musecl.encoders import heads, image
    from musecl.methods import multisemantic

    assert set(config_module.ARCHS) == set(image.ARCHS) | set(heads.FEATURE_HEADS)
    assert set(config_module.TRIPLET_LOSSES) == set(image.LOSSES)
    assert RunConfig().fusion.reconstruction == fusion.FusionConfig().reconstruction  # one default
    installed = {entry.name for entry in entry_points(group=multisemantic.IMAGE_STORE_PLUGINS)}
    assert set(config_module.IMAGE_STORES) == {"memory"} | installed


def test_a_bad_config_fails_before_anything_runs(tmp_path):
    params = tmp_path / "slow.yaml"
    params.write_text(yaml.safe_dump({**yaml.safe_load(PARAMS[0].read_text()), "rs_epochs": "ten"}))
    with pytest.raises(ConfigError, match="rs_epochs"):
        RunConfig.from_yaml(params)


def test_seed_defaults_to_the_first_of_seeds_and_must_be_one_of_them_when_every_seed_retrains(tmp_path):
    """seed picks the stages a chapter shows; with retrain: per_seed one outside seeds would show (and
    train) a model that no result uses. Checked where a person's settings are read (params files,
    papermill, the CLI), not on saved settings or in replace(), where code derives one seed's."""
    params = tmp_path / "run.yaml"
    params.write_text("seeds: [5, 6]\n")
    assert RunConfig.from_yaml(params).seed == 5 and RunConfig.from_yaml(params, seed=6).seed == 6
    assert RunConfig.from_yaml(None, seed=9, retrain="once").seed == 9  # once: seed trains, seeds score
    params.write_text("seeds: [5, 6]\nseed: 9\n")
    with pytest.raises(ConfigError, match=r"run.yaml: seed 9 is not one of seeds \[5, 6\]") as err:
        RunConfig.from_yaml(params)
    assert err.value.key == "seed"
    assert RunConfig.from_dict({"seed": 9, "seeds": [5, 6]}).seed == 9  # saved settings load as saved
    # made in a notebook, or derived with replace(), seed follows seeds the same way
    assert RunConfig(seeds=[3]).seed == 3 and RunConfig(seeds=[3], seed=4).seed == 4
    assert RunConfig(seeds=[5, 6]).replace(seeds=[7]).seed == 7
    assert RunConfig(seeds=[5, 6]).replace(seeds=[6]).seed == 6  # 5 is not one of them any more
    assert RunConfig(seeds=[5, 6], seed=6).replace(seeds=[7, 6]).seed == 6  # still one of them: kept
    with pytest.raises(ConfigError) as err:
        RunConfig().replace(seeds=[])
    assert err.value.key == "seeds"


@pytest.mark.parametrize("settings, key", [
    ({"fusion_loss": "mse"}, "fusion_loss"),  # the aligned design trains with InfoNCE
    ({"amp": "fp16"}, "amp"),  # on the CPU
    ({"head_reconstruction": 1.0, "rs_arch": "resnet18", "sv_arch": "resnet18"}, "head_reconstruction"),
])
def test_settings_that_cannot_run_together_fail_when_made_not_at_fit(settings, key):
    """The rules joining two settings hold for RunConfig(...) and replace() as for a params file."""
    for make in (lambda: RunConfig(**settings), lambda: RunConfig().replace(**settings)):
        with pytest.raises(ConfigError) as err:
            make()
        assert err.value.key == key
    assert RunConfig(fusion_design="paper").replace(fusion_loss="mse").fusion.loss == "mse"


def test_a_checkpoint_named_in_a_params_file_is_found_beside_it(tmp_path, monkeypatch):
    """Chapters read the params file from book/, `musecl run` from wherever it is started."""
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "encoder.pt").write_bytes(b"")
    (tmp_path / "params" / "mine.yaml").write_text("weights: encoder.pt\nsv_arch: resnet18\n")
    (tmp_path / "book").mkdir()
    monkeypatch.chdir(tmp_path / "book")
    config = RunConfig.from_yaml("../params/mine.yaml")
    assert Path(config.image.weights).resolve() == (tmp_path / "params" / "encoder.pt").resolve()


def test_one_checkpoint_cannot_start_two_architectures(tmp_path):
    """`weights` starts both CNN encoders: a checkpoint of one architecture fails on the other
    (a size-mismatch error of the state dict, after sampling and decoding); said at load."""
    checkpoint = tmp_path / "resnet.pt"
    checkpoint.write_bytes(b"")
    with pytest.raises(ConfigError, match="one checkpoint starts both image encoders") as caught:
        RunConfig.from_dict({"weights": str(checkpoint), "rs_arch": "resnet18", "sv_arch": "inception_v3"})
    assert caught.value.key == "weights"
    RunConfig.from_dict({"weights": str(checkpoint), "rs_arch": "resnet18", "sv_arch": "resnet18"})
    RunConfig.from_dict({"weights": str(checkpoint), "rs_arch": "resnet18", "sv_arch": "lite0-head"})
