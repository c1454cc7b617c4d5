"""Layered YAML configuration: loading, merging, overrides and strict typed validation.

* Files are read with a safe loader only (no tags that build objects, no code)
  and with YAML 1.2 core-schema scalars: ``3e-4`` is a float, ``yes``/``on``
  and dates stay strings, ``010`` is ten.
* A file may name the files it builds on: ``extends: [common.yaml]`` (paths
  relative to the file). Every file of the ``extends`` tree is applied once,
  bases before the files that build on them, in the order listed; mappings
  merge recursively, everything else (lists included) is replaced.
* Command-line overrides are dotted keys parsed as YAML values:
  ``optim.lr=3e-4 dataset.tasks=[lift,handoff]``.
* Each package validates its own section against a typed dataclass with
  :func:`from_dict`; :func:`validate_config` finds the dataclass of every
  top-level section through the ``teamvla.config_sections`` entry points. An
  unknown key, a wrong type or an out-of-range value is a :class:`ConfigError`
  naming the file that set the key (or ``override``), the dotted key and, for
  a typo, the nearest valid key.
* :func:`save_resolved_config` writes the resolved config atomically (run
  directories); checkpoints store the same plain dict in their ``config``
  section and :func:`config_from_checkpoint` reads it back without torch.
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
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path, PurePath
from typing import Any, TypeVar

import yaml

from teamvla_schema.atomic import atomic_write_text
from teamvla_schema.errors import SchemaError

T = TypeVar("T")
EXTENDS_KEY = "extends"
OVERRIDE_SOURCE = "override"
DEFAULT_SOURCE = "default"
SECTIONS_GROUP = "teamvla.config_sections"

# Which distribution provides each standard section, so that a config using a
# section of a package that is not installed gets told what to install (an
# uninstalled package has no entry points to discover).
SECTION_PACKAGES: dict[str, str] = {
    "run": "teamvla-schema",
    "dataset": "teamvla-data",
    "task": "teamvla-data",
    "model": "teamvla-train",
    "optim": "teamvla-train",
    "scheduler": "teamvla-train",
    "trainer": "teamvla-train",
    "eval": "teamvla-train",
}


class ConfigError(SchemaError):
    """A config problem; the message names the file (or ``override``) and the dotted key.

    ``source`` and ``key`` are kept as attributes (``path`` and ``field`` too,
    for code that handles any :class:`SchemaError`); ``reason`` is the bare
    message.
    """

    def __init__(self, message: str, *, key: str | None = None, source: str | None = None) -> None:
        where = ": ".join(x for x in (source, key) if x)
        ValueError.__init__(self, f"{where}: {message}" if where else message)
        self.key = key
        self.source = source
        self.path = source
        self.field = key
        self.step = None
        self.reason = message


# --------------------------------------------------------------------------- YAML

# YAML 1.2 core-schema scalars. PyYAML implements YAML 1.1, where ``3e-4`` is a
# string, ``on``/``no`` are booleans, ``010`` is octal and ``2024-01-01`` is a
# date (which a checkpoint cannot store). Entries: (tag, regular expression,
# possible first characters).
_CORE_RESOLVERS: list[tuple[str, str, str]] = [
    ("tag:yaml.org,2002:null", r"~|null|Null|NULL|", "~nN"),
    ("tag:yaml.org,2002:bool", r"true|True|TRUE|false|False|FALSE", "tTfF"),
    (
        "tag:yaml.org,2002:int",
        r"[-+]?[0-9][0-9_]*|0o[0-7][0-7_]*|0x[0-9a-fA-F][0-9a-fA-F_]*",
        "-+0123456789",
    ),
    (
        "tag:yaml.org,2002:float",
        r"[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)",
        "-+0123456789.",
    ),
    ("tag:yaml.org,2002:merge", r"<<", "<"),
]


class _SafeLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core-schema scalar resolution."""


# Own (empty) table: none of YAML 1.1's resolvers are inherited.
_SafeLoader.yaml_implicit_resolvers = {}

for _tag, _regex, _first in _CORE_RESOLVERS:
    # "" stands for the empty scalar, which is null.
    _first_chars = [*_first, ""] if _tag.endswith(":null") else list(_first)
    _SafeLoader.add_implicit_resolver(_tag, re.compile(f"^(?:{_regex})$"), _first_chars)


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node)).replace("_", "")
    if text.startswith(("0o", "0x")):
        return int(text[2:], 8 if text[1] == "o" else 16)
    return int(text, 10)  # "010" is ten, as in YAML 1.2


_SafeLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


class _SafeDumper(yaml.SafeDumper):
    """SafeDumper that quotes every string that either YAML 1.1 or our loader would not read as a string."""


for _tag, _regex, _first in _CORE_RESOLVERS:
    _SafeDumper.add_implicit_resolver(_tag, re.compile(f"^(?:{_regex})$"), list(_first))

# Line breaks other than "\n" do not survive PyYAML's plain or single-quoted styles
# (they are folded into spaces); double quotes write them as escapes.
_ODD_BREAKS = re.compile("[\r\x85\u2028\u2029]")


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = '"' if _ODD_BREAKS.search(value) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_SafeDumper.add_representer(str, _represent_str)


def parse_yaml(text: str, *, source: str = "<string>") -> Any:
    """Parse YAML text with the safe loader (YAML 1.2 core scalars: ``3e-4`` is a float)."""
    try:
        return yaml.load(text, Loader=_SafeLoader)  # a SafeLoader subclass: no object tags
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        raise ConfigError(f"invalid YAML: {exc}", source=source) from None


def dump_yaml(data: Any) -> str:
    """Serialise a config (plain data or dataclasses) as YAML that :func:`parse_yaml` reads back unchanged."""
    return yaml.dump(
        to_dict(data),
        Dumper=_SafeDumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
    )


# --------------------------------------------------------------------------- loading


@dataclasses.dataclass
class LoadedConfig:
    """A resolved config plus where each dotted key was last set.

    ``files`` lists the files applied, in order; ``sources`` maps dotted keys
    to a file name or ``"override"``; ``overrides`` keeps the command-line
    overrides as given.
    """

    data: dict[str, Any]
    sources: dict[str, str]
    files: list[str]
    overrides: list[str] = dataclasses.field(default_factory=list)

    def source_of(self, key: str) -> str | None:
        """The file (or ``override``) that set ``key`` or its nearest parent."""
        parts = key.split(".")
        while parts:
            found = self.sources.get(".".join(parts))
            if found:
                return found
            parts.pop()
        return self.files[-1] if self.files else None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str) -> LoadedConfig:
        """Wrap an already resolved config (from a checkpoint or run directory) named ``source``."""
        plain = copy.deepcopy(dict(data))
        sources: dict[str, str] = {}
        _record_sources(plain, "", source, sources)
        return cls(plain, sources, [source])


def _record_sources(data: Any, prefix: str, source: str, sources: dict[str, str]) -> None:
    if isinstance(data, Mapping):
        for k, v in data.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            sources[key] = source
            _record_sources(v, key, source, sources)


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``update`` into a copy of ``base``: mappings recursively, other values (lists too) replaced."""
    out = copy.deepcopy(dict(base))
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _display(path: Path) -> str:
    """``path`` as messages show it: relative to the working directory when below it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)
    return str(path) if rel.startswith(os.pardir) else rel


def _read_file(path: Path) -> tuple[dict[str, Any], list[str]]:
    """One file's own mapping (without ``extends``) and the base file names it lists."""
    shown = _display(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror or exc}", source=shown) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file is not UTF-8 text: {exc}", source=shown) from None
    data = parse_yaml(text, source=shown)
    if data is None:  # an empty file (or only comments)
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"a config file must hold a mapping of sections, found a {type(data).__name__}",
            source=shown,
        )
    bases = data.pop(EXTENDS_KEY, None)
    if bases is None:
        bases = []
    elif isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) and b for b in bases):
        raise ConfigError(
            f"expected a file name or a list of file names, received {bases!r}",
            key=EXTENDS_KEY,
            source=shown,
        )
    return data, bases


