"""Strict typed validation: from_dict, field checks, RunConfig and validate_config's section discovery."""

# teamvla_schema.config.field is a dataclass field factory (ruff cannot tell without
# lint.flake8-bugbear.extend-immutable-calls in the root pyproject).

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any, Literal

import pytest
from teamvla_schema.config import (
    ConfigError,
    LoadedConfig,
    field,
    from_dict,
    load_config,
    nearest_key,
    to_dict,
    validate_config,
)
from teamvla_schema.errors import SchemaError
from teamvla_schema.run_config import RunConfig


@dataclass
class Inner:
    """A nested section."""

    enabled: bool = field(default=False, doc="on/off")
    shift: int = field(default=4, ge=0, le=16, doc="pixels")


@dataclass
class Toy:
    """Every supported field type."""

    name: str = field(doc="required: no default")
    lr: float = field(default=1e-3, gt=0.0, doc="learning rate")
    steps: int = field(default=10, ge=1, doc="steps")
    mode: Literal["fast", "slow"] = field(default="fast", doc="mode")
    tags: list[str] = field(default_factory=list, doc="tags")
    betas: tuple[float, float] = field(
        default=(0.9, 0.999), ge=0.0, lt=1.0, doc="pair, each in [0, 1)"
    )
    sizes: tuple[int, ...] = field(default=(1,), doc="any length")
    weights: dict[str, float] = field(default_factory=dict, doc="per-task weight")
    cap: int | None = field(default=None, ge=1, doc="optional cap")
    inner: Inner = field(default_factory=Inner, doc="nested")
    maybe_inner: Inner | None = field(default=None, doc="optional nested")
    root: Path = field(default=Path("data"), doc="a path")
    anything: Any = field(default=None, doc="free-form")
    derived: int = dataclasses.field(default=0, init=False)

    def validate(self) -> None:
        if self.mode == "slow" and self.steps > 100:
            raise ValueError("slow mode allows at most 100 steps")


def check(data: dict, **kw) -> Toy:
    return from_dict(Toy, data, key="toy", **kw)


def error(data: dict, **kw) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        check(data, **kw)
    return info.value


def test_valid_mapping_builds_typed_object():
    obj = check(
        {
            "name": "x",
            "lr": 1,  # an int is accepted for a float and converted
            "tags": ["a"],
            "betas": [0.5, 0.25],
            "sizes": [1, 2, 3],
            "weights": {"lift": 2},
            "inner": {"shift": 0},
            "maybe_inner": {},
            "root": "elsewhere",
            "anything": {"x": [1]},
        }
    )
    assert obj.lr == 1.0 and type(obj.lr) is float
    assert obj.betas == (0.5, 0.25) and obj.sizes == (1, 2, 3)
    assert obj.weights == {"lift": 2.0}
    assert obj.inner == Inner(shift=0)
    assert obj.maybe_inner == Inner()
    assert obj.root == Path("elsewhere")
    assert obj.anything == {"x": [1]}


def test_to_dict_round_trips():
    obj = check({"name": "x", "betas": [0.1, 0.2], "maybe_inner": {"enabled": True}, "root": "r"})
    plain = to_dict(obj)
    assert plain["betas"] == [0.1, 0.2] and plain["root"] == "r"
    assert "derived" not in plain  # init=False fields are derived, not configured
    assert from_dict(Toy, plain) == obj


def test_unknown_key_suggests_the_nearest():
    err = error({"name": "x", "setps": 3}, source="configs/t.yaml")
    assert str(err) == "configs/t.yaml: toy.setps: unknown key; did you mean 'toy.steps'?"
    assert err.key == "toy.setps" and err.source == "configs/t.yaml"
    assert (
        isinstance(err, SchemaError) and err.path == "configs/t.yaml" and err.field == "toy.setps"
    )


def test_unknown_nested_key_suggests_the_nearest():
    err = error({"name": "x", "inner": {"shfit": 1}})
    assert str(err) == "toy.inner.shfit: unknown key; did you mean 'toy.inner.shift'?"


def test_unknown_key_far_from_all_lists_valid_keys():
    err = error({"name": "x", "zzzzzz": 1})
    assert "unknown key; valid keys: name, lr, steps, mode," in str(err)
    assert "derived" not in str(err)  # init=False fields are not settable


def test_init_false_field_cannot_be_set():
    assert "unknown key" in str(error({"name": "x", "derived": 1}))


