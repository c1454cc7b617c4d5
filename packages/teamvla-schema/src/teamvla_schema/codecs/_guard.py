"""Optional-dependency guard: codecs import PyAV through :func:`require_av` and zstandard
through :func:`require_zstd`; both come with the ``video`` extra."""

from __future__ import annotations

from types import ModuleType

#: What to run when a codec dependency is missing; every "needs ..." message ends with it.
EXTRA_HINT = 'pip install "teamvla-schema[video]"'


def _require(module: str, package: str, codec: str) -> ModuleType:
    try:  # the import statement's own hook, so tests can make it fail
        return __import__(module)
    except ImportError as exc:  # pragma: no cover - exercised by monkeypatching in tests
        raise ImportError(
            f"the {codec!r} codec needs {package}, which is not installed: {EXTRA_HINT}"
        ) from exc


def require_av(codec: str) -> ModuleType:
    """Return the ``av`` module, or raise a one-line ImportError naming the extra."""
    return _require("av", "PyAV", codec)


def require_zstd(codec: str) -> ModuleType:
    """Return the ``zstandard`` module, or raise a one-line ImportError naming the extra."""
    return _require("zstandard", "zstandard", codec)
