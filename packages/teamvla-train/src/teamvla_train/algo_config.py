"""Config sections of the algorithms beyond behaviour cloning (torch-free, validated without torch).

``dagger:`` is read when ``trainer.algo: dagger`` (see :mod:`teamvla_train.algos.dagger`);
``sac:`` and ``env:`` when ``trainer.algo: sac`` (see :mod:`teamvla_train.algos.sac`).
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
    stats: Literal["demos", "aggregate"] = field(
        default="demos",
        doc="Normalisation statistics while the aggregate grows: demos (those of the "
        "demonstrations, fixed) or aggregate (recomputed at each iteration).",
    )
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


@dataclass
class EnvConfig:
    """The simulated environment an online algorithm interacts with (``trainer.algo: sac``)."""

    tasks: list[str] = field(default_factory=lambda: ["lift"], doc="Simulated tasks to learn.")
    obs_mode: Literal["pixels", "state"] = field(
        default="state",
        doc="Observations: state (the low-dimensional float32 vector of teamvla_data.sim, no "
        "rendering) or pixels (cameras and joints; not yet supported by sac).",
    )
    num_envs: int = field(
        default=4, ge=1, doc="Worlds stepped together (teamvla_data.sim.make_vector_env)."
    )
    seed: int = field(
        default=0, ge=0, doc="Base seed of the demonstrations and of the online episodes' scenes."
    )


@dataclass
class SacConfig:
    """Soft actor-critic (Haarnoja et al., 2018) with RLPD's demonstration-seeded replay (Ball et al., 2023)."""

    # --- interaction ------------------------------------------------------------------------
    env_steps: int = field(
        default=20000, ge=1, doc="Environment transitions to collect (all worlds together)."
    )
    warmup_steps: int = field(
        default=1000, ge=0, doc="Transitions of uniformly random actions before any update."
    )
    utd_ratio: int = field(
        default=1, ge=1, doc="Gradient updates per environment transition (update-to-data ratio)."
    )
    # --- replay -----------------------------------------------------------------------------
    replay_capacity: int = field(
        default=200000, ge=1, doc="Online transitions kept (a ring buffer; the oldest go first)."
    )
    demos_per_task: int = field(
        default=10, ge=0, doc="Expert demonstrations per task recorded into the demo buffer."
    )
    demo_ratio: float = field(
        default=0.5,
        ge=0.0,
        le=1.0,
        doc="Share of each batch drawn from the demo buffer (RLPD's symmetric sampling: 0.5).",
    )
    batch_size: int = field(default=256, ge=1, doc="Transitions per gradient update.")
    # --- update rule --------------------------------------------------------------------------
    gamma: float = field(default=0.99, ge=0.0, le=1.0, doc="Discount factor.")
    tau: float = field(
        default=0.005, gt=0.0, le=1.0, doc="Polyak factor of the target critics (1: copy)."
    )
    actor_lr: float = field(default=3e-4, gt=0.0, doc="Adam learning rate of the actor.")
    critic_lr: float = field(default=3e-4, gt=0.0, doc="Adam learning rate of the twin critics.")
    alpha_lr: float = field(default=3e-4, gt=0.0, doc="Adam learning rate of log(temperature).")
    init_temperature: float = field(default=1.0, gt=0.0, doc="Initial entropy temperature alpha.")
    target_entropy: float | None = field(
        default=None, doc="Entropy target of the temperature; null: -(action dimensions)."
    )
    hidden_dims: list[int] = field(
        default_factory=lambda: [256, 256], doc="Hidden layer widths of actor and critics."
    )
    critic_layer_norm: bool = field(
        default=True, doc="LayerNorm after each hidden layer of the critics (RLPD)."
    )
    # --- evaluation ---------------------------------------------------------------------------
    eval_every_env_steps: int = field(
        default=5000, ge=0, doc="Evaluate every N transitions, and at the end (0: only at the end)."
    )
    eval_episodes_per_task: int = field(
        default=10,
        ge=0,
        doc="Held-out episodes per task per evaluation, deterministic actor (0: off).",
    )

    def validate(self) -> None:
        """Cross-field checks."""
        if not self.hidden_dims or min(self.hidden_dims) < 1:
            raise ValueError(f"hidden_dims must be positive widths, received {self.hidden_dims}")
