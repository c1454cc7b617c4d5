"""Typed configuration of the bimanual world and its tasks (the ``task:`` config section).

``TaskConfig`` is registered under the ``teamvla.config_sections`` entry point
``task`` and validated strictly with :func:`teamvla_schema.config.from_dict`::

    from teamvla_schema.config import from_dict, load_config
    loaded = load_config("configs/lift.yaml")
    cfg = from_dict(TaskConfig, loaded.data.get("task"), key="task", config=loaded)

Fields whose sensible value depends on the task (``max_steps``,
``instructions``) default to ``None`` and are filled in by :meth:`TaskConfig.resolved`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from teamvla_schema.config import field

from teamvla_data.sim.registry import get_task, task_names

TaskName = Literal["lift", "handoff", "drawer"]
#: The built-in tasks (registered by teamvla_data.sim.tasks); registry.task_names() lists all.
TASKS: tuple[str, ...] = ("lift", "handoff", "drawer")

# Expert episodes last about 37 (lift), 62 (handoff) and 61 (drawer) steps on
# average; the limits leave a learned policy about 1.8x that.
DEFAULT_MAX_STEPS = {"lift": 70, "handoff": 120, "drawer": 110}

# Paraphrased instruction templates; ``{color}`` becomes "red" or "blue".
DEFAULT_INSTRUCTIONS = {
    "lift": [
        "lift the {color} block",
        "pick up the {color} block",
        "raise the {color} cube off the table",
        "grab the {color} block and lift it up",
    ],
    "handoff": [
        "hand the {color} block to the right arm",
        "pass the {color} block from the left arm to the right arm",
        "give the {color} cube to the other arm",
        "hand over the {color} block",
    ],
    "drawer": [
        "open the drawer and put the {color} block inside",
        "place the {color} block in the drawer",
        "put the {color} cube into the open drawer",
        "open the drawer and drop the {color} block in it",
    ],
}


@dataclass
class WorldConfig:
    """The world shared by all tasks: arm shape, actuation limits, physics tolerances, cameras."""

    # --- arms --------------------------------------------------------------------------
    num_joints: int = field(
        default=7, ge=3, le=16, doc="Revolute joints per arm (N); 7 matches real arms."
    )
    max_joint_step: float = field(
        default=0.15,
        gt=0.0,
        le=1.0,
        doc="Largest joint motion per step (rad); targets further away are approached at this speed.",
    )
    grip_speed: float = field(
        default=0.34, gt=0.0, le=1.0, doc="Gripper closure change per step (0 = open, 1 = closed)."
    )

    # --- grasping and falling -----------------------------------------------------------
    grasp_tolerance: float = field(
        default=0.03,
        gt=0.0,
        le=0.1,
        doc="A closing gripper grasps a block or handle whose centre is within this distance (m).",
    )
    slip_distance: float = field(
        default=0.06,
        gt=0.0,
        le=0.3,
        doc="A grasp is lost when the gripper drifts this far from where it holds the object (m).",
    )
    fall_speed: float = field(
        default=0.04,
        gt=0.0,
        le=1.0,
        doc="Speed of a released block falling to its support (m per step).",
    )

    # --- cameras -------------------------------------------------------------------------
    image_size: int = field(
        default=96, ge=16, le=512, doc="Height and width of both camera images (pixels)."
    )
    render: bool = field(
        default=True,
        doc="Render camera images; when false rgb_a/rgb_b are black (fast expert checks).",
    )


@dataclass
class SuccessConfig:
    """Success thresholds of each task's predicate."""

    lift_height: float = field(
        default=0.15,
        gt=0.0,
        le=0.5,
        doc="Lift: held block's bottom at least this high above the table (m).",
    )
    handoff_height: float = field(
        default=0.10,
        ge=0.0,
        le=0.5,
        doc="Handoff: the block's bottom stays at least this high while only arm B holds it (m).",
    )
    drawer_open: float = field(
        default=0.14, gt=0.0, le=0.22, doc="Drawer: minimum opening of the drawer (m)."
    )


