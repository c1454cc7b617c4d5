"""The built-in tasks (lift, handoff, drawer), registered in :mod:`teamvla_data.sim.registry`.

Imported by ``teamvla_data.sim``, so the tasks exist as soon as any part of
the simulator is imported. A new task is one more :func:`register_task` call
with its own :class:`TaskSpec` (predicate, expert, spawn range, step limit,
instruction templates); see docs/sim.md. Its seeds derive from its name, so
registering it changes nothing about these three.
"""

from __future__ import annotations

from teamvla_data.sim.config import DEFAULT_INSTRUCTIONS, DEFAULT_MAX_STEPS
from teamvla_data.sim.experts import DrawerExpert, HandoffExpert, LiftExpert
from teamvla_data.sim.layout import SPAWN_X
from teamvla_data.sim.registry import TaskSpec, get_task, register_task, task_names
from teamvla_data.sim.state import drawer_success, handoff_success, lift_success

__all__ = ["BUILTIN_TASKS", "TaskSpec", "get_task", "register_task", "task_names"]

BUILTIN_TASKS: tuple[TaskSpec, ...] = (
    TaskSpec(
        name="lift",
        max_steps=DEFAULT_MAX_STEPS["lift"],
        instructions=tuple(DEFAULT_INSTRUCTIONS["lift"]),
        spawn_x=SPAWN_X["lift"],
        has_drawer=False,
        success=lift_success,
        expert=LiftExpert,
        description="arm A grasps the named block and raises it; B stays still",
    ),
    TaskSpec(
        name="handoff",
        max_steps=DEFAULT_MAX_STEPS["handoff"],
        instructions=tuple(DEFAULT_INSTRUCTIONS["handoff"]),
        spawn_x=SPAWN_X["handoff"],
        has_drawer=False,
        success=handoff_success,
        expert=HandoffExpert,
        description="A picks the block and presents it mid-table, B takes it, A lets go",
    ),
    TaskSpec(
        name="drawer",
        max_steps=DEFAULT_MAX_STEPS["drawer"],
        instructions=tuple(DEFAULT_INSTRUCTIONS["drawer"]),
        spawn_x=SPAWN_X["drawer"],
        has_drawer=True,
        success=drawer_success,
        expert=DrawerExpert,
        description="B pulls the drawer open while A puts the named block into the tray",
    ),
)

for _spec in BUILTIN_TASKS:
    register_task(_spec)  # idempotent: the same spec again is a no-op