def _linearise(
    path: Path,
    stack: tuple[Path, ...],
    done: set[Path],
    order: list[tuple[Path, dict[str, Any]]],
) -> None:
    """Depth-first post-order over the ``extends`` tree: bases first, each file once."""
    if path in stack:
        chain = " -> ".join(_display(p) for p in (*stack, path))
        raise ConfigError(
            f"circular '{EXTENDS_KEY}': {chain}", source=_display(stack[-1]), key=EXTENDS_KEY
        )
    if (
        path in done
    ):  # a diamond: the shared base was applied already and must not override its heirs
        return
    data, bases = _read_file(path)
    for base in bases:
        base_path = (path.parent / base).resolve()
        if not base_path.is_file():
            raise ConfigError(
                f"base file {base!r} not found (looked for {_display(base_path)})",
                key=EXTENDS_KEY,
                source=_display(path),
            )
        _linearise(base_path, (*stack, path), done, order)
    done.add(path)
    order.append((path, data))


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value`` into ``(["a", "b", "c"], value)``, the value read as YAML."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not sep or not key or not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", p) for p in parts):
        raise ConfigError(
            f"bad override syntax: expected dotted.key=value (e.g. optim.lr=3e-4), received {text!r}",
            source=OVERRIDE_SOURCE,
        )
    if parts[0] == EXTENDS_KEY:
        raise ConfigError(
            f"'{EXTENDS_KEY}' cannot be overridden; pass the other file instead",
            source=OVERRIDE_SOURCE,
        )
    return parts, parse_yaml(raw, source=f"{OVERRIDE_SOURCE} {text!r}") if raw.strip() else None


def apply_overrides(
    data: Mapping[str, Any], overrides: Sequence[str], sources: dict[str, str] | None = None
) -> dict[str, Any]:
    """Apply dotted ``key=value`` overrides to a copy of ``data``; missing parents are created."""
    out = copy.deepcopy(dict(data))
    for text in overrides:
        parts, value = parse_override(text)
        dotted = ".".join(parts)
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                parent = ".".join(parts[: i + 1])
                raise ConfigError(
                    f"cannot set {dotted}: {parent} is a {type(child).__name__}, not a mapping",
                    key=dotted,
                    source=OVERRIDE_SOURCE,
                )
            node = child
        node[parts[-1]] = value
        if sources is not None:
            sources[dotted] = OVERRIDE_SOURCE
            _record_sources(value, dotted, OVERRIDE_SOURCE, sources)
    return out


