"""Hostile YAML configs: each is refused quickly with a ConfigError naming the file and key.

No YAML tag runs code or builds objects, no alias bomb expands in memory, no
``extends`` reads outside the config tree or blocks on a FIFO or device, and
non-finite numbers never reach a field that does not allow them. (The basics —
``!!python/object/apply`` in a file, ``[`` × 5000, a plain ``extends`` cycle, a
missing base — are in tests/schema/test_config_*.py.)
"""

from __future__ import annotations

import importlib.util
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from teamvla_schema import config as config_module
from teamvla_schema.config import (
    MAX_CONFIG_BYTES,
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
    ConfigError,
    apply_overrides,
    field,
    format_config,
    from_dict,
    load_config,
    parse_yaml,
    validate_config,
)

pytestmark = pytest.mark.timeout(30)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def refused(fn: Any, *needles: str, within: float = 2.0) -> ConfigError:
    start = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        fn()
    assert time.perf_counter() - start < within, "refused, but too slowly"
    for needle in needles:
        assert needle in str(info.value), str(info.value)
    return info.value


# --------------------------------------------------------------------------- alias bombs

LIST_BOMB = "\n".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)),
        "dataset:\n  roots: *i",
    ]
)
MAPPING_BOMB = "\n".join(
    [
        "a: &a {x: 1, y: 2, z: 3, w: 4}",
        *(
            f"{chr(98 + i)}: &{chr(98 + i)} {{{', '.join(f'k{j}: *{chr(97 + i)}' for j in range(9))}}}"
            for i in range(8)
        ),
    ]
)


@pytest.mark.parametrize("bomb", [LIST_BOMB, MAPPING_BOMB], ids=["lists", "mappings"])
def test_billion_laughs_is_refused_quickly(tmp_path: Path, bomb: str) -> None:
    # 9**9 (about 387 million) values once expanded; the text is under 1 kB
    assert len(bomb) < 1000 and MAX_YAML_NODES < 9**9
    refused(lambda: parse_yaml(bomb), "invalid YAML", f"more than {MAX_YAML_NODES} values")
    path = write(tmp_path / "bomb.yaml", bomb)
    refused(lambda: load_config(path), "bomb.yaml", "alias bomb")
    refused(lambda: load_config(write(tmp_path / "ok.yaml", "{}"), [f"x={bomb}"]), "alias bomb")


def test_aliases_within_the_limit_still_work() -> None:
    text = "base: &b {lr: 0.1, tags: [a, b]}\none: *b\ntwo: {<<: *b, lr: 0.2}\n"
    assert parse_yaml(text) == {
        "base": {"lr": 0.1, "tags": ["a", "b"]},
        "one": {"lr": 0.1, "tags": ["a", "b"]},
        "two": {"lr": 0.2, "tags": ["a", "b"]},
    }


@pytest.mark.parametrize("aliased", [False, True])
def test_value_limit_boundary(monkeypatch: pytest.MonkeyPatch, aliased: bool) -> None:
    # (a small limit keeps this fast; the limit itself is a module constant)
    monkeypatch.setattr(config_module, "MAX_YAML_NODES", 100)

    def doc(n: int) -> str:  # a list holding n - 1 values: n nodes in all
        if not aliased:
            return "[" + ",".join(["1"] * (n - 1)) + "]"
        return f"a: &a [{','.join(['1'] * 9)}]\nb: [{','.join(['*a'] * ((n - 14) // 10))}]"

    at_limit = parse_yaml(doc(100))
    if aliased:
        assert at_limit["b"][0] == [1] * 9 and len(at_limit["b"]) == 8
    else:
        assert len(at_limit) == 99
    needle = "aliases expand to more than 100" if aliased else "more than 100 values"
    refused(lambda: parse_yaml(doc(110)), needle)


