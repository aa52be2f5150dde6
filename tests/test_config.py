import typing
from pathlib import Path

import pytest

from dlf.config import ConfigError, TrainConfig, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_yaml_and_overrides_compose(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {name: dlf, layers: 2}\ntrain: {lr: 0.01}\n")
    cfg = load_config(path, ["model.rank=5", "data.synthetic.rows=1000", "train.batch_size=64",
                             "data.synthetic.splits=[0.6, 0.2, 0.2]", "model.fusion=concat",
                             "train.min_lr=1e-7"])
    assert (cfg.model_name, cfg.model.layers, cfg.model.rank, cfg.model.fusion) == ("dlf", 2, 5, "concat")
    assert cfg.model.embedding_dim == 64  # untouched default
    assert (cfg.train.lr, cfg.train.batch_size, cfg.train.min_lr) == (0.01, 64, 1e-7)
    assert cfg.data.synthetic.rows == 1000 and cfg.data.synthetic.splits == (0.6, 0.2, 0.2)


def test_model_flag_selects_that_models_defaults():
    cfg = load_config(None, [], model="dlf_concat")
    assert (cfg.model.fusion, cfg.model.gate) == ("concat", False)
    assert load_config(None, [], model="lr").model_name == "lr"


@pytest.mark.parametrize("overrides, match", [
    (["model.nope=1"], "unknown key 'model.nope'"),
    (["model.layers=two"], "model.layers: expected an integer"),
    (["model.fusion=mean"], "model.fusion: expected one of 'attention' | 'concat'"),
    (["model.gate=maybe"], "model.gate: expected true or false"),
    (["train.lr=-1"], "train.lr must be > 0"),
    (["model.alpha=false", "model.beta=false", "model.gamma=false"], "at least one of alpha"),
    (["bogus.x=1"], "unknown section"),
    (["model.layers"], "must look like key.path=value"),
    (["data.dataset=imagenet"], "unknown dataset 'imagenet'"),
    (["train.lr=nan"], "train.lr: expected a finite number, got nan"),
    (["train.lr=inf"], "train.lr: expected a finite number, got inf"),
    (["train.clip_norm=-1"], "train.clip_norm must be >= 0"),
    (["train.log_every_steps=0"], "train.log_every_steps must be >= 1, got 0"),  # was taken as 1 without a word
    (["train.keep_checkpoints=0"], "train.keep_checkpoints must be >= 1, got 0"),
    (["data.synthetic.splits=[0.8, .nan, 0.1]"], r"data.synthetic.splits\[1\]: expected a finite number"),
    (["model=dlf"], r"model: expected a mapping of keys \(e.g. model.KEY=VALUE, model.name=dlf\), got 'dlf'"),
    (["model=[1, 2]"], "model: expected a mapping of keys"),  # both were tracebacks
    (["train.threads=-1"], r"train.threads must be >= 0 \(0: torch's default\), got -1"),  # was a torch traceback
    (["train.seed=18446744073709551617"], "train.seed must be an integer between"),  # was an overflow traceback
    (["train.seed=35184372088832"], "train.seed must be an integer between"),  # overflowed in the epoch shuffle
])
def test_bad_values_name_the_key_and_what_was_expected(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, overrides)


def test_numbers_in_scientific_notation_without_a_dot(tmp_path):
    """PyYAML (YAML 1.1) reads 1e2 and 4e3 as strings: an int key refused them ('expected an integer, got '1e2'')."""
    path = tmp_path / "c.yaml"
    path.write_text("train: {lr: 1e-3, min_lr: 1E-7, epochs: 1e2, batch_size: 4e3}\nmodel: {hidden: 5.12e+2}\n")
    cfg = load_config(path)
    assert (cfg.train.lr, cfg.train.min_lr, cfg.train.epochs, cfg.train.batch_size) == (1e-3, 1e-7, 100, 4000)
    assert type(cfg.train.epochs) is int and cfg.model.hidden == 512
    cfg = load_config(None, ["train.lr=2e-3", "train.epochs=3e0", "train.eval_batch_size=1e4"])
    assert (cfg.train.lr, cfg.train.epochs, cfg.train.eval_batch_size) == (2e-3, 3, 10000)
    with pytest.raises(ConfigError, match=r"^train.epochs: expected an integer, got '2.5e0'$"):
        load_config(None, ["train.epochs=2.5e0"])
    path.write_text("train: {batch_size: 2.5e3}\n")  # 2500: fine
    assert load_config(path).train.batch_size == 2500
    path.write_text("train: {batch_size: 2.5e-3}\n")  # YAML 1.1: a float (dot and signed exponent)
    with pytest.raises(ConfigError, match="train.batch_size: expected an integer, got 0.0025"):
        load_config(path)
    # beyond 2**53 a float is no exact integer: the message printed int(1e30) = 1000000000000000019884624838656
    with pytest.raises(ConfigError, match=r"^train.seed: expected an integer, got '1e30' \(beyond 2\*\*53"):
        load_config(None, ["train.seed=1e30"])
    assert load_config(None, ["train.eval_batch_size=9e15"]).train.eval_batch_size == 9 * 10**15  # below 2**53


def test_unknown_model_lists_the_available_ones():
    with pytest.raises(ConfigError, match="unknown model 'gpt'.*dlf"):
        load_config(None, [], model="gpt")


def test_missing_or_broken_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_every_float_field_must_be_finite():
    from dlf.data.synthetic import SyntheticConfig
    from dlf.models.registry import available_models, get_entry
    sections = [("train", TrainConfig, None), ("data.synthetic", SyntheticConfig, None)]
    sections += [("model", type(get_entry(m).default_config()), m) for m in available_models()]
    checked = 0
    for prefix, cls, model in sections:
        for name, tp in typing.get_type_hints(cls).items():
            if tp is float:
                for bad in ("nan", ".inf", "-inf"):
                    with pytest.raises(ConfigError, match=f"{prefix}.{name}: expected a finite number"):
                        load_config(None, [f"{prefix}.{name}={bad}"], model=model)
                checked += 1
    assert checked > 20


def test_any_length_lists_are_coerced_and_a_bare_value_says_what_is_expected():
    for text, want in (("[32]", (32,)), ("[64, 64]", (64, 64)), ("[8, 8, 8, 8]", (8, 8, 8, 8))):
        assert load_config(None, [f"model.hidden_units={text}"], model="dnn").model.hidden_units == want
    for text in ("32", "64,64"):  # used to say "expected a list of 2 values": the 2 were tuple[int, ...]'s args
        with pytest.raises(ConfigError, match=r"model.hidden_units: expected a list of int values of any length"):
            load_config(None, [f"model.hidden_units={text}"], model="dnn")
    with pytest.raises(ConfigError, match="data.synthetic.splits: expected a list of 3 values"):
        load_config(None, ["data.synthetic.splits=[0.5, 0.5]"])


def test_a_mapping_given_to_a_section_sets_its_keys_and_keeps_the_others(tmp_path):
    """--set 'model={embedding_dim: 8}' replaced the model section: the YAML's model (dnn) became dlf, silently."""
    path = tmp_path / "c.yaml"
    path.write_text("model: {name: dnn, embedding_dim: 4}\ntrain: {epochs: 7, batch_size: 128}\n")
    cfg = load_config(path, ["model={embedding_dim: 8}", "train={lr: 0.01}"])
    assert (cfg.model_name, cfg.model.embedding_dim) == ("dnn", 8)
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.lr) == (7, 128, 0.01)
    assert load_config(path, ["data.synthetic={rows: 100}"]).data.synthetic.rows == 100  # no such key yet: set


