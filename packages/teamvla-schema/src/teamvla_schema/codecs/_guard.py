"""Optional-dependency guard: codecs that need PyAV import it through :func:`require_av`."""

from __future__ import annotations

from types import ModuleType

#: What to run when PyAV is missing; every "needs PyAV" message ends with it.
EXTRA_HINT = 'pip install "teamvla-schema[video]"'


def require_av(codec: str) -> ModuleType:
    """Return the ``av`` module, or raise a one-line ImportError naming the extra."""
    try:
        import av
    except ImportError as exc:  # pragma: no cover - exercised by monkeypatching in tests
        raise ImportError(
            f"the {codec!r} codec needs PyAV, which is not installed: {EXTRA_HINT}"
        ) from exc
    return av
