"""Seeds of recorded and evaluation episodes, from disjoint ranges.

* Recording (training) seeds come from :func:`episode_seed`: a hash of
  ``(base seed, task, episode index)`` reduced into ``[0, EVAL_SEED_START)``.
  Different base seeds give unrelated seeds; the same arguments always give the same seed.
* Evaluation seeds come from :func:`eval_seeds`: ``EVAL_SEED_START + task
  offset + i``, all ``>= EVAL_SEED_START``.

So an evaluation never replays a scene that was recorded for training, and
:func:`is_eval_seed` tells which range a seed belongs to.
"""

from __future__ import annotations

import hashlib

from teamvla_data.sim.config import TASKS

EVAL_SEED_START = 2**31  # recording seeds are below, evaluation seeds at or above
_EVAL_TASK_STRIDE = 10_000_000  # room for this many evaluation seeds per task


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; tasks are {', '.join(TASKS)}")


def episode_seed(base_seed: int, task: str, index: int) -> int:
    """The seed of recorded episode ``index`` of ``task`` in a dataset generated with ``base_seed``."""
    _check_task(task)
    if base_seed < 0 or index < 0:
        raise ValueError(f"base_seed and index must be >= 0, received {base_seed}, {index}")
    digest = hashlib.blake2b(
        f"teamvla-sim/{base_seed}/{task}/{index}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "little") % EVAL_SEED_START


def eval_seeds(task: str, n: int, start: int = 0) -> list[int]:
    """``n`` evaluation seeds of ``task`` (``start`` skips the first ones); disjoint from recording seeds."""
    _check_task(task)
    if n < 0 or start < 0 or start + n > _EVAL_TASK_STRIDE:
        raise ValueError(
            f"need 0 <= start and start + n <= {_EVAL_TASK_STRIDE}, received start={start}, n={n}"
        )
    base = EVAL_SEED_START + TASKS.index(task) * _EVAL_TASK_STRIDE + start
    return list(range(base, base + n))


def is_eval_seed(seed: int) -> bool:
    """Whether ``seed`` lies in the evaluation range."""
    return seed >= EVAL_SEED_START