def test_missing_required_key():
    assert str(error({"lr": 0.1})) == "toy.name: missing required key"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"steps": 1.5}, "toy.steps: expected int, received 1.5 (float)"),
        ({"steps": True}, "toy.steps: expected int, received True (bool)"),
        ({"steps": "10"}, "toy.steps: expected int, received '10' (str)"),
        ({"lr": "3e-4"}, "toy.lr: expected float, received '3e-4' (str)"),
        ({"lr": None}, "toy.lr: expected float, received None (NoneType)"),
        ({"tags": "a"}, "toy.tags: expected a list, received 'a' (str)"),
        ({"tags": ["a", 1]}, "toy.tags[1]: expected str, received 1 (int)"),
        ({"betas": [0.1]}, "toy.betas: expected a list of 2 items, received [0.1] (list)"),
        ({"weights": {"lift": "x"}}, "toy.weights.lift: expected float, received 'x' (str)"),
        ({"weights": {1: 1.0}}, "toy.weights.1: expected str, received 1 (int)"),
        ({"weights": [1]}, "toy.weights: expected a mapping, received [1] (list)"),
        ({"cap": "x"}, "toy.cap: expected int, received 'x' (str)"),
        ({"inner": 3}, "toy.inner: expected a mapping of Inner keys, received 3"),
        ({"inner": {"enabled": 1}}, "toy.inner.enabled: expected bool, received 1 (int)"),
        (
            {"maybe_inner": {"shift": "x"}},
            "toy.maybe_inner.shift: expected int, received 'x' (str)",
        ),
        ({"root": 5}, "toy.root: expected a path (string), received 5 (int)"),
        (
            {"mode": "fsat"},
            "toy.mode: expected one of ['fast', 'slow'], received 'fsat' (did you mean 'fast'?)",
        ),
        (
            {"mode": "FAST"},
            "toy.mode: expected one of ['fast', 'slow'], received 'FAST' (did you mean 'fast'?)",
        ),
        ({"mode": "xyz"}, "toy.mode: expected one of ['fast', 'slow'], received 'xyz'"),
    ],
)
def test_wrong_type(data, message):
    assert str(error({"name": "x", **data})) == message


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"lr": 0.0}, "toy.lr: expected a value > 0.0, received 0.0"),
        ({"lr": -1}, "toy.lr: expected a value > 0.0, received -1.0"),
        ({"steps": 0}, "toy.steps: expected a value >= 1, received 0"),
        ({"inner": {"shift": 17}}, "toy.inner.shift: expected a value <= 16, received 17"),
        ({"betas": [0.5, 1.0]}, "toy.betas[1]: expected a value < 1.0, received 1.0"),
        ({"cap": 0}, "toy.cap: expected a value >= 1, received 0"),
    ],
)
def test_out_of_range(data, message):
    assert str(error({"name": "x", **data})) == message


def test_none_passes_an_optional_bounded_field():
    assert check({"name": "x", "cap": None}).cap is None


def test_validate_method_errors_are_config_errors():
    err = error({"name": "x", "mode": "slow", "steps": 101}, source="f.yaml")
    assert str(err) == "f.yaml: toy: slow mode allows at most 100 steps"


def test_post_init_value_error_is_reported_too():
    @dataclass
    class Checked:
        n: int = 1

        def __post_init__(self) -> None:
            if self.n == 13:
                raise ValueError("n must not be 13")

    with pytest.raises(ConfigError, match=r"^sec: n must not be 13$"):
        from_dict(Checked, {"n": 13}, key="sec")


def test_none_section_means_all_defaults():
    assert from_dict(Inner, None) == Inner()


def test_field_rejects_unknown_checks_and_bad_patterns():
    with pytest.raises(TypeError, match="unknown field check"):
        field(default=1, gte=0)
    with pytest.raises(Exception, match=r"unterminated|missing"):
        field(default="a", pattern="(")


def test_nearest_key():
    assert nearest_key("bach_size", ["batch_size", "seed"]) == "batch_size"
    assert nearest_key("info", ["DEBUG", "INFO"]) == "INFO"
    assert nearest_key("qqqq", ["batch_size", "seed"]) is None


# --------------------------------------------------------------------------- errors name the right file


@pytest.fixture
def layered(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "common.yaml").write_text("run:\n  seed: 0\n  device: cpu\n")
    (tmp_path / "child.yaml").write_text("extends: common.yaml\nrun:\n  log_level: INFO\n")
    return tmp_path


def run_section_error(path: str, overrides=()) -> ConfigError:
    loaded = load_config(path, overrides)
    with pytest.raises(ConfigError) as info:
        validate_config(loaded, sections={"run": RunConfig})
    return info.value


def test_error_names_the_base_file_that_set_the_key(layered):
    (layered / "common.yaml").write_text("run:\n  seed: -1\n")
    assert (
        str(run_section_error("child.yaml"))
        == "common.yaml: run.seed: expected a value >= 0, received -1"
    )


def test_error_names_the_child_file_that_set_the_key(layered):
    (layered / "child.yaml").write_text("extends: common.yaml\nrun:\n  devcie: cuda\n")
    assert (
        str(run_section_error("child.yaml"))
        == "child.yaml: run.devcie: unknown key; did you mean 'run.device'?"
    )


def test_error_names_the_override(layered):
    err = run_section_error("child.yaml", ["run.seed=1.5"])
    assert str(err) == "override: run.seed: expected int, received 1.5 (float)"


