"""A small numpy bimanual world with scripted experts (no physics engine, no torch).

Two planar N-joint arms, a red and a blue block on a table, a drawer with a
handle; three tasks (lift, handoff, drawer) in a registry keyed by name, with
crisp success predicates and rewards; one closed-loop scripted expert per task;
two fast uint8 cameras; a Gymnasium form (``make_env``, ``gymnasium.make("teamvla/Lift-v0")``)
and a batched one (``make_vector_env``). See docs/sim.md.

>>> env = BimanualEnv()
>>> obs = env.reset("lift", seed=0)
>>> expert = make_expert("lift", expert_rng(0))
>>> obs, success, done, info = env.step(expert.act(env))
"""

from teamvla_data.sim.config import (
    TASKS,
    ExpertConfig,
    RewardConfig,
    SuccessConfig,
    TaskConfig,
    WorldConfig,
    default_task_config,
)
from teamvla_data.sim.experts import Expert, make_expert
from teamvla_data.sim.gym_env import TeamVLAEnv, make_env, register_envs
from teamvla_data.sim.language import (
    list_templates,
    make_instruction,
    parse_target,
    swap_instruction,
)
from teamvla_data.sim.png import decode_png, encode_png, read_png, write_png
from teamvla_data.sim.record import (
    EpisodeResult,
    expert_rng,
    generate_dataset,
    record_episode,
    run_expert,
)
from teamvla_data.sim.registry import TaskSpec, get_task, register_task, task_names
from teamvla_data.sim.seeds import EVAL_SEED_START, episode_seed, eval_seeds, is_eval_seed
from teamvla_data.sim.sheet import contact_sheet, render_episode
from teamvla_data.sim.tasks import BUILTIN_TASKS
from teamvla_data.sim.vector_env import TeamVLAVectorEnv, make_vector_env
from teamvla_data.sim.world import BimanualEnv, WorldState, is_success, step_reward

register_envs()  # gymnasium ids teamvla/Lift-v0, Handoff-v0, Drawer-v0 (idempotent)

__all__ = [
    "BUILTIN_TASKS",
    "EVAL_SEED_START",
    "TASKS",
    "BimanualEnv",
    "EpisodeResult",
    "Expert",
    "ExpertConfig",
    "RewardConfig",
    "SuccessConfig",
    "TaskConfig",
    "TaskSpec",
    "TeamVLAEnv",
    "TeamVLAVectorEnv",
    "WorldConfig",
    "WorldState",
    "contact_sheet",
    "decode_png",
    "default_task_config",
    "encode_png",
    "episode_seed",
    "eval_seeds",
    "expert_rng",
    "generate_dataset",
    "get_task",
    "is_eval_seed",
    "is_success",
    "list_templates",
    "make_env",
    "make_expert",
    "make_instruction",
    "make_vector_env",
    "parse_target",
    "read_png",
    "record_episode",
    "register_envs",
    "register_task",
    "render_episode",
    "run_expert",
    "step_reward",
    "swap_instruction",
    "task_names",
    "write_png",
]
