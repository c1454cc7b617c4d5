"""Loading configs: ``extends`` chains, deep merge order, dotted overrides and their errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from teamvla_schema.config import (
    ConfigError,
    LoadedConfig,
    apply_overrides,
    deep_merge,
    load_config,
    parse_override,
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def chain(tmp_path, monkeypatch):
    """base.yaml <- mid.yaml <- top.yaml (three levels), run from tmp_path so names are short."""
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path / "base.yaml",
        "run:\n  seed: 1\n  device: cpu\n  output_dir: base_runs\n"
        "dataset:\n  roots: [a, b, c]\n  batch_size: 8\n  augment: {enabled: false, shift_pixels: 4}\n",
    )
    write(
        tmp_path / "sub" / "mid.yaml",
        "extends: ../base.yaml\nrun:\n  seed: 2\ndataset:\n  roots: [m]\n  augment: {enabled: true}\n",
    )
    write(
        tmp_path / "sub" / "top.yaml",
        "extends: [mid.yaml]\nrun:\n  seed: 3\ndataset:\n  batch_size: 32\n",
    )
    return tmp_path


def test_three_level_chain_later_wins_and_lists_are_replaced(chain):
    loaded = load_config("sub/top.yaml")
    assert loaded.data == {
        "run": {"seed": 3, "device": "cpu", "output_dir": "base_runs"},
        "dataset": {
            "roots": ["m"],
            "batch_size": 32,
            "augment": {"enabled": True, "shift_pixels": 4},
        },
    }
    assert loaded.files == [
        "base.yaml",
        os.path.join("sub", "mid.yaml"),
        os.path.join("sub", "top.yaml"),
    ]
    assert "extends" not in loaded.data


def test_sources_name_the_file_that_set_each_key(chain):
    loaded = load_config("sub/top.yaml", ["dataset.augment.shift_pixels=2"])
    mid, top = os.path.join("sub", "mid.yaml"), os.path.join("sub", "top.yaml")
    assert loaded.sources["run.seed"] == top
    assert loaded.sources["run.device"] == "base.yaml"
    assert loaded.sources["dataset.roots"] == mid
    assert loaded.sources["dataset.augment.enabled"] == mid
    assert loaded.sources["dataset.augment.shift_pixels"] == "override"
    assert loaded.source_of("run.output_dir") == "base.yaml"
    # A key nobody set is attributed to its nearest parent.
    assert loaded.source_of("dataset.augment.color_jitter") == mid


def test_several_bases_apply_in_order(tmp_path):
    write(tmp_path / "a.yaml", "x: {v: a, a: 1}\n")
    write(tmp_path / "b.yaml", "x: {v: b, b: 1}\n")
    write(tmp_path / "c.yaml", "extends: [a.yaml, b.yaml]\n")
    assert load_config(tmp_path / "c.yaml").data == {"x": {"v": "b", "a": 1, "b": 1}}


def test_diamond_applies_the_shared_base_once(tmp_path):
    # top extends [left, right]; both extend common. common must not re-override left's value.
    write(tmp_path / "common.yaml", "run: {seed: 0, device: cpu}\n")
    write(tmp_path / "left.yaml", "extends: common.yaml\nrun: {seed: 7}\n")
    write(tmp_path / "right.yaml", "extends: common.yaml\nrun: {device: cuda}\n")
    write(tmp_path / "top.yaml", "extends: [left.yaml, right.yaml]\n")
    loaded = load_config(tmp_path / "top.yaml")
    assert loaded.data == {"run": {"seed": 7, "device": "cuda"}}
    assert [Path(f).name for f in loaded.files] == [
        "common.yaml",
        "left.yaml",
        "right.yaml",
        "top.yaml",
    ]


def test_empty_file_is_an_empty_config(tmp_path):
    assert load_config(write(tmp_path / "e.yaml", "# nothing yet\n")).data == {}


def test_deep_merge_does_not_mutate_its_inputs():
    base = {"a": {"b": [1, 2], "c": 1}}
    update = {"a": {"b": [3]}}
    merged = deep_merge(base, update)
    merged["a"]["b"].append(4)
    assert base == {"a": {"b": [1, 2], "c": 1}}
    assert update == {"a": {"b": [3]}}
    assert merged == {"a": {"b": [3, 4], "c": 1}}


def test_null_replaces_a_mapping(tmp_path):
    write(tmp_path / "a.yaml", "x: {y: 1}\n")
    write(tmp_path / "b.yaml", "extends: a.yaml\nx: null\n")
    assert load_config(tmp_path / "b.yaml").data == {"x": None}


# --------------------------------------------------------------------------- overrides


@pytest.mark.parametrize(
    ("override", "key", "value"),
    [
        ("optim.lr=3e-4", "lr", 3e-4),
        ("optim.lr=1", "lr", 1),
        ("optim.flag=true", "flag", True),
        ("optim.flag=False", "flag", False),
        ("optim.tasks=[a,b]", "tasks", ["a", "b"]),
        ("optim.tasks=[]", "tasks", []),
        ("optim.name=null", "name", None),
        ("optim.name=", "name", None),
        ("optim.name=cuda:1", "name", "cuda:1"),
        ("optim.name='3e-4'", "name", "3e-4"),
        ("optim.name=a=b", "name", "a=b"),
        ("optim.nested={x: 1, y: [2]}", "nested", {"x": 1, "y": [2]}),
    ],
)
def test_override_values_are_parsed_as_yaml(override, key, value):
    out = apply_overrides({"optim": {"lr": 1e-3}}, [override])
    assert out["optim"][key] == value
    assert type(out["optim"][key]) is type(value)


def test_overrides_of_nested_keys_lists_and_new_keys(chain):
    loaded = load_config(
        "sub/top.yaml",
        [
            "dataset.augment.shift_pixels=0",
            "dataset.roots=[x, y]",
            "new.section.key=5",
            "run.seed=9",
            "run.seed=10",
        ],
    )
    assert loaded.data["dataset"]["augment"] == {"enabled": True, "shift_pixels": 0}
    assert loaded.data["dataset"]["roots"] == ["x", "y"]
    assert loaded.data["new"] == {"section": {"key": 5}}
    assert loaded.data["run"]["seed"] == 10  # the last override wins
    assert loaded.sources["new.section.key"] == "override"
    assert loaded.overrides[-1] == "run.seed=10"


def test_override_does_not_touch_the_input():
    data = {"a": {"b": 1}}
    apply_overrides(data, ["a.b=2", "a.c=3"])
    assert data == {"a": {"b": 1}}


@pytest.mark.parametrize(
    "bad", ["optim.lr", "=3", "optim..lr=1", ".lr=1", "opt im.lr=1", "1x=2", "a.[0]=1", ""]
)
def test_bad_override_syntax(bad):
    with pytest.raises(ConfigError) as info:
        parse_override(bad)
    msg = str(info.value)
    assert msg.startswith("override: bad override syntax")
    assert "dotted.key=value" in msg
    assert repr(bad) in msg


def test_override_value_with_invalid_yaml_names_the_override():
    with pytest.raises(ConfigError, match=r"override 'a.b=\[1, 2': invalid YAML"):
        parse_override("a.b=[1, 2")


def test_override_through_a_scalar_is_refused():
    with pytest.raises(ConfigError) as info:
        apply_overrides({"run": {"seed": 1}}, ["run.seed.x=2"])
    assert (
        str(info.value)
        == "override: run.seed.x: cannot set run.seed.x: run.seed is a int, not a mapping"
    )


def test_extends_cannot_be_overridden():
    with pytest.raises(ConfigError, match="'extends' cannot be overridden"):
        parse_override("extends=[other.yaml]")


# --------------------------------------------------------------------------- file errors


def test_missing_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config("nope.yaml")
    assert str(info.value) == "nope.yaml: cannot read config file: No such file or directory"
    assert info.value.source == "nope.yaml"


def test_missing_base_names_the_file_that_extends_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "top.yaml", "extends: [gone.yaml]\n")
    with pytest.raises(ConfigError) as info:
        load_config("top.yaml")
    assert (
        str(info.value)
        == "top.yaml: extends: base file 'gone.yaml' not found (looked for gone.yaml)"
    )


@pytest.mark.parametrize("extends", ["1", "[a.yaml, 2]", "{a: b}", "['']"])
def test_bad_extends_value(tmp_path, extends):
    write(tmp_path / "a.yaml", f"extends: {extends}\n")
    with pytest.raises(
        ConfigError, match=r"a\.yaml: extends: expected a file name or a list of file names"
    ):
        load_config(tmp_path / "a.yaml")


def test_circular_extends(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a.yaml", "extends: b.yaml\n")
    write(tmp_path / "b.yaml", "extends: [c.yaml]\n")
    write(tmp_path / "c.yaml", "extends: [a.yaml]\n")
    with pytest.raises(ConfigError) as info:
        load_config("a.yaml")
    assert (
        str(info.value)
        == "c.yaml: extends: circular 'extends': a.yaml -> b.yaml -> c.yaml -> a.yaml"
    )


def test_file_extending_itself(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a.yaml", "extends: a.yaml\n")
    with pytest.raises(ConfigError, match=r"circular 'extends': a\.yaml -> a\.yaml"):
        load_config("a.yaml")


@pytest.mark.parametrize(
    ("text", "kind"), [("- a\n- b\n", "list"), ("just text\n", "str"), ("42\n", "int")]
)
def test_non_mapping_file(tmp_path, monkeypatch, text, kind):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "base.yaml", text)
    write(tmp_path / "top.yaml", "extends: base.yaml\n")
    with pytest.raises(ConfigError) as info:
        load_config("top.yaml")
    assert (
        str(info.value)
        == f"base.yaml: a config file must hold a mapping of sections, found a {kind}"
    )


def test_invalid_yaml_in_a_base_names_that_base(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "base.yaml", "run: {seed: 1\n")
    write(tmp_path / "top.yaml", "extends: base.yaml\n")
    with pytest.raises(ConfigError, match=r"^base\.yaml: invalid YAML"):
        load_config("top.yaml")


def test_from_mapping_attributes_everything_to_one_source():
    loaded = LoadedConfig.from_mapping({"run": {"seed": 1}}, source="ckpt.safetensors")
    assert loaded.source_of("run.seed") == "ckpt.safetensors"
    assert loaded.files == ["ckpt.safetensors"]
