"""Layered YAML configuration: loading, merging, overrides and strict typed validation.

* Files are read with a safe loader only (no tags, no code).
* A file may name the files it builds on: ``extends: [common.yaml]`` (paths
  relative to the file). Bases are merged first, in order, then the file itself;
  mappings merge recursively, everything else (lists included) is replaced.
* Command-line overrides are dotted keys parsed as YAML values:
  ``optim.lr=3e-4 dataset.tasks=[lift,handoff]``.
* Each package validates its own section against a typed dataclass with
  :func:`from_dict`; an unknown key, a wrong type or an out-of-range value is a
  :class:`ConfigError` naming the file, the dotted key and, for a typo, the
  nearest valid key.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from teamvla_schema.errors import SchemaError

T = TypeVar("T")
EXTENDS_KEY = "extends"


class ConfigError(SchemaError):
    """A config problem; the message names the file and the dotted key."""

    def __init__(self, message: str, *, key: str | None = None, source: str | None = None) -> None:
        self.key = key
        self.source = source
        where = ": ".join(x for x in (source, key) if x)
        SchemaError.__init__(self, f"{where}: {message}" if where else message)
        self.reason = message


class _SafeLoader(yaml.SafeLoader):
    """SafeLoader that also reads ``3e-4`` as a float (YAML 1.2 behaviour)."""


_SafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_yaml(text: str, *, source: str = "<string>") -> Any:
    """Parse YAML text with the safe loader."""
    try:
        return yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - _SafeLoader subclasses SafeLoader
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", source=source) from None


def dump_yaml(data: Any) -> str:
    """Serialise a resolved config as YAML (safe dumper, keys in insertion order)."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


# --------------------------------------------------------------------------- loading


@dataclasses.dataclass
class LoadedConfig:
    """A resolved config plus where each dotted key was last set."""

    data: dict[str, Any]
    sources: dict[str, str]
    files: list[str]

    def source_of(self, key: str) -> str | None:
        """The file (or ``override``) that set ``key`` or its nearest parent."""
        parts = key.split(".")
        while parts:
            found = self.sources.get(".".join(parts))
            if found:
                return found
            parts.pop()
        return self.files[-1] if self.files else None


