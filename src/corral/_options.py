"""One schema that validates and documents a component's options.

An options record is a frozen, keyword-only dataclass deriving from ``Options``; each field
is declared with ``option(...)``, which carries its doc, its rule and the check for it.
Values are validated at construction. There is one entry for each way options arrive, and
every error has one shape, ``invalid options for <what>: <rule>; got <value>``:

- ``Options.from_kwargs(kwargs, what=...)``: a constructor's keyword arguments (``Serving``,
  ``Trainer``, ``Port``, ``Supervisor``, ``Node``); an unknown one is named with the valid ones
  listed, never Python's bare ``TypeError``.
- ``Options.parse(data, path=..., nested=...)``: a config mapping, nested records included,
  with the dotted path of the option in every error (``batchers.default.batch_sizy``).
- ``Options.from_mapping(data, path=...)``: a flat mapping.

``markdown_table()`` renders the schema for docs/ (a test keeps the docs' tables equal to it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Self

__all__ = ["Options", "option"]


def option(
    default: Any,
    *,
    doc: str,
    rule: str,
    check: Callable[[Any], bool],
    shown: str | None = None,
) -> Any:
    """Declare an option field: ``rule`` is the human text of what ``check`` accepts.

    ``shown`` is how docs write the default when its value depends on the machine (an
    interpreter's path): ``"sys.executable"`` rather than this checkout's path.
    """
    metadata: dict[str, Any] = {"doc": doc, "rule": rule, "check": check}
    if shown is not None:
        metadata["shown"] = shown
    return dataclasses.field(default=default, metadata=metadata)


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
    def from_kwargs(cls, kwargs: Mapping[str, object], *, what: str | None = None) -> Self:
        """Build from a constructor's keyword arguments. An unknown name or a value that
        breaks its rule raises ``ValueError`` naming ``what`` (default ``cls._what``)."""
        where = what or cls._what
        valid = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        for key in kwargs:
            if key not in valid:
                raise ValueError(
                    f"invalid options for {where}: unknown option '{key}'; "
                    f"valid options: {', '.join(valid)}"
                )
        try:
            return cls(**kwargs)
        except ValueError as exc:
            if what is None:
                raise
            text = str(exc).replace(f"invalid options for {cls._what}:", "", 1).strip()
            raise ValueError(f"invalid options for {where}: {text}") from None

    @classmethod
    def parse(
        cls,
        data: object,
        *,
        path: str = "",
        nested: Mapping[str, Callable[[object, str], object]] | None = None,
        what: str | None = None,
    ) -> Self:
        """Build from the mapping ``data`` found at ``path`` (``"batchers.x."``) of a config.

        Unknown keys, values that break a field's rule and missing required values raise
        ``ValueError`` naming the dotted path (and ``what``, default ``cls._what``);
        ``nested`` converts the values of some keys first (sub-mappings into records). A
        record of ``cls`` is returned as it is.
        """
        if isinstance(data, cls):
            return data
        where = what or cls._what

        def fail(message: str) -> ValueError:
            return ValueError(f"invalid options for {where}: {message}")

        if not isinstance(data, Mapping):
            name = path[:-1] if path else "options"
            raise fail(f"{name} must be a mapping of option names to values; got {data!r}")
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        for key in data:
            if key not in fields:
                raise fail(f"unknown option '{path}{key}'; valid options: {', '.join(fields)}")
        values: dict[str, Any] = {}
        for key, raw in data.items():
            value = raw
            if nested is not None and key in nested:
                value = nested[key](raw, f"{path}{key}.")
            meta = fields[key].metadata
            if not meta["check"](value):
                shown = dict(raw) if isinstance(raw, Mapping) else raw
                raise fail(f"{path}{key} must be {meta['rule']}; got {shown!r}")
            values[key] = value
        for name, field in fields.items():
            if name not in values and not field.metadata["check"](field.default):
                raise fail(f"{path}{name} is required ({field.metadata['rule']})")
        return cls.from_mapping(values, path=path)

    @classmethod
    def markdown_table(cls) -> str:
        """The options as a Markdown table (option, default, meaning), for docs/."""
        rows = ["| option | default | meaning |", "|---|---|---|"]
        for field in dataclasses.fields(cls):  # type: ignore[arg-type]
            default = field.default
            check = field.metadata.get("check")
            if default is dataclasses.MISSING or (check is not None and not check(default)):
                shown = "required"
            elif "shown" in field.metadata:
                shown = f"`{field.metadata['shown']}`"
            else:
                shown = f"`{default!r}`"
            doc = " ".join(str(field.metadata.get("doc", "")).split()).replace("|", "\\|")
            rows.append(f"| `{field.name}` | {shown} | {doc} |")
        return "\n".join(rows)

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
