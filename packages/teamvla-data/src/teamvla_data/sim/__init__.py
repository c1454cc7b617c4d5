"""A small numpy bimanual world with scripted experts (no physics engine, no torch).

Two planar N-joint arms, a red and a blue block on a table, a drawer with a
handle; three tasks (lift, handoff, drawer) with crisp success predicates;
one closed-loop scripted expert per task; two fast uint8 cameras. See docs/sim.md.

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
from teamvla_data.sim.seeds import EVAL_SEED_START, episode_seed, eval_seeds, is_eval_seed
from teamvla_data.sim.sheet import contact_sheet, render_episode
from teamvla_data.sim.world import BimanualEnv, WorldState, is_success

__all__ = [
    "EVAL_SEED_START",
    "TASKS",
    "BimanualEnv",
    "EpisodeResult",
    "Expert",
    "ExpertConfig",
    "RewardConfig",
    "SuccessConfig",
    "TaskConfig",
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
    "is_eval_seed",
    "is_success",
    "list_templates",
    "make_expert",
    "make_instruction",
    "parse_target",
    "read_png",
    "record_episode",
    "render_episode",
    "run_expert",
    "swap_instruction",
    "write_png",
]