def test_a_config_path_that_is_a_folder_or_not_text_is_a_config_error(tmp_path):
    """Were IsADirectoryError / UnicodeDecodeError tracebacks."""
    with pytest.raises(ConfigError, match="cannot be read: Is a directory"):
        load_config(tmp_path)
    binary = tmp_path / "c.yaml"
    binary.write_bytes(b"\xff\xfe model: {}")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_config(binary)


def test_a_key_given_twice_in_a_yaml_section_is_an_error(tmp_path):
    """PyYAML keeps the last of two equal keys without a word: the first lr was silently overridden."""
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 0.001\n  epochs: 3\n  lr: 0.01\n")
    with pytest.raises(ConfigError, match=r"c.yaml': key 'lr' is given twice in one section \(line 4\)"):
        load_config(path)
    path.write_text("data: {synthetic: {seed: 1}}\ntrain: {seed: 2}\n")  # one key in two sections is fine
    assert load_config(path).train.seed == 2


def test_a_boolean_field_takes_1_and_0_and_an_int_field_keeps_1():
    """--set train.progress=1 was refused ("expected true or false"): YAML reads 1 as an integer."""
    cfg = load_config(None, ["train.progress=0", "model.gate=1", "train.patience=1"])
    assert cfg.train.progress is False and cfg.model.gate is True
    assert cfg.train.patience == 1 and type(cfg.train.patience) is int
    assert load_config(None, ["train.progress=1"]).train.progress is True
    for bad in ("2", "-1", "1.0"):
        with pytest.raises(ConfigError, match=r"train.progress: expected true or false \(or 1 / 0\), got"):
            load_config(None, [f"train.progress={bad}"])