def load_config(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> LoadedConfig:
    """Load a config file with its ``extends`` tree and apply dotted ``overrides``.

    Raises :class:`ConfigError` for a missing or unreadable file, invalid YAML,
    a file that is not a mapping, a circular ``extends`` and bad override
    syntax. The result is not validated yet: see :func:`validate_config`.
    """
    order: list[tuple[Path, dict[str, Any]]] = []
    _linearise(Path(path).resolve(), (), set(), order)
    sources: dict[str, str] = {}
    data: dict[str, Any] = {}
    for file_path, file_data in order:
        data = deep_merge(data, file_data)
        _record_sources(file_data, "", _display(file_path), sources)
    data = apply_overrides(data, overrides, sources)
    return LoadedConfig(data, sources, [_display(p) for p, _ in order], list(overrides))


def save_resolved_config(
    path: str | os.PathLike[str], data: LoadedConfig | Mapping[str, Any]
) -> Path:
    """Write a resolved config (plain dict, typed sections or a :class:`LoadedConfig`) as YAML, atomically.

    The file loads back with :func:`load_config` to the same data.
    """
    header = "# Resolved TeamVLA config: every value in force, no 'extends'.\n"
    if isinstance(data, LoadedConfig):
        header += f"# Built from: {', '.join(data.files) or '-'}\n"
        if data.overrides:
            header += f"# Overrides: {' '.join(data.overrides)}\n"
        data = data.data
    path = Path(path)
    atomic_write_text(path, header + dump_yaml(dict(data)))
    return path


def config_from_checkpoint(path: str | os.PathLike[str]) -> LoadedConfig:
    """The resolved config saved in a checkpoint, read from its header alone (numpy only, no tensors)."""
    from teamvla_schema.checkpoint import _decode, read_checkpoint_info

    info = read_checkpoint_info(path)
    structure = info.structure
    if "config" not in structure:
        raise ConfigError("checkpoint holds no config", source=str(path))
    return LoadedConfig.from_mapping(_decode(structure["config"], {}, info.path), source=str(path))


# --------------------------------------------------------------------------- typed validation

_BOUNDS: dict[str, tuple[str, typing.Callable[[Any, Any], bool]]] = {
    "ge": (">=", lambda a, b: a >= b),
    "gt": (">", lambda a, b: a > b),
    "le": ("<=", lambda a, b: a <= b),
    "lt": ("<", lambda a, b: a < b),
}


def field(
    *,
    default: Any = dataclasses.MISSING,
    default_factory: Any = dataclasses.MISSING,
    doc: str = "",
    pattern: str | None = None,
    expected: str | None = None,
    **bounds: Any,
) -> Any:
    """A config dataclass field with a docstring and checks.

    ``ge``/``gt``/``le``/``lt`` bound a number (every item of a list of
    numbers); ``pattern`` is a regular expression a string must match in full,
    and ``expected`` describes it in error messages (``"'cpu' or 'cuda:N'"``).
    """
    unknown = set(bounds) - set(_BOUNDS)
    if unknown:
        raise TypeError(f"unknown field check(s) {sorted(unknown)}; use ge, gt, le, lt, pattern")
    metadata: dict[str, Any] = {"doc": doc, **bounds}
    if pattern is not None:
        re.compile(pattern)  # fail at class definition, not at first use
        metadata["pattern"] = pattern
        metadata["expected"] = expected or f"a string matching {pattern!r}"
    kwargs: dict[str, Any] = {"metadata": metadata}
    if default is not dataclasses.MISSING:
        kwargs["default"] = default
    if default_factory is not dataclasses.MISSING:
        kwargs["default_factory"] = default_factory
    return dataclasses.field(**kwargs)


def nearest_key(key: str, valid: Sequence[str]) -> str | None:
    """The closest valid key to a misspelt one (case-insensitive), if any is close."""
    by_lower = {str(v).lower(): str(v) for v in valid}
    if key.lower() in by_lower:
        return by_lower[key.lower()]
    matches = difflib.get_close_matches(key.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[matches[0]] if matches else None


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "").replace("collections.abc.", "")


def _coerce(value: Any, tp: Any, key: str, source: str | None, cfg: LoadedConfig | None) -> Any:
    """``value`` checked against type ``tp`` (and converted where lossless: int -> float, list -> tuple)."""

    def fail(what: str) -> typing.NoReturn:
        raise ConfigError(
            f"expected {what}, received {value!r} ({type(value).__name__})", key=key, source=source
        )

    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own message is the most precise one
            return _coerce(value, options[0], key, source, cfg)
        for option in options:
            try:
                return _coerce(value, option, key, source, cfg)
            except ConfigError:
                continue
        fail(_type_name(tp))
    if origin is typing.Literal:
        if any(type(value) is type(a) and value == a for a in args):
            return value
        close = nearest_key(str(value), [str(a) for a in args])
        hint = f" (did you mean {close!r}?)" if close else ""
        raise ConfigError(
            f"expected one of {list(args)}, received {value!r}{hint}", key=key, source=source
        )
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return from_dict(tp, value, key=key, config=cfg, source=source)
    if tp in (list, tuple) or origin in (list, tuple, Sequence):
        if not isinstance(value, list | tuple):
            fail("a list")
        if (origin is tuple or tp is tuple) and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                fail(f"a list of {len(args)} items")
            return tuple(
                _coerce(v, t, f"{key}[{i}]", source, cfg)
                for i, (v, t) in enumerate(zip(value, args, strict=True))
            )
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{key}[{i}]", source, cfg) for i, v in enumerate(value)]
        return tuple(items) if tuple in (origin, tp) else items
    if tp is dict or origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            fail("a mapping")
        key_tp, val_tp = args if len(args) == 2 else (Any, Any)
        return {
            _coerce(k, key_tp, f"{key}.{k}", source, cfg): _coerce(
                v, val_tp, f"{key}.{k}", source, cfg
            )
            for k, v in value.items()
        }
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
    elif isinstance(tp, type) and issubclass(tp, PurePath):
        if isinstance(value, str | PurePath):
            return tp(value)
        fail("a path (string)")
    else:
        raise TypeError(f"unsupported config field type {tp!r} at {key}")
    fail(_type_name(tp))


def _check_value(value: Any, meta: Mapping[str, Any], key: str, source: str | None) -> None:
    """Range and pattern checks from :func:`field`; bounds apply to each item of a list."""
    if value is None:
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_value(item, meta, f"{key}[{i}]", source)
        return
    for name, (sym, ok) in _BOUNDS.items():
        if name in meta and not ok(value, meta[name]):
            raise ConfigError(
                f"expected a value {sym} {meta[name]}, received {value!r}", key=key, source=source
            )
    pattern = meta.get("pattern")
    if pattern is not None and isinstance(value, str) and not re.fullmatch(pattern, value):
        raise ConfigError(
            f"expected {meta['expected']}, received {value!r}", key=key, source=source
        )


def from_dict(
    cls: type[T],
    data: Any,
    *,
    key: str = "",
    config: LoadedConfig | None = None,
    source: str | None = None,
) -> T:
    """Build dataclass ``cls`` from ``data`` strictly: unknown keys, types and ranges are checked.

    ``key`` is the dotted position of ``data`` (``"dataset"``) for messages;
    ``config`` tells which file set each key (else ``source`` names the one
    origin). ``None`` stands for an empty mapping (all defaults). After
    construction a ``validate()`` method, if the class has one, runs for
    cross-field checks; a ``ValueError`` from it (or from ``__post_init__``) is
    reported as a :class:`ConfigError` at ``key``.
    """

    def src(k: str) -> str | None:
        return config.source_of(k) if config is not None else source

    def dotted(name: str) -> str:
        return f"{key}.{name}" if key else str(name)

    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"expected a mapping of {cls.__name__} keys, received {data!r}",
            key=key or None,
            source=src(key),
        )
    try:
        hints = typing.get_type_hints(cls)
    except NameError as exc:
        raise TypeError(f"cannot resolve the field types of {cls.__qualname__}: {exc}") from None
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    for k in data:
        if k not in fields:
            close = nearest_key(str(k), list(fields))
            hint = (
                f"did you mean {dotted(close)!r}?" if close else f"valid keys: {', '.join(fields)}"
            )
            raise ConfigError(f"unknown key; {hint}", key=dotted(k), source=src(dotted(k)))
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError("missing required key", key=dotted(name), source=src(key))
            continue
        value = _coerce(data[name], hints[name], dotted(name), src(dotted(name)), config)
        _check_value(value, f.metadata, dotted(name), src(dotted(name)))
        kwargs[name] = value
    try:
        obj = cls(**kwargs)
        validate = getattr(obj, "validate", None)
        if callable(validate):
            validate()
    except ConfigError:
        raise
    except ValueError as exc:
        # A cross-field check involves several keys: name every file that set one of them.
        where = _sources_within(config, key, data) if config is not None else source
        raise ConfigError(str(exc), key=key or None, source=where) from None
    return obj


