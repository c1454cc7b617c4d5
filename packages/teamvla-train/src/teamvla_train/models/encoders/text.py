"""Instruction encoder that needs no download: hashed words and character n-grams.

Each word is represented by the sum of embeddings of a few hash buckets: one
for the whole word and one per character n-gram of ``<word>`` (fastText
style), so unseen words that share spelling with known ones land nearby. The
hash is a keyed BLAKE2b digest, not Python's ``hash()``, so bucket ids are the
same in every process and on every machine (``PYTHONHASHSEED`` plays no part).
Word vectors are optionally mixed by a small transformer, then pooled: a plain
mean, or attention pooling with learned queries (which can pick out the one
word that changes the task, e.g. the colour of the block).

Instructions repeat a lot in a batch (a handful of tasks), so each distinct
string is tokenised once (cached) and encoded once per batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from teamvla_train.text_hashing import MAX_WORDS, instruction_ids, stable_bucket, tokenize

__all__ = ["MAX_WORDS", "HashedTextEncoder", "instruction_ids", "stable_bucket", "tokenize"]


def _host_to_device(values: list, device: torch.device) -> torch.Tensor:
    """An int64 tensor of Python ints on ``device`` without stalling the host.

    ``torch.tensor(..., device="cuda")`` copies from pageable memory, which waits
    for the GPU; a pinned staging tensor lets the copy run asynchronously.
    """
    cpu = torch.tensor(values, dtype=torch.long)
    if device.type == "cuda":
        return cpu.pin_memory().to(device, non_blocking=True)
    return cpu.to(device)


class HashedTextEncoder(nn.Module):
    """``list[str] (B) -> (B, dim)`` instruction embeddings."""

    def __init__(
        self,
        *,
        buckets: int = 4096,
        ngram: int = 3,
        dim: int = 64,
        layers: int = 0,
        heads: int = 2,
        pool: str = "mean",
    ) -> None:
        super().__init__()
        if pool not in ("mean", "attention"):
            raise ValueError(f"unknown text pool {pool!r} (expected 'mean' or 'attention')")
        self.pool = pool
        self.buckets = buckets
        self.ngram = ngram
        self.dim = dim
        self.embed = nn.Embedding(buckets + 1, dim, padding_idx=0)
        nn.init.normal_(self.embed.weight, std=dim**-0.5)
        with torch.no_grad():
            self.embed.weight[0].zero_()
        self.encoder: nn.Module | None = None
        if layers > 0:
            self.pos = nn.Parameter(torch.zeros(MAX_WORDS, dim))
            layer = nn.TransformerEncoderLayer(
                dim, heads, dim_feedforward=2 * dim, dropout=0.0, batch_first=True, norm_first=True
            )
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        if pool == "attention":
            # ``heads`` learned queries, each a weighted average of the words: the weights can
            # single out the few words that matter (a colour) instead of diluting them.
            self.queries = nn.Parameter(torch.randn(heads, dim) * dim**-0.5)
            self.merge = nn.Linear(heads * dim, dim)
        self.norm = nn.LayerNorm(dim)
        self._cache: dict[str, list[list[int]]] = {}

    def ids(self, text: str) -> list[list[int]]:
        """Cached bucket ids of one instruction."""
        found = self._cache.get(text)
        if found is None:
            found = self._cache[text] = instruction_ids(
                text, buckets=self.buckets, ngram=self.ngram
            )
        return found

    def _id_tensor(self, texts: Sequence[str], device: torch.device) -> torch.Tensor:
        ids = [self.ids(t) for t in texts]
        n_words = max(len(w) for w in ids)
        n_pieces = max(len(p) for w in ids for p in w)
        table = [
            [p + [0] * (n_pieces - len(p)) for p in w] + [[0] * n_pieces] * (n_words - len(w))
            for w in ids
        ]
        return _host_to_device(table, device)  # (U, L, K)

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        device = self.embed.weight.device
        unique = list(dict.fromkeys(texts))
        index = {t: i for i, t in enumerate(unique)}
        ids = self._id_tensor(unique, device)  # (U, L, K)
        piece_mask = (ids > 0).to(self.embed.weight.dtype)  # (U, L, K)
        # Masked so the padding row never leaks in (even if its weights were changed).
        pieces = self.embed(ids) * piece_mask[..., None]  # (U, L, K, D)
        words = pieces.sum(dim=2) / piece_mask.sum(dim=2, keepdim=True).clamp_min(1.0)  # (U, L, D)
        word_mask = piece_mask.amax(dim=2)  # (U, L)
        if self.encoder is not None:
            words = words + self.pos[: words.shape[1]]  # (U, L, D)
            words = self.encoder(words, src_key_padding_mask=word_mask == 0)  # (U, L, D)
        if self.pool == "attention":
            u, _, d = words.shape
            scores = torch.einsum("uld,hd->uhl", words, self.queries) * d**-0.5  # (U, heads, L)
            scores = scores.masked_fill(word_mask[:, None, :] == 0, float("-inf"))
            attn = scores.softmax(dim=-1)  # (U, heads, L)
            pooled = self.merge(torch.einsum("uhl,uld->uhd", attn, words).reshape(u, -1))  # (U, D)
        else:
            total = (words * word_mask[..., None]).sum(dim=1)  # (U, D)
            pooled = total / word_mask.sum(dim=1, keepdim=True).clamp_min(1.0)  # (U, D)
        pooled = self.norm(pooled)  # (U, D)
        rows = _host_to_device([index[t] for t in texts], device)  # (B,)
        return pooled[rows]  # (B, D)
