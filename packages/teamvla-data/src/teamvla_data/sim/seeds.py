"""Seeds of recorded and evaluation episodes, from disjoint ranges, derived from the task's name.

* Recording (training) seeds come from :func:`episode_seed`: a hash of
  ``(base seed, task, episode index)`` reduced into ``[0, EVAL_SEED_START)``.
  Different base seeds give unrelated seeds; the same arguments always give the same seed.
* Evaluation seeds come from :func:`eval_seeds`: ``EVAL_SEED_START + block *
  EVAL_BLOCK_SIZE + i``, where ``block`` is a hash of the task's name
  (:func:`teamvla_data.sim.registry.eval_block`), all ``>= EVAL_SEED_START``
  and below ``2**53``. The task registry refuses a task whose block collides
  with another's, so no two tasks share an evaluation seed.

Neither depends on which other tasks exist, so registering a task changes no
other task's seeds. An evaluation never replays a scene that was recorded for
training, and :func:`is_eval_seed` tells which range a seed belongs to.
"""

from __future__ import annotations

import hashlib

from teamvla_data.sim.registry import EVAL_BLOCK_SIZE, check_task, eval_block

EVAL_SEED_START = 2**31  # recording seeds are below, evaluation seeds at or above

__all__ = [
    "EVAL_BLOCK_SIZE",
    "EVAL_SEED_START",
    "episode_seed",
    "eval_seeds",
    "is_eval_seed",
]


def episode_seed(base_seed: int, task: str, index: int) -> int:
    """The seed of recorded episode ``index`` of ``task`` in a dataset generated with ``base_seed``."""
    check_task(task)
    if base_seed < 0 or index < 0:
        raise ValueError(f"base_seed and index must be >= 0, received {base_seed}, {index}")
    digest = hashlib.blake2b(
        f"teamvla-sim/{base_seed}/{task}/{index}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "little") % EVAL_SEED_START


def eval_seeds(task: str, n: int, start: int = 0) -> list[int]:
    """``n`` evaluation seeds of ``task`` (``start`` skips the first ones); disjoint from recording seeds."""
    check_task(task)
    if n < 0 or start < 0 or start + n > EVAL_BLOCK_SIZE:
        raise ValueError(
            f"need 0 <= start and start + n <= {EVAL_BLOCK_SIZE}, received start={start}, n={n}"
        )
    base = EVAL_SEED_START + eval_block(task) * EVAL_BLOCK_SIZE + start
    return list(range(base, base + n))


def is_eval_seed(seed: int) -> bool:
    """Whether ``seed`` lies in the evaluation range."""
    return seed >= EVAL_SEED_START