def _record_sources(data: Any, prefix: str, source: str, sources: dict[str, str]) -> None:
    if isinstance(data, Mapping):
        for k, v in data.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            sources[key] = source
            _record_sources(v, key, source, sources)


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``update`` into a copy of ``base``: mappings recursively, other values replaced."""
    out = copy.deepcopy(dict(base))
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _display(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def _load_file(path: Path, sources: dict[str, str], files: list[str], stack: tuple[Path, ...]) -> dict[str, Any]:
    path = path.resolve()
    shown = _display(path)
    if path in stack:
        chain = " -> ".join(_display(p) for p in (*stack, path))
        raise ConfigError(f"circular '{EXTENDS_KEY}': {chain}", source=shown)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror}", source=shown) from None
    data = parse_yaml(text, source=shown)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"a config file must hold a mapping, found {type(data).__name__}", source=shown)
    bases = data.pop(EXTENDS_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError("expected a list of file names", key=EXTENDS_KEY, source=shown)
    merged: dict[str, Any] = {}
    for base in bases:
        merged = deep_merge(merged, _load_file(path.parent / base, sources, files, (*stack, path)))
    _record_sources(data, "", shown, sources)
    files.append(shown)
    return deep_merge(merged, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value`` into (["a", "b", "c"], YAML-parsed value)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", p) for p in key.split(".")):
        raise ConfigError(f"override must look like dotted.key=value, received {text!r}", source="override")
    return key.split("."), parse_yaml(raw, source=f"override {text!r}") if raw.strip() else None


def apply_overrides(data: dict[str, Any], overrides: Sequence[str], sources: dict[str, str] | None = None) -> dict[str, Any]:
    """Apply dotted ``key=value`` overrides to a copy of ``data``."""
    out = copy.deepcopy(data)
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(
                    f"cannot set {'.'.join(parts)}: {'.'.join(parts[: i + 1])} is a {type(child).__name__}, not a mapping",
                    key=".".join(parts),
                    source="override",
                )
            node = child
        node[parts[-1]] = value
        if sources is not None:
            key = ".".join(parts)
            sources[key] = "override"
            _record_sources(value, key, "override", sources)
    return out


def load_config(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> LoadedConfig:
    """Load a config file with its ``extends`` chain and apply ``overrides``."""
    sources: dict[str, str] = {}
    files: list[str] = []
    data = _load_file(Path(path), sources, files, ())
    data = apply_overrides(data, overrides, sources)
    return LoadedConfig(data, sources, files)


# --------------------------------------------------------------------------- validation


def nearest_key(key: str, valid: Sequence[str]) -> str | None:
    """The closest valid key to a misspelt one, if any is close."""
    matches = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, source: str | None, cfg: LoadedConfig | None) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, source, cfg)
            except ConfigError as exc:
                errors.append(exc.reason)
        raise ConfigError(f"expected {_type_name(tp)}, received {value!r}", key=key, source=source)
    if origin is typing.Literal:
        if value in args:
            return value
        close = nearest_key(str(value), [str(a) for a in args])
        hint = f" (did you mean {close!r}?)" if close else ""
        raise ConfigError(f"expected one of {list(args)}, received {value!r}{hint}", key=key, source=source)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return from_dict(tp, value, key=key, config=cfg, source=source)
    if origin in (list, Sequence, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"expected a list, received {value!r}", key=key, source=source)
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{key}[{i}]", source, cfg) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"expected a mapping, received {value!r}", key=key, source=source)
        val_tp = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, val_tp, f"{key}.{k}", source, cfg) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"unsupported config field type {tp!r} at {key}")
    raise ConfigError(f"expected {_type_name(tp)}, received {value!r}", key=key, source=source)


def _check_range(value: Any, meta: Mapping[str, Any], key: str, source: str | None) -> None:
    if value is None:
        return
    checks = [("ge", ">=", lambda a, b: a >= b), ("gt", ">", lambda a, b: a > b),
              ("le", "<=", lambda a, b: a <= b), ("lt", "<", lambda a, b: a < b)]
    for name, sym, ok in checks:
        if name in meta and not ok(value, meta[name]):
            raise ConfigError(f"expected a value {sym} {meta[name]}, received {value!r}", key=key, source=source)


def field(*, default: Any = dataclasses.MISSING, default_factory: Any = dataclasses.MISSING, doc: str = "", **bounds: Any) -> Any:
    """A dataclass field with a docstring and range bounds (``ge``, ``gt``, ``le``, ``lt``)."""
    kwargs: dict[str, Any] = {"metadata": {"doc": doc, **bounds}}
    if default is not dataclasses.MISSING:
        kwargs["default"] = default
    if default_factory is not dataclasses.MISSING:
        kwargs["default_factory"] = default_factory
    return dataclasses.field(**kwargs)


def from_dict(
    cls: type[T],
    data: Any,
    *,
    key: str = "",
    config: LoadedConfig | None = None,
    source: str | None = None,
) -> T:
    """Build dataclass ``cls`` from ``data`` strictly (unknown keys, types and ranges checked).

    After construction a ``validate()`` method, if the class has one, runs for
    cross-field checks; it should raise ``ValueError`` and is reported as a
    :class:`ConfigError` at ``key``.
    """
    def src(k: str) -> str | None:
        return config.source_of(k) if config is not None else source

    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"expected a mapping, received {data!r}", key=key or None, source=src(key))
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for k in data:
        if k not in fields:
            dotted = f"{key}.{k}" if key else str(k)
            close = nearest_key(str(k), list(fields))
            hint = f"; did you mean {(f'{key}.' if key else '') + close!r}?" if close else f"; valid keys: {sorted(fields)}"
            raise ConfigError(f"unknown key{hint}", key=dotted, source=src(dotted))
    kwargs = {}
    for name, f in fields.items():
        dotted = f"{key}.{name}" if key else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError("missing required key", key=dotted, source=src(key))
            continue
        value = _coerce(data[name], hints[name], dotted, src(dotted), config)
        _check_range(value, f.metadata, dotted, src(dotted))
        kwargs[name] = value
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ValueError as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(str(exc), key=key or None, source=src(key)) from None
    return obj


def to_dict(obj: Any) -> Any:
    """A dataclass config back to plain dicts/lists (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