def test_a_wide_file_is_refused_while_composing(monkeypatch: pytest.MonkeyPatch) -> None:
    # Half a million values in 1 MB take PyYAML over 10 s to compose; the count stops it
    # after the first MAX_YAML_NODES (lowered here to keep the test fast).
    monkeypatch.setattr(config_module, "MAX_YAML_NODES", 2_000)
    text = "[" + "1," * (MAX_CONFIG_BYTES // 2 - 2) + "1]"
    refused(lambda: parse_yaml(text), "more than 2000 values", within=1.0)


def test_an_override_changes_only_the_aliased_copy_it_names() -> None:
    data = parse_yaml("a: &x {k: 1, l: [1]}\nb: *x\n")
    out = apply_overrides(data, ["a.k=2"])
    assert out == {"a": {"k": 2, "l": [1]}, "b": {"k": 1, "l": [1]}}
    data["a"]["l"].append(2)
    assert data["b"]["l"] == [1]


@pytest.mark.parametrize("text", ["a: &a [1, *a]", "a: &a {b: *a}", "a: &a [[[*a]]]"])
def test_recursive_aliases_are_refused(tmp_path: Path, text: str) -> None:
    refused(lambda: parse_yaml(text), "invalid YAML", "contains it")
    path = write(tmp_path / "loop.yaml", text + "\n")
    refused(lambda: load_config(path), "loop.yaml")


# --------------------------------------------------------------------------- tags


@pytest.mark.parametrize(
    "value",
    [
        "!!python/object/apply:os.system ['touch {marker}']",
        "!<tag:yaml.org,2002:python/object/apply:os.system> ['touch {marker}']",
        "!p!object/apply:os.system ['touch {marker}']",
        "!!python/object/new:subprocess.Popen [['touch', '{marker}']]",
    ],
    ids=["short", "verbatim", "tag-directive", "popen"],
)
def test_python_tags_in_every_position_never_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "pwned"
    value = value.format(marker=marker)
    directive = "%TAG !p! tag:yaml.org,2002:python/\n---\n" if "!p!" in value else ""
    write(tmp_path / "base.yaml", f"{directive}run:\n  seed: {value}\n")
    top = write(tmp_path / "top.yaml", "extends: base.yaml\n")
    refused(lambda: load_config(top), "base.yaml", "invalid YAML", "python/")
    if not directive:  # a %TAG directive cannot be written inside a one-line override
        refused(lambda: load_config(write(tmp_path / "ok.yaml", "{}"), [f"run.seed={value}"]))
    assert not marker.exists()


@pytest.mark.parametrize(
    "text",
    ["a: !!binary aGVsbG8=", "a: !!set {x, y}", "a: !!timestamp 2024-01-01", "a: !!omap [b: 1]"],
)
def test_tags_that_build_non_config_values_are_refused(text: str) -> None:
    # bytes, sets and dates cannot be validated, saved in a checkpoint or dumped back
    refused(lambda: parse_yaml(text, source="x.yaml"), "x.yaml", "invalid YAML")


# --------------------------------------------------------------------------- size and depth


def test_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with open(path, "w") as fh:
        fh.write("a: [")
        fh.write("1," * (MAX_CONFIG_BYTES // 2))
        fh.write("1]\n")
    refused(lambda: load_config(path), "huge.yaml", "larger than", within=1.0)
    refused(lambda: parse_yaml(path.read_text()), "characters, more than", within=1.0)


@pytest.mark.parametrize("style", ["flow", "block"])
def test_nesting_just_past_the_limit(style: str) -> None:
    def nested(depth: int) -> str:
        if style == "flow":
            return "[" * depth + "]" * depth
        return "".join(f"{'  ' * i}k:\n" for i in range(depth - 1)) + "  " * (depth - 1) + "k: 1\n"

    assert parse_yaml(nested(MAX_YAML_DEPTH)) is not None
    refused(lambda: parse_yaml(nested(MAX_YAML_DEPTH + 1)), f"more than {MAX_YAML_DEPTH} levels")
    # far past it: the refusal comes as early, not after a RecursionError (block style
    # costs indentation quadratic in the depth, so it stops at 500)
    refused(lambda: parse_yaml(nested(100_000 if style == "flow" else 500)), "more than")


def test_aliases_cannot_nest_past_the_limit() -> None:
    # each document level is shallow, but the expansion is 2 * 40 levels deep
    lines = ["l0: &l0 [1]"] + [f"l{i}: &l{i} [[*l{i - 1}]]" for i in range(1, 41)]
    refused(lambda: parse_yaml("\n".join(lines)), "nested more than")


# --------------------------------------------------------------------------- extends


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp/proj/configs/top.yaml, tmp/secret.yaml outside it; run from tmp/elsewhere."""
    write(tmp_path / "secret.yaml", "token: hunter2\n")
    write(tmp_path / "proj" / "shared.yaml", "run: {seed: 1}\n")
    write(tmp_path / "proj" / "configs" / "common.yaml", "run: {seed: 2}\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    return tmp_path


def top_extending(project: Path, base: str) -> Path:
    return write(project / "proj" / "configs" / "top.yaml", f"extends: [{base!r}]\n")


@pytest.mark.parametrize("base", ["../../secret.yaml", "sub/../../../secret.yaml"])
def test_relative_base_leaving_the_config_tree(project: Path, base: str) -> None:
    err = refused(lambda: load_config(top_extending(project, base)), "outside the config tree")
    assert err.key == "extends" and err.source is not None and err.source.endswith("top.yaml")
    assert "hunter2" not in str(err)


def test_absolute_base_is_refused(project: Path) -> None:
    path = top_extending(project, str(project / "secret.yaml"))
    refused(lambda: load_config(path), "absolute path")
    path = top_extending(project, "/etc/passwd")
    refused(lambda: load_config(path), "absolute path")


def test_symlink_out_of_the_tree_is_refused(project: Path) -> None:
    (project / "proj" / "configs" / "link.yaml").symlink_to(project / "secret.yaml")
    refused(lambda: load_config(top_extending(project, "link.yaml")), "outside the config tree")


def test_working_directory_widens_the_tree_to_the_project(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = top_extending(project, "../shared.yaml")
    refused(lambda: load_config(path), "outside the config tree")  # run from elsewhere
    monkeypatch.chdir(project / "proj")  # run from the project: ../shared.yaml is inside it
    assert load_config(path).data == {"run": {"seed": 1}}
    refused(lambda: load_config(top_extending(project, "../../secret.yaml")), "outside")


def test_packaged_default_configs_may_be_named_absolutely(project: Path) -> None:
    spec = importlib.util.find_spec("teamvla_train")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("teamvla-train is not installed")
    common = Path(next(iter(spec.submodule_search_locations))) / "default_configs" / "common.yaml"
    if not common.is_file():
        pytest.skip("teamvla-train ships no default_configs/common.yaml")
    loaded = load_config(top_extending(project, str(common)))
    assert loaded.files[0].endswith("common.yaml") and "run" in loaded.data


def test_cycle_through_a_symlink_is_detected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a.yaml", "extends: b.yaml\n")
    (tmp_path / "b.yaml").symlink_to(tmp_path / "a.yaml")  # b is a itself, by another name
    refused(lambda: load_config("a.yaml"), "circular 'extends': a.yaml -> a.yaml")


@pytest.mark.parametrize("kind", ["directory", "fifo", "dangling"])
def test_base_that_is_not_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    monkeypatch.chdir(tmp_path)
    base = tmp_path / "base.yaml"
    if kind == "directory":
        base.mkdir()
    elif kind == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("needs named pipes")
        os.mkfifo(base)
    else:
        base.symlink_to(tmp_path / "gone.yaml")
    write(tmp_path / "top.yaml", "extends: base.yaml\n")
    expected = {"directory": "is a directory", "fifo": "is a FIFO", "dangling": "not found"}
    refused(
        lambda: load_config("top.yaml"), "top.yaml: extends: base file 'base.yaml'", expected[kind]
    )


@pytest.mark.parametrize("kind", ["directory", "fifo", "dev-zero", "nul", "loop"])
def test_top_level_path_that_is_not_a_file(tmp_path: Path, kind: str) -> None:
    path: str | Path = tmp_path / "top.yaml"
    expected = {
        "directory": "it is a directory",
        "fifo": "it is a FIFO",
        "dev-zero": "it is a character device",
        "nul": "embedded null byte",
        "loop": "Too many levels of symbolic links",
    }[kind]
    if kind == "directory":
        Path(path).mkdir()
    elif kind == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("needs named pipes")
        os.mkfifo(path)
    elif kind == "dev-zero":
        if not os.path.exists("/dev/zero"):
            pytest.skip("needs /dev/zero")
        path = "/dev/zero"
    elif kind == "nul":
        path = str(tmp_path / "a\0b.yaml")
    else:
        Path(path).symlink_to(tmp_path / "other.yaml")
        (tmp_path / "other.yaml").symlink_to(path)
    err = refused(lambda: load_config(path), expected)
    assert str(err) == f"{err.source}: cannot read config file: {expected}" + (
        ", not a file" if kind in ("directory", "fifo", "dev-zero") else ""
    )


# --------------------------------------------------------------------------- non-finite numbers


@dataclass
class Knobs:
    """A test section: plain floats, floats that may be infinite, and containers of floats."""

    lr: float = field(default=1e-3, gt=0.0, doc="")
    scale: float = field(default=1.0, doc="")
    limit: float = field(default=math.inf, doc="the default is inf: inf is allowed")
    loose: float = field(default=0.0, allow_nonfinite=True, doc="declared to allow NaN/inf")
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999], doc="")
    weights: dict[str, float] = field(default_factory=dict, doc="")
    anything: Any = field(default=None, doc="")


SECTIONS = {"knobs": Knobs}


@pytest.mark.parametrize(
    ("text", "key", "shown"),
    [
        ("scale: .inf", "knobs.scale", "inf"),
        ("scale: -.inf", "knobs.scale", "-inf"),
        ("scale: .nan", "knobs.scale", "nan"),
        ("scale: 1e999", "knobs.scale", "inf"),
        ("lr: .nan", "knobs.lr", "nan"),  # a bound (gt 0) alone would let NaN through as "not > 0"
        ("betas: [0.9, .nan]", "knobs.betas[1]", "nan"),
        ("weights: {lift: -.inf}", "knobs.weights.lift", "-inf"),
        ("anything: {deep: [1, .inf]}", "knobs.anything.deep[1]", "inf"),
    ],
)
def test_non_finite_values_in_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, key: str, shown: str
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "exp.yaml", f"knobs:\n  {text}\n")
    loaded = load_config("exp.yaml")
    err = refused(lambda: validate_config(loaded, sections=SECTIONS), "expected a finite number")
    assert (err.source, err.key) == ("exp.yaml", key)
    assert str(err).startswith(f"exp.yaml: {key}: expected a finite number, received {shown} ")


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "1e999", "-1e999", ".NaN"])
def test_non_finite_overrides(tmp_path: Path, value: str) -> None:
    loaded = load_config(write(tmp_path / "exp.yaml", "knobs: {}\n"), [f"knobs.scale={value}"])
    err = refused(lambda: validate_config(loaded, sections=SECTIONS), "finite")
    assert (err.source, err.key) == ("override", "knobs.scale")


def test_fields_that_allow_non_finite_values(tmp_path: Path) -> None:
    loaded = load_config(
        write(tmp_path / "exp.yaml", "knobs: {limit: .inf}\n"),
        ["knobs.loose=.nan", "knobs.limit=1e999"],
    )
    knobs = validate_config(loaded, sections=SECTIONS)["knobs"]
    assert isinstance(knobs, Knobs)
    assert math.isnan(knobs.loose) and knobs.limit == math.inf
    assert from_dict(Knobs, {"limit": -math.inf}).limit == -math.inf


def test_integer_too_big_for_a_float_field() -> None:
    # int -> float conversion used to raise OverflowError out of from_dict
    err = refused(lambda: from_dict(Knobs, {"scale": 10**400}, key="knobs", source="x.yaml"))
    assert (err.source, err.key) == ("x.yaml", "knobs.scale") and "1.8e308" in str(err)


def test_parse_and_show_keep_non_finite_values_for_unvalidated_use() -> None:
    # parse_yaml itself does not judge values: `config show --no-validate` and fields
    # that allow inf need them
    data = parse_yaml("a: .inf\nb: [-.inf, .nan]\n")
    assert data["a"] == math.inf and math.isnan(data["b"][1])
    assert ".inf" in format_config(data)