def test_a_config_file_that_is_not_yaml_is_one_line_naming_the_line(tmp_path):
    """The error quoted PyYAML's multi-line report ('in "<unicode string>", line 3, column 2:' and a caret line)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: 1\n epochs: 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert str(info.value) == (f"config file {str(bad)!r} is not valid YAML: line 3: expected <block end>, but found "
                               "'<block mapping start>'")


def test_a_config_file_for_another_model_says_so(tmp_path):
    """`-c configs/demo.yaml --model lr` said only "unknown key 'model.embedding_dim'": the key is DLF's,
    in the file."""
    with pytest.raises(ConfigError, match=r"config file '\S*demo.yaml' has model settings for dlf, not lr: unknown key "
                                          r"'model.embedding_dim'"):
        load_config(ROOT / "configs" / "demo.yaml", model="lr")
    with pytest.raises(ConfigError, match=r"^unknown key 'model.rank'"):  # a --set of the user's own: as it was
        load_config(None, ["model.rank=3"], model="lr")


def test_a_run_config_built_in_python_without_a_model_config_gets_that_models_defaults():
    """dlf.RunConfig() and RunConfig(model_name='lr') (the class dlf exports) left model=None: dlf.train failed with
    'TypeError: asdict() should be called on dataclass instances'."""
    from dlf import RunConfig

    assert RunConfig() == load_config()
    assert RunConfig(model_name="lr", train=TrainConfig(epochs=1)) == load_config(None, ["train.epochs=1"], model="lr")
    assert RunConfig(model_name="lr").to_dict()["model"]["name"] == "lr"
    with pytest.raises(ConfigError, match="unknown model 'nope'; available: "):
        RunConfig(model_name="nope")


def test_one_override_given_as_a_string_is_that_override():
    """load_config(path, 'train.lr=0.1') read the string letter by letter: "override 't' must look like
    key.path=value"."""
    assert load_config(None, "train.lr=0.1").train.lr == 0.1


def test_dir_of_the_package_lists_its_public_api():
    """train, load_config and RunConfig are loaded on first use: dir(dlf), which a notebook's `dlf.<Tab>` lists,
    held none of them."""
    import dlf

    assert {"train", "load_config", "RunConfig", "__version__"} <= set(dir(dlf))


def test_every_public_name_of_the_package_is_the_commands_api_or_its_errors():
    """A notebook reaches each command's Python API and the errors to catch from `dlf` itself (they were only in
    dlf.data.preprocess, dlf.serve.*, dlf.config and dlf.train.trainer)."""
    import dlf
    from dlf.config import ConfigError
    from dlf.data.preprocess import preprocess
    from dlf.data.schema import DataError
    from dlf.serve.bundle import BundleError, export_bundle, load_bundle
    from dlf.serve.evaluate import evaluate_file
    from dlf.serve.predict import predict_file
    from dlf.train.trainer import TrainingError

    assert dlf.preprocess is preprocess and dlf.export_bundle is export_bundle and dlf.load_bundle is load_bundle
    assert dlf.predict_file is predict_file and dlf.evaluate_file is evaluate_file
    assert (dlf.ConfigError, dlf.DataError, dlf.TrainingError, dlf.BundleError) == (ConfigError, DataError,
                                                                                    TrainingError, BundleError)
    assert set(dlf.__all__) <= set(dir(dlf)) and all(getattr(dlf, name) is not None for name in dlf.__all__)
    with pytest.raises(dlf.ConfigError):
        dlf.load_config(None, ["train.lr=abc"])


def test_load_config_refuses_a_keyword_it_does_not_have():
    """load_config took **kwargs and read only model and dataset: load_config(model='lr', epochs=3) trained the
    default 10 epochs without a word."""
    with pytest.raises(TypeError, match="epochs"):
        load_config(model="lr", epochs=3)
    assert load_config(model="lr", dataset="synthetic").model_name == "lr"
