"""The registry of simulated tasks, keyed by name.

A task is a :class:`TaskSpec`: its default step limit and instruction
templates, where its blocks spawn, whether the scene has the drawer, its
success predicate and its scripted expert. The built-in tasks (lift, handoff,
drawer) are registered by :mod:`teamvla_data.sim.tasks` when
``teamvla_data.sim`` is imported; :func:`register_task` adds more.

Everything random about a task derives from its **name**, never from its
position in the registry, so registering a task changes no other task's scenes
or seeds:

* the random stream of its scenes is :func:`scene_key` (the built-in tasks keep
  the keys 0, 1, 2 they always had, so their recorded data stays byte-identical;
  any other task's key is a hash of its name, at least ``2**32``);
* its evaluation seeds are the block :func:`eval_block` of
  :func:`teamvla_data.sim.seeds.eval_seeds` (a hash of its name);
* its recording seeds hash the name (:func:`teamvla_data.sim.seeds.episode_seed`).

:func:`register_task` refuses a task whose scene key or evaluation block
collides with a registered task's, so two tasks can never share seeds.

This module imports nothing else of the simulator (the world, the experts and
the configuration all look tasks up here).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: Scene stream keys of the built-in tasks (their original positions; kept so data stays the same).
LEGACY_SCENE_KEYS = {"lift": 0, "handoff": 1, "drawer": 2}
#: Evaluation seeds per task (the size of one block).
EVAL_BLOCK_SIZE = 10_000_000
#: Number of evaluation blocks a task name can hash to (seeds stay below 2**53).
EVAL_BLOCKS = 2**28


@dataclass(frozen=True)
class TaskSpec:
    """One simulated task.

    ``success(state, task_cfg, layout) -> bool`` is the predicate, judged on
    ``state.target``; ``expert(task_cfg, rng) -> Expert`` builds the scripted
    expert. ``spawn_x`` is the range of block centres (world x); blocks rest on
    the cabinet top when ``has_drawer``, on the table otherwise.
    """

    name: str
    max_steps: int
    instructions: tuple[str, ...]
    spawn_x: tuple[float, float]
    has_drawer: bool
    success: Callable[..., bool]
    expert: Callable[..., Any]
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"task name must be an identifier, received {self.name!r}")
        if self.max_steps < 1:
            raise ValueError(
                f"task {self.name!r}: max_steps must be >= 1, received {self.max_steps}"
            )
        if not self.instructions or any(t.count("{color}") != 1 for t in self.instructions):
            raise ValueError(
                f"task {self.name!r}: instructions must be templates with one '{{color}}' each, "
                f"received {list(self.instructions)!r}"
            )
        lo, hi = self.spawn_x
        if not lo < hi:
            raise ValueError(
                f"task {self.name!r}: spawn_x must be (low, high), received {self.spawn_x}"
            )


_TASKS: dict[str, TaskSpec] = {}


def _hash(kind: str, name: str) -> int:
    digest = hashlib.blake2b(f"teamvla-sim/{kind}/{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def scene_key(name: str) -> int:
    """Key of the random stream of ``name``'s scenes (from the name alone)."""
    if name in LEGACY_SCENE_KEYS:
        return LEGACY_SCENE_KEYS[name]
    return 2**32 + _hash("scene", name) % 2**32


def eval_block(name: str) -> int:
    """Index of ``name``'s block of evaluation seeds (from the name alone)."""
    return _hash("eval", name) % EVAL_BLOCKS


def register_task(spec: TaskSpec, *, replace: bool = False) -> TaskSpec:
    """Add ``spec`` to the registry and return it.

    Registering the same spec again is a no-op; a different spec under a
    registered name needs ``replace=True``. ``ValueError`` if the new task's
    scene key or evaluation block collides with another task's.
    """
    old = _TASKS.get(spec.name)
    if old is not None and not replace:
        if old == spec:
            return old
        raise ValueError(
            f"task {spec.name!r} is already registered (pass replace=True to replace it)"
        )
    for other in _TASKS.values():
        if other.name == spec.name:
            continue
        if scene_key(other.name) == scene_key(spec.name) or eval_block(other.name) == eval_block(
            spec.name
        ):
            raise ValueError(
                f"task {spec.name!r} would share seeds with {other.name!r} (hash collision); "
                "choose another name"
            )
    _TASKS[spec.name] = spec
    return spec


def unregister_task(name: str) -> None:
    """Remove a task (tests use this to undo :func:`register_task`)."""
    check_task(name)
    del _TASKS[name]


def check_task(name: str) -> None:
    """``ValueError`` unless ``name`` is a registered task."""
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; tasks are {', '.join(_TASKS)}")


def get_task(name: str) -> TaskSpec:
    """The registered task ``name`` (``ValueError`` naming the known tasks otherwise)."""
    spec = _TASKS.get(name)
    if spec is None:
        check_task(name)
    assert spec is not None
    return spec


def task_names() -> tuple[str, ...]:
    """Names of all registered tasks, in registration order."""
    return tuple(_TASKS)
