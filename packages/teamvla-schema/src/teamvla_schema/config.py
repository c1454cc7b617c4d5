"""Layered YAML configuration: loading, merging, overrides and strict typed validation.

* Files are read with a safe loader only (no tags that build objects, no code)
  and with YAML 1.2 core-schema scalars: ``3e-4`` is a float, ``yes``/``on``
  and dates stay strings, ``010`` is ten.
* A file may name the files it builds on: ``extends: [common.yaml]`` (paths
  relative to the file). Every file of the ``extends`` tree is applied once,
  bases before the files that build on them, in the order listed; mappings
  merge recursively, everything else (lists included) is replaced. Bases stay
  inside the config tree (see :func:`load_config`).
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
import importlib.util
import math
import os
import re
import stat
import types
import typing
from collections.abc import Mapping, Sequence
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path, PurePath
from typing import Any, TypeVar

import yaml

from teamvla_schema.atomic import atomic_write_text, file_kind
from teamvla_schema.errors import SchemaError

T = TypeVar("T")
EXTENDS_KEY = "extends"
#: Largest config file (and YAML text) read; real configs are a few kB.
MAX_CONFIG_BYTES = 1024 * 1024
#: Deepest nesting of YAML collections (after expanding aliases); configs nest < 10 deep.
MAX_YAML_DEPTH = 64
#: Most YAML nodes a document may hold once its aliases are expanded (stops alias bombs).
MAX_YAML_NODES = 50_000
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


def _yaml_error(problem: str, mark: Any) -> yaml.YAMLError:
    return yaml.composer.ComposerError(None, None, problem, mark)


class _SafeLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core-schema scalars and limits on size, nesting and aliases.

    Only plain data tags are constructed (null, bool, int, float, str, seq,
    map): ``!!python/...``, ``!!binary``, ``!!set``, ``!!timestamp``, ``!!omap``
    and ``!!pairs`` are refused. A document with more than
    :data:`MAX_YAML_NODES` values (counting what its aliases expand to: a
    "billion laughs" bomb), collections nested deeper than
    :data:`MAX_YAML_DEPTH` (aliases expanded too), or a node that contains
    itself through an alias is refused while composing, before anything is
    constructed.
    """

    _depth = 0  # collections being composed, outermost first
    _nodes = 0  # nodes composed so far

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):  # no new node: checked by _check_expansion
            return super().compose_node(parent, index)
        self._nodes += 1
        if self._nodes > MAX_YAML_NODES:
            raise _yaml_error(
                f"more than {MAX_YAML_NODES} values; a config is not a data file",
                self.peek_event().start_mark,
            )
        if not self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent):
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _yaml_error(
                    f"collections nested more than {MAX_YAML_DEPTH} levels deep",
                    self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None:
            _check_expansion(node)
        return node


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a node graph that is cyclic, or too big or too deep once aliases are expanded.

    Memoised per node, so an alias bomb costs the size of its text, not of its expansion.
    """
    memo: dict[int, tuple[int, int]] = {}  # id(node) -> (values, collection height)
    active: set[int] = set()

    def too_deep(node: yaml.Node) -> yaml.YAMLError:
        return _yaml_error(
            f"aliases expand to collections nested more than {MAX_YAML_DEPTH} levels deep",
            node.start_mark,
        )

    def walk(node: yaml.Node, depth: int) -> tuple[int, int]:
        """(values, height) of ``node``, a collection at nesting ``depth`` or a scalar in one."""
        key = id(node)
        if key in active:
            raise _yaml_error("an alias refers to a collection that contains it", node.start_mark)
        if key not in memo:
            if isinstance(node, yaml.SequenceNode):
                children = list(node.value)
            elif isinstance(node, yaml.MappingNode):
                children = [part for pair in node.value for part in pair]
            else:
                children = None
            size, height = 1, 0
            if children is not None:
                if depth > MAX_YAML_DEPTH:
                    raise too_deep(node)
                active.add(key)
                height = 1
                for child in children:
                    child_size, child_height = walk(child, depth + 1)
                    size += child_size
                    height = max(height, child_height + 1)
                    if size > MAX_YAML_NODES:
                        raise _yaml_error(
                            f"aliases expand to more than {MAX_YAML_NODES} values (an alias bomb?)",
                            node.start_mark,
                        )
                active.discard(key)
            memo[key] = (size, height)
        size, height = memo[key]
        if depth + height - 1 > MAX_YAML_DEPTH:
            raise too_deep(node)
        return size, height

    walk(root, 1)


# Only the plain-data constructors of SafeLoader (None: the one that refuses unknown tags).
_SafeLoader.yaml_constructors = {
    tag: constructor
    for tag, constructor in yaml.SafeLoader.yaml_constructors.items()
    if tag is None
    or tag.rsplit(":", 1)[-1] in {"null", "bool", "int", "float", "str", "seq", "map"}
}
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
    """Parse YAML text with the safe loader (YAML 1.2 core scalars: ``3e-4`` is a float).

    Plain data only; see :class:`_SafeLoader` for the tags and sizes refused.
    Aliases become independent copies, so that changing one place (an
    override) never changes another.
    """
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"invalid YAML: {len(text)} characters, more than the {MAX_CONFIG_BYTES} a config may hold",
            source=source,
        )
    try:
        data = yaml.load(text, Loader=_SafeLoader)  # a SafeLoader subclass: no object tags
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        raise ConfigError(f"invalid YAML: {exc}", source=source) from None
    return _unshare(data)


def _unshare(data: Any) -> Any:
    """``data`` with every list and dict a distinct object (aliases share them)."""
    if isinstance(data, dict):
        return {k: _unshare(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_unshare(v) for v in data]
    return data


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


_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_BINARY", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_NONBLOCK", 0)
)


def _not_a_file(mode: int) -> str | None:
    """What a non-regular file is ("a directory", ...), or None for a regular file."""
    return None if stat.S_ISREG(mode) else file_kind(mode)


def _read_text(path: Path, shown: str) -> str:
    """A config file's text: regular files only, at most :data:`MAX_CONFIG_BYTES`, UTF-8.

    Devices and FIFOs are refused from ``stat`` without being opened; the open
    is non-blocking and checked again, so a FIFO swapped in meanwhile cannot hang it.
    """
    kind: str | None = None
    try:
        kind = _not_a_file(os.stat(path).st_mode)
        if not kind:
            fd = os.open(path, _OPEN_FLAGS)
            with open(fd, "rb") as fh:
                kind = _not_a_file(os.fstat(fd).st_mode)
                raw = b"" if kind else fh.read(MAX_CONFIG_BYTES + 1)
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"cannot read config file: {reason}", source=shown) from None
    if kind:
        raise ConfigError(f"cannot read config file: it is {kind}, not a file", source=shown)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"config file is larger than {MAX_CONFIG_BYTES} bytes; is it really a config?",
            source=shown,
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file is not UTF-8 text: {exc}", source=shown) from None


def _read_file(path: Path) -> tuple[dict[str, Any], list[str]]:
    """One file's own mapping (without ``extends``) and the base file names it lists."""
    shown = _display(path)
    data = parse_yaml(_read_text(path, shown), source=shown)
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


def _config_tree(top: Path) -> list[Path]:
    """The folders ``extends`` may reach from the top-level file ``top`` (resolved).

    The top-level file's folder; and the working directory (the project) when
    ``top`` lies below it, unless that is a file-system root.
    """
    roots = [top.parent]
    try:
        cwd = Path.cwd().resolve()
    except (OSError, ValueError):
        return roots
    if cwd != Path(cwd.anchor) and top.is_relative_to(cwd) and cwd != top.parent:
        roots.append(cwd)
    return roots


def _package_config_dirs() -> list[Path]:
    """The ``default_configs`` folders of the installed packages that define config sections.

    Found from the ``teamvla.config_sections`` entry points without importing
    the packages.
    """
    found: list[Path] = []
    for ep in section_entry_points().values():
        top = ep.value.split(":", 1)[0].split(".", 1)[0]
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            continue
        for location in (spec.submodule_search_locations or []) if spec else []:
            folder = Path(location) / "default_configs"
            if folder.is_dir() and folder.resolve() not in found:
                found.append(folder.resolve())
    return found


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    return any(path.is_relative_to(root) for root in roots)


def _resolve_base(parent: Path, base: str, tree: Sequence[Path]) -> Path:
    """The file ``base`` (an ``extends`` entry of ``parent``) names, checked against the rules.

    A base is a path relative to ``parent``'s folder that resolves (symbolic
    links followed) inside the config tree (:func:`_config_tree`), or a file of
    an installed package's ``default_configs``; absolute paths name only the
    latter. It must be a regular file.
    """
    shown = _display(parent)

    def refuse(why: str) -> ConfigError:
        return ConfigError(f"base file {base!r} {why}", key=EXTENDS_KEY, source=shown)

    try:
        written = Path(base)
        resolved = Path(os.path.realpath(parent.parent / written))
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the name
        raise refuse(f"cannot be resolved: {exc}") from None
    if written.is_absolute() or written.anchor:
        if not _inside(resolved, _package_config_dirs()):
            raise refuse(
                "is an absolute path; write it relative to this file (only the default "
                "configs of installed packages may be named absolutely)"
            )
    elif not _inside(resolved, tree) and not _inside(resolved, _package_config_dirs()):
        roots = " or ".join(_display(root) or "." for root in tree)
        raise refuse(
            f"resolves to {_display(resolved)}, outside the config tree ({roots}); a base must "
            "lie in the folder of the top-level config (or the working directory, when that "
            "holds the top-level config)"
        )
    try:
        mode = os.stat(resolved).st_mode
    except FileNotFoundError:
        raise refuse(f"not found (looked for {_display(resolved)})") from None
    except OSError as exc:
        raise refuse(f"cannot be read: {exc.strerror or exc}") from None
    kind = _not_a_file(mode)
    if kind:
        raise refuse(f"is {kind}, not a config file")
    return resolved


def _linearise(
    path: Path,
    stack: tuple[Path, ...],
    done: set[Path],
    order: list[tuple[Path, dict[str, Any]]],
    tree: Sequence[Path],
) -> None:
    """Depth-first post-order over the ``extends`` tree: bases first, each file once.

    ``tree`` holds the folders bases may come from (:func:`_config_tree`).
    """
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
        _linearise(_resolve_base(path, base, tree), (*stack, path), done, order, tree)
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

    Raises :class:`ConfigError` for a missing or unreadable file (a directory,
    FIFO or device is not read), invalid or oversized YAML, a file that is not
    a mapping, a circular ``extends``, a base outside the config tree and bad
    override syntax. The result is not validated yet: see
    :func:`validate_config`.

    The config tree: every ``extends`` entry is a path relative to the file
    that lists it and must resolve (symbolic links followed) inside the folder
    of the top-level file ``path`` or, when ``path`` lies below the working
    directory, inside the working directory. Absolute paths are refused. Files
    in the ``default_configs`` folder of an installed TeamVLA package are
    allowed from anywhere.
    """
    order: list[tuple[Path, dict[str, Any]]] = []
    try:
        # realpath, not Path.resolve: it leaves a symlink loop for the read to report
        top = Path(os.path.realpath(path))
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the name
        raise ConfigError(f"cannot read config file: {exc}", source=str(path)) from None
    _linearise(top, (), set(), order, _config_tree(top))
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
    allow_nonfinite: bool = False,
    **bounds: Any,
) -> Any:
    """A config dataclass field with a docstring and checks.

    ``ge``/``gt``/``le``/``lt`` bound a number (every item of a list of
    numbers); ``pattern`` is a regular expression a string must match in full,
    and ``expected`` describes it in error messages (``"'cpu' or 'cuda:N'"``).
    Floats must be finite (no ``.nan``, ``.inf``, ``1e999``), anywhere in the
    value, unless ``allow_nonfinite=True`` or the default itself is not finite.
    """
    unknown = set(bounds) - set(_BOUNDS)
    if unknown:
        raise TypeError(f"unknown field check(s) {sorted(unknown)}; use ge, gt, le, lt, pattern")
    metadata: dict[str, Any] = {"doc": doc, **bounds}
    if allow_nonfinite:
        metadata["allow_nonfinite"] = True
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
            try:
                return float(value)
            except OverflowError:  # an integer beyond ±1.8e308
                fail("a number a float can hold (within ±1.8e308)")
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


def _allows_nonfinite(f: dataclasses.Field[Any]) -> bool:
    """Whether a field accepts NaN and ±inf: declared so, or its own default is one."""
    if f.metadata.get("allow_nonfinite"):
        return True
    return isinstance(f.default, float) and not math.isfinite(f.default)


def _check_finite(value: Any, key: str, source: str | None) -> None:
    """Refuse NaN and ±inf anywhere in ``value`` (nested dataclasses check their own fields)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(
            f"expected a finite number, received {value!r} (NaN, .inf and numbers beyond "
            "±1.8e308 such as 1e999 are refused unless the field allows them)",
            key=key,
            source=source,
        )
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_finite(item, f"{key}[{i}]", source)
    elif isinstance(value, Mapping):
        for k, item in value.items():
            _check_finite(item, f"{key}.{k}", source)


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
        if not _allows_nonfinite(f):
            _check_finite(value, dotted(name), src(dotted(name)))
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
