"""One schema that validates and documents a component's options.

An options record is a frozen, keyword-only dataclass deriving from ``Options``; each field
is declared with ``option(...)``, which carries its doc, its rule and the check for it.
Values are validated at construction; ``from_mapping`` also rejects unknown keys, naming the
dotted path and listing the valid ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Self

__all__ = ["Options", "option"]


def option(default: Any, *, doc: str, rule: str, check: Callable[[Any], bool]) -> Any:
    """Declare an option field: ``rule`` is the human text of what ``check`` accepts."""
    return dataclasses.field(default=default, metadata={"doc": doc, "rule": rule, "check": check})


def is_int(low: int) -> Callable[[Any], bool]:
    """A check for an int (not a bool) >= ``low``."""
    return lambda v: type(v) is int and v >= low


def is_number(low: float, *, strict: bool = False) -> Callable[[Any], bool]:
    """A check for an int or float (not a bool) >= ``low`` (> when ``strict``)."""

    def check(v: Any) -> bool:
        if type(v) not in (int, float):
            return False
        return bool(v > low) if strict else bool(v >= low)

    return check


def one_of(*values: str) -> Callable[[Any], bool]:
    """A check for one of the given strings."""
    return lambda v: type(v) is str and v in values


class Options:
    """Base for option records. Subclasses set ``_what`` ("supervisor", "batcher 'x'")."""

    _what: ClassVar[str] = "options"

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            check = field.metadata.get("check")
            value = getattr(self, field.name)
            if check is not None and not check(value):
                raise ValueError(
                    f"invalid options for {self._what}: {field.name} must be "
                    f"{field.metadata['rule']}; got {value!r}"
                )

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], *, path: str = "") -> Self:
        """Build from a mapping (a config file's section), rejecting unknown keys.

        ``path`` prefixes key names in errors, e.g. ``"batchers.default."``.
        """
        valid = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        for key in data:
            if key not in valid:
                raise ValueError(
                    f"invalid options for {cls._what}: unknown option '{path}{key}'; "
                    f"valid options: {', '.join(valid)}"
                )
        return cls(**data)

    @classmethod
    def describe(cls) -> str:
        """A plain-text table of the options: name, default, rule and doc."""
        lines = []
        for field in dataclasses.fields(cls):  # type: ignore[arg-type]
            lines.append(
                f"{field.name} (default {field.default!r}; {field.metadata.get('rule', 'any')}): "
                f"{field.metadata.get('doc', '')}"
            )
        return "\n".join(lines)