@dataclass
class ExpertConfig:
    """Per-episode randomisation of the scripted experts (drawn once per episode from its seed)."""

    speed_min: float = field(
        default=0.012, gt=0.0, le=0.2, doc="Slowest grip-point speed (m per step)."
    )
    speed_max: float = field(
        default=0.02, gt=0.0, le=0.2, doc="Fastest grip-point speed (m per step)."
    )
    approach_height_min: float = field(
        default=0.07, gt=0.0, le=0.3, doc="Lowest pre-grasp height above the block or handle (m)."
    )
    approach_height_max: float = field(
        default=0.14, gt=0.0, le=0.3, doc="Highest pre-grasp height above the block (m)."
    )
    approach_offset: float = field(
        default=0.04,
        ge=0.0,
        le=0.1,
        doc="Pre-grasp points are shifted sideways by up to this much, so approach paths vary (m).",
    )
    noise: float = field(
        default=0.0,
        ge=0.0,
        le=0.05,
        doc="Std of Gaussian noise added to the joint targets (rad); 0 keeps the expert a pure function of the state.",
    )

    def validate(self) -> None:
        """Cross-field checks."""
        if self.speed_min > self.speed_max:
            raise ValueError(
                f"speed_min ({self.speed_min}) must not exceed speed_max ({self.speed_max})"
            )
        if self.approach_height_min > self.approach_height_max:
            raise ValueError(
                f"approach_height_min ({self.approach_height_min}) must not exceed approach_height_max ({self.approach_height_max})"
            )


@dataclass
class RewardConfig:
    """Reward weights: the world returns their sum for each step (``info["reward"]``, the
    Gymnasium env's reward, the recorded ``reward`` field); behaviour cloning ignores them."""

    success: float = field(
        default=1.0,
        doc="Added on the step where the success predicate fires (the episode's last).",
    )
    step: float = field(
        default=0.0,
        doc="Added on every step (negative = time penalty).",
    )
    grasp: float = field(
        default=0.0,
        doc="Added on the step where the named block is first held, by either arm.",
    )


@dataclass
class StorageConfig:
    """How ``teamvla synth`` stores the episodes it records (the EpisodeWriter's options)."""

    image_codec: Literal["lossless", "video"] | None = field(
        default=None,
        doc=(
            "Camera fields as image streams: lossless (bit-exact H.264) or video (lossy AV1); "
            "null = plain arrays. Both need PyAV: pip install teamvla-schema[video]."
        ),
    )
    video_crf: int = field(
        default=30,
        ge=0,
        le=63,
        doc="Quality of image_codec video (AV1 crf, lower is better): docs/storage.md gives the PSNR of each value.",
    )


@dataclass
class TaskConfig:
    """One task of the bimanual world: language, episode limit, success thresholds, expert and world,
    plus how ``teamvla synth`` stores its episodes (``storage``)."""

    # --- task ------------------------------------------------------------------------------
    name: str = field(default="lift", doc="Task: lift, handoff, drawer or another registered task.")
    # field() only attaches metadata here; the default (None) is immutable.
    instructions: list[str] | None = field(
        default=None,
        doc="Instruction templates with a {color} placeholder; null = the task's built-in paraphrases.",
    )
    max_steps: int | None = field(
        default=None, ge=1, le=10000, doc="Step limit of an episode; null = the task's default."
    )

    # --- success, expert, rewards, world, storage -------------------------------------------------
    success: SuccessConfig = dataclasses.field(default_factory=SuccessConfig)
    expert: ExpertConfig = dataclasses.field(default_factory=ExpertConfig)
    reward: RewardConfig = dataclasses.field(default_factory=RewardConfig)
    world: WorldConfig = dataclasses.field(default_factory=WorldConfig)
    storage: StorageConfig = dataclasses.field(default_factory=StorageConfig)

    def validate(self) -> None:
        """Cross-field checks: a registered task; every template names the block through ``{color}`` once."""
        if self.name not in task_names():
            raise ValueError(f"name: expected one of {list(task_names())}, received {self.name!r}")
        for i, text in enumerate(self.instructions or []):
            if text.count("{color}") != 1 or any(c in text.replace("{color}", "") for c in "{}"):
                raise ValueError(
                    f"instructions[{i}] must contain '{{color}}' exactly once and no other braces, received {text!r}"
                )
            lowered = text.lower()
            if "red" in lowered.split() or "blue" in lowered.split():
                raise ValueError(
                    f"instructions[{i}] must name the block only through '{{color}}', received {text!r}"
                )
        if self.instructions is not None and not self.instructions:
            raise ValueError(
                "instructions must list at least one template (or be null for the defaults)"
            )

    def resolved(self) -> TaskConfig:
        """A copy with the task-dependent defaults (``instructions``, ``max_steps``) filled in."""
        spec = get_task(self.name)
        return dataclasses.replace(
            self,
            instructions=list(self.instructions or spec.instructions),
            max_steps=self.max_steps or spec.max_steps,
        )


def default_task_config(name: str, world: WorldConfig | None = None) -> TaskConfig:
    """The default, resolved configuration of task ``name`` (a registered task)."""
    get_task(name)  # ValueError naming the registered tasks
    cfg = TaskConfig(name=name)
    if world is not None:
        cfg.world = world
    return cfg.resolved()
