"""Instructions: templates per task, which block an instruction names, and the colour-swapped instruction."""

from __future__ import annotations

import re

import numpy as np

from teamvla_data.sim.layout import COLORS
from teamvla_data.sim.registry import get_task

_COLOR_RE = re.compile(r"\b(" + "|".join(COLORS) + r")\b", re.IGNORECASE)
_SWAP = {"red": "blue", "blue": "red"}


def list_templates(task: str) -> list[str]:
    """The built-in instruction templates of ``task`` (each with a ``{color}`` placeholder)."""
    return list(get_task(task).instructions)


def max_instruction_length(templates: list[str] | tuple[str, ...]) -> int:
    """Length of the longest instruction ``templates`` can give (any block colour)."""
    return max(len(make_instruction(t, c)) for t in templates for c in COLORS)


def make_instruction(template: str, color: str) -> str:
    """Fill ``template`` with the block ``color``."""
    if color not in COLORS:
        raise ValueError(f"unknown block colour {color!r}; colours are {', '.join(COLORS)}")
    return template.replace("{color}", color)


def sample_instruction(templates: list[str], rng: np.random.Generator) -> tuple[str, str]:
    """Draw a target colour and a template; returns ``(instruction, color)``."""
    color = COLORS[int(rng.integers(len(COLORS)))]
    template = templates[int(rng.integers(len(templates)))]
    return make_instruction(template, color), color


def parse_target(instruction: str) -> str:
    """The block colour an instruction names; ``ValueError`` unless exactly one colour is named."""
    found = {m.group(1).lower() for m in _COLOR_RE.finditer(instruction)}
    if len(found) != 1:
        raise ValueError(
            f"an instruction must name exactly one block colour out of {', '.join(COLORS)}; "
            f"{instruction!r} names {sorted(found) or 'none'}"
        )
    return found.pop()


def swap_instruction(instruction: str) -> str:
    """The same instruction naming the other block ("lift the red block" -> "lift the blue block").

    The case of the colour word is kept. Used by the evaluator's language-swap test.
    """
    parse_target(instruction)  # refuse instructions that do not name exactly one colour

    def repl(m: re.Match[str]) -> str:
        word = m.group(1)
        other = _SWAP[word.lower()]
        if word.isupper():
            return other.upper()
        return other.capitalize() if word[0].isupper() else other

    return _COLOR_RE.sub(repl, instruction)
