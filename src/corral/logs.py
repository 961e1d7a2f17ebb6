"""Readable logging for corral's entry points: one stderr handler on the ``corral`` logger.

``corral serve``, ``corral demo``, ``corral train`` and ``Node.run`` call ``configure`` so a
service that crash-loops is never silent. The library itself installs no handler when
imported (only ``corral._logging``'s ``NullHandler``); ``configure`` is for programs.

``configure(level="info", fmt="text", *, stream=None) -> bool``
    Install one handler writing to ``stream`` (``sys.stderr`` at the time of the call) on
    the ``corral`` logger and set that logger's level, unless the application configured
    logging already: the root logger, or the ``corral`` logger, has a handler that is
    neither the ``NullHandler`` nor one ``configure`` installed. Then it changes nothing and
    returns False. Calling it again replaces its own handler (the last call wins).

``fmt="text"`` writes ``2026-12-06 17:35:10,123 ERROR corral.supervisor: message``;
``fmt="json"`` one JSON object per line with ``time`` (ISO 8601, UTC), ``level``,
``logger``, ``message``, ``exception`` (the formatted traceback) when there is one, and a
crash report's fields (``supervisor``, ``child_id``, ``pid``, ``reason``,
``restart_count``, ``action``) when the record carries one.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, TextIO

if TYPE_CHECKING:
    from corral.runtime.supervisor import CrashReport

__all__ = [
    "FORMATS",
    "LEVELS",
    "JsonFormatter",
    "add_arguments",
    "application_configured",
    "configure",
    "configure_default",
]

LEVELS: Final = ("debug", "info", "warning", "error", "critical")
"""The levels the commands' ``--log-level`` accepts."""

FORMATS: Final = ("text", "json")
"""The formats the commands' ``--log-format`` accepts."""

TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Handler(logging.StreamHandler[TextIO]):
    """The handler ``configure`` installs, told apart from the application's by its type."""


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (see the module doc for the keys)."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, object] = {
            "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        report: CrashReport | None = getattr(record, "crash_report", None)
        if report is not None:
            from corral.errors import describe_reason
            from corral.runtime.supervisor import describe_supervisor

            line["supervisor"] = describe_supervisor(report.supervisor).strip("'")
            line["child_id"] = report.child_id
            line["pid"] = repr(report.pid)
            line["reason"] = describe_reason(report.reason)
            line["restart_count"] = report.restart_count
            line["action"] = report.action
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=repr)


def configure(level: str = "info", fmt: str = "text", *, stream: TextIO | None = None) -> bool:
    """Install corral's stderr handler unless the application configured logging; return
    whether it did. ``ValueError`` for a level or format that is not one of ``LEVELS`` /
    ``FORMATS`` (case-insensitive)."""
    if not isinstance(level, str) or level.lower() not in LEVELS:
        raise ValueError(f"corral logging: level must be one of {', '.join(LEVELS)}; got {level!r}")
    if fmt not in FORMATS:
        raise ValueError(f"corral logging: format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    corral = logging.getLogger("corral")
    ours = [h for h in corral.handlers if isinstance(h, _Handler)]
    if not ours and application_configured():
        return False
    for handler in ours:
        corral.removeHandler(handler)
        handler.close()
    handler = _Handler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    corral.addHandler(handler)
    corral.setLevel(level.upper())
    return True


def configure_default() -> bool:
    """``configure()`` with its defaults, unless logging is configured already, by the
    application or by an earlier ``configure`` (``Node.run`` calls this, so a command's
    ``--log-level`` stands)."""
    if any(isinstance(h, _Handler) for h in logging.getLogger("corral").handlers):
        return False
    return configure()


def add_arguments(parser: argparse.ArgumentParser, *, level: str = "info") -> None:
    """Add ``--log-level`` (default ``level``) and ``--log-format`` to a command's parser;
    pass the parsed ``args.log_level`` and ``args.log_format`` to ``configure``."""
    parser.add_argument(
        "--log-level",
        choices=LEVELS,
        default=level,
        type=str.lower,
        help=f"log corral's records at this level and above to stderr (default {level})",
    )
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default="text",
        help="text lines, or one JSON object per line (default text)",
    )


def application_configured() -> bool:
    """Whether the root or the ``corral`` logger has a handler that ``configure`` did not
    install (the ``NullHandler`` every library adds does not count)."""
    handlers = [*logging.getLogger().handlers, *logging.getLogger("corral").handlers]
    return any(not isinstance(h, _Handler | logging.NullHandler) for h in handlers)
