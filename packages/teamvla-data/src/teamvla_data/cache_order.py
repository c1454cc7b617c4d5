"""Sample orders for a byte-bounded decode cache: episode shards per rank, resident-chunk shuffling.

numpy only; used by :class:`teamvla_data.sampler.EpochBatchSampler`.

**Cache-aware shuffle** (:func:`lane_order`). When the decode cache holds
``K`` chunks but the data has many more, a uniform shuffle would need a new
chunk for almost every sample. Instead the epoch behaves like a shuffle buffer
of chunks: ``K`` chunks are *resident* at a time, each sample is drawn at
random among the resident chunks' remaining samples, and a chunk that is used
up is replaced by the next one of a random queue. It is built as ``K`` lanes:
the chunks, in a random queue order, are dealt to the lanes in turn; each lane
walks its chunks one after the other with their samples shuffled; a random
interleaving of the lanes (a shuffled multiset of lane labels) gives the order.
Every sample appears exactly once per pass; at any position each lane has one
current chunk, so at most ``K`` chunks are in use.

**Episode shards** (:func:`assign_episodes`). With the decode cache, ranks
split the *episodes* (files) rather than positions of a global order, so that
each rank only ever opens its own files and its cache serves only its shard:
episodes are ranked by a seeded permutation within each task and dealt to the
ranks in turn, so every task with at least ``world_size`` episodes is on every
rank and shard sizes differ by about one episode. The assignment depends on the
seed only (not the epoch): a rank keeps its files for the whole run.
"""

from __future__ import annotations

import math

import numpy as np

#: Batches that may be read out of order while workers prefetch (covered by spare slots).
IN_FLIGHT_BATCHES = 4


#: The most batches after the one where a chunk is first read in which its lane draws nothing.
SETTLE_BATCHES = 3


def lane_order(
    members: np.ndarray,
    chunks: np.ndarray,
    lanes: int,
    rng: np.random.Generator,
    batch_size: int | None = None,
) -> np.ndarray:
    """``members`` (sample indices) in a random order reading at most ``lanes`` chunks at a time.

    ``chunks[i]`` is the chunk of ``members[i]``. See the module docstring; with
    ``batch_size`` the lanes are interleaved batch by batch so that a lane whose
    new chunk is first read in batch ``b`` draws nothing in the next few batches
    (see :func:`_settled_labels`).
    """
    members = np.asarray(members, np.int64)
    n = len(members)
    if n == 0:
        return members.copy()
    _, inverse = np.unique(np.asarray(chunks), return_inverse=True)
    inverse = inverse.reshape(-1)
    num_chunks = int(inverse.max()) + 1
    lanes = max(1, min(int(lanes), num_chunks))
    queue = rng.permutation(num_chunks)  # queue position of every chunk
    pos = queue[inverse]
    walk = np.lexsort((rng.random(n), pos))  # chunks in queue order, samples shuffled inside
    lane = pos[walk] % lanes
    grouped = walk[np.argsort(lane, kind="stable")]  # lane 0's walk, then lane 1's, ...
    sizes = np.bincount(lane, minlength=lanes)
    if batch_size is None or lanes == 1:
        labels = np.repeat(np.arange(lanes), sizes)
        rng.shuffle(labels)
    else:
        # Where each lane's walk moves on to another chunk (lane-local sample index).
        chunk_walk = pos[grouped]
        starts = np.flatnonzero(np.diff(chunk_walk) != 0) + 1
        labels = _settled_labels(sizes, starts, int(batch_size), rng)
    out = np.empty(n, np.int64)
    out[np.argsort(labels, kind="stable")] = members[grouped]
    return out


