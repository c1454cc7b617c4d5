"""Instruction tokenisation and hashing, torch-free (the embedding lives in models/encoders/text.py).

Each word maps to a few hash buckets: one for the whole word and one per
character n-gram of ``<word>`` (fastText style). The hash is a keyed BLAKE2b
digest, not Python's ``hash()``, so bucket ids are the same in every process
and on every machine (``PYTHONHASHSEED`` plays no part).
"""

from __future__ import annotations

import hashlib
import re

_WORD = re.compile(r"[a-z0-9]+")
MAX_WORDS = 32  # longer instructions are truncated (positional table size)


def tokenize(text: str) -> list[str]:
    """Lower-case alphanumeric words of ``text``."""
    return _WORD.findall(text.lower())[:MAX_WORDS]


def stable_bucket(token: str, buckets: int) -> int:
    """Deterministic bucket in ``[1, buckets]`` for ``token`` (0 is reserved for padding)."""
    digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8, person=b"teamvla-text").digest()
    return 1 + int.from_bytes(digest, "little") % buckets


def word_pieces(word: str, ngram: int) -> list[str]:
    """The hashed pieces of one word: the word itself plus its character n-grams."""
    pieces = [f"w:{word}"]
    if ngram > 0:
        padded = f"<{word}>"
        pieces += [f"c:{padded[i : i + ngram]}" for i in range(max(1, len(padded) - ngram + 1))]
    return pieces


def instruction_ids(text: str, *, buckets: int, ngram: int) -> list[list[int]]:
    """Bucket ids per word of ``text`` (an empty instruction gives one padding word)."""
    words = tokenize(text) or [""]
    return [[stable_bucket(p, buckets) for p in word_pieces(w, ngram)] if w else [0] for w in words]
