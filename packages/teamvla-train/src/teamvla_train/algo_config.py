"""Config sections of the algorithms beyond behaviour cloning (torch-free, validated without torch).

``dagger:`` is read when ``trainer.algo: dagger`` (see :mod:`teamvla_train.algos.dagger`);
``sac:`` and ``env:`` when ``trainer.algo: sac`` (see :mod:`teamvla_train.algos.sac`);
``awac:`` and ``env:`` when ``trainer.algo: awac`` (see :mod:`teamvla_train.algos.awac`).
Both online algorithms also read ``eval.every_env_steps``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

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
    label_rollouts: Literal["all", "failed"] = field(
        default="all",
        doc="Which rollouts get labels: all, or failed (the world is copied at each label point and "
        "only rollouts that end without success are labelled: the expert's labels go where the "
        "policy still fails).",
    )
    label_gate: float = field(
        default=0.0,
        ge=0.0,
        doc="0: label every label point; > 0: only points where the policy's action differs from "
        "the expert's by more than this (radians, any joint target) or in a gripper command (one "
        "expert query per point, counted in expert_actions).",
    )
    # --- rollouts and measurement -----------------------------------------------------------
    batch_envs: int = field(default=10, ge=1, doc="Worlds stepped together in collection.")
    eval_episodes_per_task: int = field(
        default=10,
        ge=0,
        doc="Held-out episodes per task that measure the policy alone before each iteration and "
        "at the end (0: off).",
    )
    # --- storage of the episodes it records (demos and iterations) --------------------------
    image_codec: Literal["lossless", "video"] | None = field(
        default=None,
        doc="Camera fields of the demos and iteration episodes as image streams: lossless "
        "(bit-exact H.264) or video (lossy AV1); null = plain arrays. Both need PyAV: "
        "pip install teamvla-schema[video] (docs/storage.md).",
    )
    video_crf: int = field(
        default=30,
        ge=0,
        le=63,
        doc="Quality of image_codec video (AV1 crf, lower is better): docs/storage.md gives the PSNR of each value.",
    )


@dataclass
class EnvConfig:
    """The simulated environment an online algorithm interacts with (``trainer.algo: sac``)."""

    tasks: list[str] = field(default_factory=lambda: ["lift"], doc="Simulated tasks to learn.")
    obs_mode: Literal["pixels", "state"] = field(
        default="state",
        doc="Observations: state (the low-dimensional float32 vector of teamvla_data.sim, no "
        "rendering) or pixels (both cameras, both arms' joints and gripper state, the instruction; "
        "encoders sized by the model: section).",
    )
    image_size: int | None = field(
        default=None, ge=16, le=512,
        doc="Camera size in pixels with obs_mode pixels (the replay stores images at this size); "
        "null: the world's default (96).",
    )  # fmt: skip
    num_envs: int = field(
        default=4, ge=1, doc="Worlds stepped together (teamvla_data.sim.make_vector_env)."
    )
    seed: int = field(
        default=0, ge=0, doc="Base seed of the demonstrations and of the online episodes' scenes."
    )
    action_mode: Literal["delta", "absolute"] = field(
        default="delta",
        doc="Joint actions of the actor: delta (a step of at most joint_step rad from the current "
        "posture per joint) or absolute (targets across the joint limits); grips: see binary_grip.",
    )
    joint_step: float = field(
        default=0.15,
        gt=0.0,
        doc="Largest joint-target step of delta actions (rad; the world moves 0.15 per step).",
    )
    binary_grip: bool = field(
        default=True,
        doc="Grip commands 1 where the actor's value is > 0, else 0 (as BC thresholds them); false: (x + 1) / 2.",
    )


@dataclass
class SacConfig:
    """Soft actor-critic (Haarnoja et al., 2018) with RLPD's demonstration-seeded replay (Ball et al., 2023)."""

    # --- interaction ------------------------------------------------------------------------
    env_steps: int = field(
        default=20000,
        ge=1,
        doc="Environment transitions to collect (all worlds of all ranks together).",
    )
    warmup_steps: int = field(
        default=1000, ge=0, doc="Transitions of uniformly random actions before any update."
    )
    utd_ratio: int = field(
        default=1, ge=1, doc="Gradient updates per environment transition (update-to-data ratio)."
    )
    init_from: str | None = field(
        default=None,
        doc="Start the actor from this state-actor checkpoint (a sac or awac run, e.g. a BC actor); null: fresh.",
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
    batch_size: int = field(
        default=256, ge=1, doc="Transitions per gradient update (all ranks together)."
    )
    # --- pixel observations (env.obs_mode pixels) -----------------------------------------
    demo_roots: list[str] | None = field(
        default=None,
        doc="Episode roots recorded by teamvla synth (with reward/done steps) whose episodes of "
        "env.tasks fill the demo buffer through the dataloader (pixels only); demos_per_task then "
        "caps the episodes per task (0: all). null: demos_per_task scripted episodes are recorded "
        "into <run>/demos and read the same way.",
    )
    encoder: Literal["shared", "separate"] = field(
        default="shared",
        doc="shared: one encoder, trained by the critic loss, the actor on its detached features "
        "(DrQ, RLPD); separate: actor and critics each train their own encoder.",
    )
    augment_shift: int = field(
        default=4, ge=0, le=16,
        doc="Random shift of pixel batches (DrQ): pad by this many edge pixels, crop back at a "
        "random offset, per image (0: off).",
    )  # fmt: skip
    record_online: bool = field(
        default=False,
        doc="Write every finished online episode (pixels only) as an ordinary episode to "
        "<run>/online_episodes (EpisodeWriter, indexed by its manifest).",
    )
    # --- update rule --------------------------------------------------------------------------
    gamma: float = field(default=0.99, ge=0.0, le=1.0, doc="Discount factor.")
    n_step: int = field(
        default=1, ge=1, doc="Steps of the n-step return in each transition (1: one-step TD)."
    )
    tau: float = field(
        default=0.005, gt=0.0, le=1.0, doc="Polyak factor of the target critics (1: copy)."
    )
    actor_lr: float = field(default=3e-4, gt=0.0, doc="Adam learning rate of the actor.")
    critic_lr: float = field(default=3e-4, gt=0.0, doc="Adam learning rate of the twin critics.")
    backup_entropy: bool = field(
        default=True,
        doc="Include -alpha log pi(a'|s') in the critic's target (soft Q); false: plain Q.",
    )
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
    # --- evaluation (its cadence: eval.every_env_steps) ---------------------------------------
    eval_episodes_per_task: int = field(
        default=10,
        ge=0,
        doc="Held-out episodes per task per evaluation, deterministic actor (0: off).",
    )

    def validate(self) -> None:
        """Cross-field checks."""
        if not self.hidden_dims or min(self.hidden_dims) < 1:
            raise ValueError(f"hidden_dims must be positive widths, received {self.hidden_dims}")


@dataclass(init=False, repr=False, eq=False)
class AwacConfig:
    """Advantage-weighted actor-critic (Nair et al., 2020): offline on demonstrations, then online.

    The YAML key ``lambda`` is a Python keyword, so the field is declared
    through the class namespace and read as :attr:`lam`; the class has its own
    keyword ``__init__`` (``AwacConfig(**{"lambda": 0.3})``).
    """

    # --- phases ---------------------------------------------------------------------------
    offline_steps: int = field(
        default=5000, ge=0, doc="Gradient updates on the demonstrations before any interaction."
    )
    online_env_steps: int = field(
        default=20000, ge=0, doc="Environment transitions of online fine-tuning (0: offline only)."
    )
    init_from: str | None = field(
        default=None,
        doc="Start the actor from this state-actor checkpoint (e.g. a BC actor); null: fresh.",
    )
    # --- the advantage weighting ------------------------------------------------------------
    vars()["lambda"] = field(
        default=1.0,
        gt=0.0,
        doc="Temperature of the weights exp(A / lambda): the strength of the implicit KL constraint "
        "towards the data (small: greedy on the critic; large: behaviour cloning).",
    )
    __annotations__["lambda"] = float
    max_weight: float = field(default=20.0, gt=0.0, doc="Clip of each weight exp(A / lambda).")
    normalize_weights: bool = field(
        default=True, doc="Divide the clipped weights by their batch mean (their scale stays 1)."
    )
    weighting: Literal["exp", "uniform"] = field(
        default="exp",
        doc="exp: advantage weights (AWAC); uniform: every weight 1 (plain behaviour cloning by likelihood).",
    )
    value_samples: int = field(
        default=1, ge=1, doc="Actions sampled from the actor to estimate V(s) = E_a~pi Q(s, a)."
    )
    grip_head: Literal["gaussian", "bernoulli"] = field(
        default="gaussian",
        doc="The actor's grip dimensions: gaussian (tanh-Gaussian like the joints) or bernoulli "
        "(close/open logits; deterministic grip closes iff p > 0.5; needs env.binary_grip).",
    )
    train_critic: bool = field(
        default=True, doc="Fit the critics (false with weighting uniform: behaviour cloning alone)."
    )
    # --- online interaction ------------------------------------------------------------------
    utd_ratio: int = field(
        default=1, ge=1, doc="Gradient updates per environment transition online."
    )
    # --- replay -------------------------------------------------------------------------------
    replay_capacity: int = field(
        default=200000, ge=1, doc="Online transitions kept (a ring buffer; the oldest go first)."
    )
    demos_per_task: int = field(
        default=10,
        ge=1,
        doc="Expert demonstrations per task: the offline data, kept in the demo buffer.",
    )
    demo_ratio: float = field(
        default=0.5,
        ge=0.0,
        le=1.0,
        doc="Share of each online-phase batch drawn from the demo buffer.",
    )
    batch_size: int = field(
        default=256, ge=1, doc="Transitions per gradient update (all ranks together)."
    )
    # --- pixel observations (env.obs_mode pixels) -----------------------------------------
    demo_roots: list[str] | None = field(
        default=None,
        doc="Episode roots recorded by teamvla synth (with reward/done steps) whose episodes of "
        "env.tasks fill the demo buffer through the dataloader (pixels only); demos_per_task then "
        "caps the episodes per task (0: all). null: demos_per_task scripted episodes are recorded "
        "into <run>/demos and read the same way.",
    )
    encoder: Literal["shared", "separate"] = field(
        default="shared",
        doc="shared: one encoder, trained by the critic loss, the actor on its detached features "
        "(DrQ, RLPD); separate: actor and critics each train their own encoder.",
    )
    augment_shift: int = field(
        default=4, ge=0, le=16,
        doc="Random shift of pixel batches (DrQ): pad by this many edge pixels, crop back at a "
        "random offset, per image (0: off).",
    )  # fmt: skip
    record_online: bool = field(
        default=False,
        doc="Write every finished online episode (pixels only) as an ordinary episode to "
        "<run>/online_episodes (EpisodeWriter, indexed by its manifest).",
    )
    # --- update rule ----------------------------------------------------------------------------
    gamma: float = field(default=0.99, ge=0.0, le=1.0, doc="Discount factor.")
    n_step: int = field(default=1, ge=1, doc="Steps of the n-step return in each transition.")
    tau: float = field(
        default=0.005, gt=0.0, le=1.0, doc="Polyak factor of the target critics (1: copy)."
    )
    actor_lr: float = field(default=3e-4, gt=0.0, doc="Adam learning rate of the actor.")
    critic_lr: float = field(default=3e-4, gt=0.0, doc="Adam learning rate of the twin critics.")
    hidden_dims: list[int] = field(
        default_factory=lambda: [256, 256], doc="Hidden layer widths of actor and critics."
    )
    critic_layer_norm: bool = field(
        default=True, doc="LayerNorm after each hidden layer of the critics."
    )
    # --- evaluation (its cadence: eval.every_env_steps; offline: eval_every_updates) ----------
    eval_every_updates: int = field(
        default=1000,
        ge=0,
        doc="Evaluate every N offline updates, and at the end of the offline phase (0: at its end).",
    )
    eval_episodes_per_task: int = field(
        default=10,
        ge=0,
        doc="Held-out episodes per task per evaluation, deterministic actor (0: off).",
    )

    def __init__(self, **values: Any) -> None:
        names = {f.name: f for f in dataclasses.fields(self)}
        unknown = set(values) - set(names)
        if unknown:
            raise TypeError(f"unknown AwacConfig field(s) {sorted(unknown)}")
        for name, f in names.items():
            if name in values:
                setattr(self, name, values[name])
            elif f.default_factory is not dataclasses.MISSING:
                setattr(self, name, f.default_factory())
            else:
                setattr(self, name, f.default)

    def __repr__(self) -> str:
        inner = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self))
        return f"AwacConfig({inner})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AwacConfig):
            return NotImplemented
        return all(
            getattr(self, f.name) == getattr(other, f.name) for f in dataclasses.fields(self)
        )

    @property
    def lam(self) -> float:
        """``lambda``, the temperature of the advantage weights."""
        return float(getattr(self, "lambda"))

    def validate(self) -> None:
        """Cross-field checks."""
        if not self.hidden_dims or min(self.hidden_dims) < 1:
            raise ValueError(f"hidden_dims must be positive widths, received {self.hidden_dims}")
