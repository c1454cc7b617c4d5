"""YAML reading and writing of configs: safe loader only, YAML 1.2 scalars, lossless dumps."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from teamvla_schema.config import ConfigError, dump_yaml, load_config, parse_yaml


def test_python_object_tag_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    text = f"run:\n  seed: !!python/object/apply:os.system ['touch {marker}']\n"
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert "evil.yaml" in str(info.value)
    assert "invalid YAML" in str(info.value)
    assert "python/object/apply" in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "tag",
    [
        "!!python/object:os.system",
        "!!python/name:os.system",
        "!!python/module:os",
        "!!python/tuple [1, 2]",
    ],
)
def test_other_python_tags_are_refused(tag):
    with pytest.raises(ConfigError, match="invalid YAML"):
        parse_yaml(f"a: {tag}")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3e-4", 3e-4),
        ("1e5", 1e5),
        ("-2.5E-3", -2.5e-3),
        ("1.", 1.0),
        (".5", 0.5),
        ("10", 10),
        ("010", 10),  # YAML 1.1 would read octal 8
        ("0x1F", 31),
        ("0o17", 15),
        ("1_000", 1000),
        ("true", True),
        ("False", False),
        ("null", None),
        ("~", None),
        ("", None),
        ("yes", "yes"),  # YAML 1.1 booleans stay strings
        ("on", "on"),
        ("No", "No"),
        ("2024-01-01", "2024-01-01"),  # not a date (a checkpoint cannot store dates)
        ("1:30", "1:30"),  # not sexagesimal
        ("cuda:0", "cuda:0"),
        ("1.2.3", "1.2.3"),
        ("0x_", "0x_"),
        ("[a, b]", ["a", "b"]),
        ("{lr: 3e-4}", {"lr": 3e-4}),
    ],
)
def test_yaml_12_core_scalars(text, expected):
    value = parse_yaml(text)
    assert value == expected
    assert type(value) is type(expected)


def test_special_floats():
    assert parse_yaml(".inf") == math.inf
    assert parse_yaml("-.inf") == -math.inf
    assert math.isnan(parse_yaml(".nan"))


def test_anchors_and_merge_keys_still_work():
    data = parse_yaml("base: &b {x: 1, y: 2}\nchild:\n  <<: *b\n  y: 3\n")
    assert data["child"] == {"x": 1, "y": 3}


def test_invalid_yaml_names_the_source():
    with pytest.raises(ConfigError, match=r"^my\.yaml: invalid YAML"):
        parse_yaml("a: [1, 2", source="my.yaml")


@pytest.mark.parametrize(
    "text",
    [
        "3e-4",
        "1_0",
        "010",
        "0o7",
        "0x1F",
        "yes",
        "on",
        "null",
        "~",
        "true",
        "1:30",
        ".5",
        "<<",
        "2024-01-01",
    ],
)
def test_strings_that_look_like_other_scalars_are_quoted(text):
    # A plain string "3e-4" dumped unquoted by PyYAML's 1.1 dumper would come back as a float.
    assert parse_yaml(dump_yaml({"k": text})) == {"k": text}


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
)
_keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789 .-:", min_size=1, max_size=8)
_values = st.recursive(
    _scalars,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(_keys, kids, max_size=3),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=4))
def test_dump_then_parse_is_lossless(data):
    assert parse_yaml(dump_yaml(data)) == data


def test_dump_converts_tuples_and_dataclasses():
    from teamvla_schema.run_config import RunConfig

    text = dump_yaml({"run": RunConfig(seed=3), "pair": (1, 2)})
    assert parse_yaml(text) == {
        "run": {"seed": 3, "log_level": "INFO", "device": "cpu", "output_dir": "runs"},
        "pair": [1, 2],
    }


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=4))
def test_annotated_show_output_parses_back(data):
    from teamvla_schema.config import format_config

    sources = {}
    for key in data:
        sources[key] = "configs/x.yaml"
    text = format_config(data, sources)
    assert parse_yaml(text) == data


def test_absurdly_deep_nesting_is_a_config_error():
    with pytest.raises(ConfigError, match="invalid YAML"):
        parse_yaml("[" * 5000)