def _sources_within(config: LoadedConfig, key: str, data: Mapping[str, Any]) -> str | None:
    """The files (and ``override``) that set the values under ``key``, joined by " + "."""
    found: list[str] = []

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for k, v in node.items():
            dotted = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, Mapping) and v:
                walk(v, dotted)
            else:
                found.append(config.source_of(dotted) or "")

    walk(data, key)
    rank = {name: i for i, name in enumerate(config.files)}
    unique = sorted({f for f in found if f}, key=lambda f: rank.get(f, len(rank)))
    return " + ".join(unique) or config.source_of(key)


def to_dict(obj: Any) -> Any:
    """A config back to plain YAML/JSON data: dataclasses to dicts, tuples to lists, paths to strings.

    Fields with ``init=False`` are derived, not configured, and are left out, so
    that ``from_dict(Cls, to_dict(obj)) == obj``.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, PurePath):
        return str(obj)
    return obj


# --------------------------------------------------------------------------- sections


def section_entry_points() -> dict[str, EntryPoint]:
    """The installed ``teamvla.config_sections`` entry points by section name (nothing is imported)."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=SECTIONS_GROUP):
        found.setdefault(ep.name, ep)
    return found


def _package_of(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.name if dist is not None else ep.value.split(".", 1)[0].replace("_", "-")


def _load_section_class(name: str, ep: EntryPoint, source: str | None) -> type:
    try:
        cls = ep.load()
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"section '{name}' is validated by {ep.value} from package {_package_of(ep)}, "
            f"which cannot be loaded ({type(exc).__name__}: {exc}); reinstall it (uv sync)",
            key=name,
            source=source,
        ) from None
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"entry point {name} = {ep.value} is not a dataclass")
    return cls