def test_missing_required_key_names_the_file_of_the_section(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.yaml").write_text("toy:\n  lr: 0.1\n")
    loaded = load_config("t.yaml")
    with pytest.raises(ConfigError, match=r"^t\.yaml: toy\.name: missing required key$"):
        validate_config(loaded, sections={"toy": Toy})


# --------------------------------------------------------------------------- RunConfig


def test_run_config_defaults():
    assert from_dict(RunConfig, {}) == RunConfig(
        seed=0, log_level="INFO", device="cpu", output_dir="runs"
    )


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:0", "cuda:12"])
def test_run_config_valid_devices(device):
    assert from_dict(RunConfig, {"device": device}).device == device


@pytest.mark.parametrize(
    "device", ["gpu", "cuda:", "cuda:x", "CPU", "cuda:0 ", "mps", "cuda:-1", ""]
)
def test_run_config_bad_device_quotes_the_value(device):
    with pytest.raises(ConfigError) as info:
        from_dict(RunConfig, {"device": device}, key="run", source="c.yaml")
    assert str(info.value) == (
        f"c.yaml: run.device: expected a device 'cpu', 'cuda' or 'cuda:N' (N = GPU index, e.g. 'cuda:0'), "
        f"received {device!r}"
    )


def test_run_config_log_level_and_seed():
    with pytest.raises(
        ConfigError, match=r"run\.log_level: .*received 'info' \(did you mean 'INFO'\?\)"
    ):
        from_dict(RunConfig, {"log_level": "info"}, key="run")
    with pytest.raises(ConfigError, match=r"run\.seed: expected a value >= 0, received -3"):
        from_dict(RunConfig, {"seed": -3}, key="run")
    with pytest.raises(
        ConfigError, match=r"run\.output_dir: expected a directory path \(not empty\), received ' '"
    ):
        from_dict(RunConfig, {"output_dir": " "}, key="run")


# --------------------------------------------------------------------------- validate_config


def test_validate_config_returns_typed_sections_present():
    loaded = LoadedConfig.from_mapping({"run": {"seed": 5}}, source="x.yaml")
    typed = validate_config(loaded)  # entry points: run -> RunConfig
    assert typed == {"run": RunConfig(seed=5)}


def test_unknown_section_suggests_the_nearest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text("rnu:\n  seed: 1\n")
    with pytest.raises(ConfigError) as info:
        validate_config(load_config("c.yaml"))
    assert str(info.value) == "c.yaml: rnu: unknown section; did you mean 'run'?"


def test_unknown_section_far_from_all_lists_known_sections():
    loaded = LoadedConfig.from_mapping({"zzzzzz": {}}, source="c.yaml")
    with pytest.raises(
        ConfigError, match=r"unknown section; known sections: dataset, eval, model, optim, run"
    ):
        validate_config(loaded, sections={"run": RunConfig})


def test_section_of_a_package_that_is_not_installed():
    loaded = LoadedConfig.from_mapping({"run": {}, "model": {"name": "x"}}, source="c.yaml")
    with pytest.raises(ConfigError) as info:
        validate_config(
            loaded, sections={"run": RunConfig}
        )  # as if teamvla-train were not installed
    assert str(info.value) == (
        "c.yaml: model: section 'model' needs the package teamvla-train, which is not installed "
        "(install it: uv sync, or pip install teamvla-train)"
    )


def test_section_whose_class_cannot_be_imported():
    loaded = LoadedConfig.from_mapping({"widget": {}}, source="c.yaml")
    ep = EntryPoint(
        name="widget",
        value="teamvla_no_such_module.config:WidgetConfig",
        group="teamvla.config_sections",
    )
    with pytest.raises(ConfigError) as info:
        validate_config(loaded, sections={"widget": ep})
    msg = str(info.value)
    assert msg.startswith(
        "c.yaml: widget: section 'widget' is validated by teamvla_no_such_module.config:WidgetConfig"
    )
    assert "package teamvla-no-such-module" in msg
    assert "No module named 'teamvla_no_such_module'" in msg


def test_entry_point_section_validation_does_not_import_torch(tmp_path):
    # run/dataset/task classes load without torch or teamvla_train; checked in a fresh interpreter.
    cfg = tmp_path / "c.yaml"
    cfg.write_text("run:\n  seed: 1\n  device: cuda:0\n")
    code = (
        "import sys\n"
        "from teamvla_schema.config import load_config, validate_config\n"
        f"typed = validate_config(load_config({str(cfg)!r}))\n"
        "assert typed['run'].device == 'cuda:0', typed\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'teamvla_train')))\n"
        "assert not bad, bad\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


def test_cross_field_error_names_every_file_involved(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "base.yaml").write_text("toy:\n  name: x\n  mode: slow\n")
    (tmp_path / "top.yaml").write_text("extends: base.yaml\ntoy:\n  lr: 0.5\n")
    loaded = load_config("top.yaml", ["toy.steps=500"])
    with pytest.raises(ConfigError) as info:
        validate_config(loaded, sections={"toy": Toy})
    assert (
        str(info.value)
        == "base.yaml + top.yaml + override: toy: slow mode allows at most 100 steps"
    )


def test_paths_outside_the_working_directory_are_shown_absolute(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    (tmp_path / "c.yaml").write_text("run: {seed: -1}\n")
    with pytest.raises(ConfigError) as info:
        validate_config(load_config(tmp_path / "c.yaml"), sections={"run": RunConfig})
    assert info.value.source == str(tmp_path / "c.yaml")
