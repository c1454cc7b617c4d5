"""The one exception type every reader, writer and validator in TeamVLA raises for bad input."""

from __future__ import annotations

from os import PathLike


class SchemaError(ValueError):
    """Bad input: a step, an episode file, metadata, a checkpoint or a config.

    The message always says *where* (file, step index, field or dotted key) and
    *what was expected versus received*. The same facts are kept as attributes so
    that tools can report them without parsing the message.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | PathLike[str] | None = None,
        field: str | None = None,
        step: int | None = None,
    ) -> None:
        self.path = None if path is None else str(path)
        self.field = field
        self.step = step
        self.reason = message
        where = []
        if self.path is not None:
            where.append(f"{self.path}")
        if step is not None:
            where.append(f"step {step}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)

    def with_path(self, path: str | PathLike[str]) -> SchemaError:
        """The same error, now also naming the file it concerns."""
        return SchemaError(self.reason, path=path, field=self.field, step=self.step)