def validate_config(
    loaded: LoadedConfig, *, sections: Mapping[str, type] | None = None
) -> dict[str, object]:
    """Validate every top-level section present in ``loaded``; return the typed section objects.

    Section classes come from ``sections`` when given, else from the
    ``teamvla.config_sections`` entry points; only the classes of the sections
    present are imported (validating ``run``/``dataset``/``task`` does not
    import teamvla-train or torch). Sections absent from the config are not in
    the result: build them with ``from_dict(cls, {})`` for their defaults.
    """
    registry: Mapping[str, Any] = sections if sections is not None else section_entry_points()
    typed: dict[str, object] = {}
    for name, value in loaded.data.items():
        source = loaded.source_of(str(name))
        if name not in registry:
            if name in SECTION_PACKAGES:
                raise ConfigError(
                    f"section '{name}' needs the package {SECTION_PACKAGES[name]}, which is not installed "
                    f"(install it: uv sync, or pip install {SECTION_PACKAGES[name]})",
                    key=str(name),
                    source=source,
                )
            known = sorted({*registry, *SECTION_PACKAGES})
            close = nearest_key(str(name), known)
            hint = f"did you mean {close!r}?" if close else f"known sections: {', '.join(known)}"
            raise ConfigError(f"unknown section; {hint}", key=str(name), source=source)
        entry = registry[name]
        cls = _load_section_class(name, entry, source) if isinstance(entry, EntryPoint) else entry
        typed[name] = from_dict(cls, value, key=name, config=loaded)
    return typed


def resolved_data(loaded: LoadedConfig, typed: Mapping[str, object]) -> dict[str, Any]:
    """The fully resolved config: validated sections with their defaults filled in, in file order."""
    return {
        name: to_dict(typed[name]) if name in typed else copy.deepcopy(v)
        for name, v in loaded.data.items()
    }


# --------------------------------------------------------------------------- display


def _yaml_value_lines(value: Any) -> list[str]:
    """``value`` alone as YAML lines: scalars and lists of scalars on one line where possible."""
    text = yaml.dump(
        value,
        Dumper=_SafeDumper,
        sort_keys=False,
        default_flow_style=None,
        width=1_000_000,
        allow_unicode=True,
    )
    lines = text.splitlines()
    if len(lines) > 1 and lines[-1] == "...":  # the end marker PyYAML puts after a lone scalar
        lines.pop()
    return lines


def format_config(data: Mapping[str, Any], sources: Mapping[str, str] | None = None) -> str:
    """YAML for ``data``; with ``sources`` every value is annotated with the file that set it.

    A key missing from ``sources`` is annotated ``default``. The annotated text
    is valid YAML that parses back to ``data``.
    """
    plain = to_dict(dict(data))
    if sources is None or not plain:
        return dump_yaml(plain)
    lines: list[str] = []

    def emit(node: Mapping[Any, Any], prefix: str, indent: str) -> None:
        for k, v in node.items():
            dotted = f"{prefix}.{k}" if prefix else str(k)
            # The key as YAML writes it (quoted where needed), without its value.
            head = (
                yaml.dump({k: None}, Dumper=_SafeDumper, width=1_000_000)
                .splitlines()[0]
                .removesuffix(" null")
            )
            if isinstance(v, Mapping) and v:
                lines.append(indent + head)
                emit(v, dotted, indent + "  ")
                continue
            note = f"# {sources.get(dotted, DEFAULT_SOURCE)}"
            value_lines = _yaml_value_lines(v)
            block = (
                isinstance(v, list | Mapping) and v and not value_lines[0].startswith(("[", "{"))
            )
            if len(value_lines) == 1 and not block:
                lines.append(f"{indent}{head} {value_lines[0]}  {note}")
            else:  # a block list or a long string: the note goes on its own line above the key
                lines.append(indent + note)
                lines.append(indent + head)
                lines.extend(f"{indent}  {line}" for line in value_lines)

    emit(plain, "", "")
    return "\n".join(lines) + "\n"


__all__ = [
    "DEFAULT_SOURCE",
    "EXTENDS_KEY",
    "OVERRIDE_SOURCE",
    "SECTIONS_GROUP",
    "SECTION_PACKAGES",
    "ConfigError",
    "LoadedConfig",
    "apply_overrides",
    "config_from_checkpoint",
    "deep_merge",
    "dump_yaml",
    "field",
    "format_config",
    "from_dict",
    "load_config",
    "nearest_key",
    "parse_override",
    "parse_yaml",
    "resolved_data",
    "save_resolved_config",
    "section_entry_points",
    "to_dict",
    "validate_config",
]