def _settled_labels(
    sizes: np.ndarray, starts: np.ndarray, batch_size: int, rng: np.random.Generator
) -> np.ndarray:
    """A random interleaving of lane labels (lane ``l`` ``sizes[l]`` times), batch by batch.

    Why: DataLoader workers build neighbouring batches at the same time. If a
    chunk new to the cache were read by batch ``b`` and ``b + 1`` alike, the
    worker of ``b + 1`` would wait while the worker of ``b`` decodes it, and
    decoding would not run in parallel. So a lane whose walk enters a new chunk
    (``starts``: indices into the concatenated walks) sits out the next
    ``settle`` batches; its chunk stays resident meanwhile, so no more chunks
    are open. ``settle`` is :data:`SETTLE_BATCHES`, less where that would idle
    more than half the lanes (short chunks, few lanes): a chunk idle that long
    tends to be evicted by the chunks arriving meanwhile and decoded twice. Each batch draws its lanes like a shuffled multiset
    of the labels left (a multivariate hypergeometric draw) among the lanes not
    sitting out, and among all lanes when those are too few. The chunks every
    lane starts with are read from the first batch on.
    """
    lanes = len(sizes)
    total = int(sizes.sum())
    new_per_batch = batch_size * (len(starts) + lanes) / max(total, 1)  # chunks entering
    settle = int(min(SETTLE_BATCHES, lanes / 2 / max(new_per_batch, 1e-9)))
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    # Per lane, its chunk starts after the first, as lane-local indices, ascending.
    owner = np.searchsorted(offsets, starts, side="right") - 1
    local = starts - offsets[owner]
    keep = local > 0
    owner, local = owner[keep], local[keep]
    # ``starts`` ascend, so their owners do too: one split gives every lane's starts.
    by_lane = np.split(local, np.searchsorted(owner, np.arange(1, lanes)))
    next_start = np.array([b[0] if len(b) else -1 for b in by_lane], np.int64)
    left = sizes.astype(np.int64).copy()
    done = np.zeros(lanes, np.int64)  # samples of each lane drawn so far
    resume = np.zeros(lanes, np.int64)  # first batch a lane may draw from again
    labels = np.empty(total, np.int64)
    at, batch = 0, 0
    while at < total:
        size = min(batch_size, total - at)
        counts = np.where(resume <= batch, left, 0)
        if int(counts.sum()) < size:
            counts = left
        take = rng.multivariate_hypergeometric(counts, size)
        drawn = np.flatnonzero(take)
        piece = np.repeat(drawn, take[drawn])
        rng.shuffle(piece)
        labels[at : at + size] = piece
        at += size
        done[drawn] += take[drawn]
        left[drawn] -= take[drawn]
        for k in drawn[(next_start[drawn] >= 0) & (next_start[drawn] < done[drawn])].tolist():
            resume[k] = batch + 1 + settle
            b = by_lane[k]
            j = int(np.searchsorted(b, done[k], side="left"))
            next_start[k] = b[j] if j < len(b) else -1
        batch += 1
    return labels


def spare_slots(num_slots: int, chunk_steps: int, batch_size: int) -> int:
    """Slots kept beyond the resident chunks, so that LRU rarely evicts a chunk still in use.

    A lane's chunk is touched about once every ``K`` samples while a used-up
    chunk is replaced every ``chunk_steps`` samples: with ``r`` spare slots a
    current chunk is only evicted when idle for ``r * chunk_steps`` samples,
    which for every lane together stays unlikely (about 5%) when
    ``r >= K ln(20 K) / chunk_steps``; prefetching workers add
    :data:`IN_FLIGHT_BATCHES` batches of reordering. At most half the slots.
    """
    k = max(num_slots, 1)
    idle = k * math.log(20 * k) / max(chunk_steps, 1)
    spare = math.ceil(idle + IN_FLIGHT_BATCHES * batch_size / max(chunk_steps, 1))
    return max(1, min(spare, num_slots // 2))


def assign_episodes(episode_tasks: np.ndarray, world_size: int, seed: int) -> np.ndarray:
    """Rank of every episode (dataset order): seeded, dealt in turn within each task."""
    episode_tasks = np.asarray(episode_tasks, np.int64)
    rng = np.random.default_rng([seed, 0x5A4D])  # the shard stream: independent of epochs
    key = rng.random(len(episode_tasks))
    dealt = np.lexsort((key, episode_tasks))
    ranks = np.empty(len(episode_tasks), np.int64)
    ranks[dealt] = np.arange(len(episode_tasks)) % world_size
    return ranks


def batch_mixing(
    order: np.ndarray, batch_size: int, sample_episode: np.ndarray
) -> dict[str, float]:
    """How close to uniform the batches of ``order`` are (the figures of docs/dataset.md).

    ``distinct``: mean distinct episodes per batch; ``same_pair``: probability
    that two samples of one batch share an episode; ``lag1``: correlation of the
    episode index of consecutive samples. Compare with a uniform permutation.
    """
    order = np.asarray(order, np.int64)
    full = len(order) // batch_size * batch_size
    eps = np.asarray(sample_episode)[order[:full]].reshape(-1, batch_size)
    distinct = np.mean([len(np.unique(row)) for row in eps])
    pairs = []
    for row in eps:
        counts = np.bincount(row)
        pairs.append(float((counts * (counts - 1)).sum()) / (batch_size * (batch_size - 1)))
    seq = np.asarray(sample_episode)[order].astype(np.float64)
    lag1 = float(np.corrcoef(seq[:-1], seq[1:])[0, 1]) if len(seq) > 2 else 0.0
    return {"distinct": float(distinct), "same_pair": float(np.mean(pairs)), "lag1": lag1}
