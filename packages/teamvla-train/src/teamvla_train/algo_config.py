"""Config sections of the algorithms beyond behaviour cloning (torch-free, validated without torch).

``dagger:`` is read when ``trainer.algo: dagger`` (see :mod:`teamvla_train.algos.dagger`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from teamvla_schema.config import field


@dataclass
class DaggerConfig:
    """DAgger with the scripted experts as the oracle (Ross, Gordon and Bagnell, 2011)."""

    # --- expert demonstrations to start from ----------------------------------------------
    tasks: list[str] = field(
        default_factory=lambda: ["lift", "handoff", "drawer"], doc="Simulated tasks to learn."
    )
    demos_per_task: int = field(
        default=20, ge=1, doc="Expert demonstrations recorded per task before the first iteration."
    )
    seed: int = field(default=0, ge=0, doc="Base seed of the demonstrations and DAgger episodes.")
    image_size: int | None = field(
        default=None, ge=16, le=512, doc="Camera size of the world (pixels); null: the world's default."
    )  # fmt: skip
    # --- schedule --------------------------------------------------------------------------
    initial_steps: int = field(
        default=1000, ge=1, doc="Training steps on the demonstrations before the first iteration."
    )
    iterations: int = field(default=4, ge=0, doc="DAgger iterations (collect, then train).")
    episodes_per_iteration: int = field(
        default=20, ge=1, doc="Episodes per task rolled out and expert-labelled each iteration."
    )
    steps_per_iteration: int = field(
        default=1000, ge=1, doc="Training steps on the aggregate after each iteration's data arrives."
    )  # fmt: skip
    # --- mixing the expert into the rollouts ----------------------------------------------
    beta: Literal["linear", "exponential", "constant", "zero"] = field(
        default="linear",
        doc="Schedule of beta, the chance a step executes the expert's action: linear "
        "beta0*max(0, 1 - i/beta_rampdown) (imitation's), exponential beta0**(i+1) (Ross et al.'s "
        "p^i), constant beta0, zero (pure policy rollouts).",
    )
    beta0: float = field(default=1.0, ge=0.0, le=1.0, doc="beta of the first iteration.")
    beta_rampdown: int = field(
        default=4, ge=1, doc="Iterations over which the linear schedule falls to 0."
    )
    # --- labels ----------------------------------------------------------------------------
    label_every: int = field(
        default=4,
        ge=1,
        doc="Every N-th state a rollout visits gets the expert's continuation from it as its label.",
    )
    label_steps: int = field(
        default=0,
        ge=0,
        doc="Length of that continuation (expert steps); 0: dataset.action_horizon (one chunk).",
    )
    # --- rollouts and measurement -----------------------------------------------------------
    batch_envs: int = field(default=10, ge=1, doc="Worlds stepped together in collection.")
    eval_episodes_per_task: int = field(
        default=10,
        ge=0,
        doc="Held-out episodes per task that measure the policy alone before each iteration and "
        "at the end (0: off).",
    )
