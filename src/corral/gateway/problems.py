"""``HttpProblem``: an answer other than success, with its status, message and headers.

Pure. Every refusal the gateway makes is one of these, raised where the problem is found
and turned into ``{"error": message}`` by the ASGI adapter. ``problem_for`` maps the errors a
serving raises to the status codes of docs/http.md. Messages never carry a traceback, and
absolute file-system paths in them are replaced by ``<path>``.
"""

from __future__ import annotations

import re

from corral.errors import (
    DeadlineExceeded,
    InvalidInput,
    PartitionCrashed,
    PortCallError,
    ServingNotRunning,
    ServingOverloaded,
    SwapFailed,
)

__all__ = ["BadRequest", "HttpProblem", "problem_for", "redact"]

_PATH = re.compile(r"(?<![\w.:/])/(?:[\w.\-+@]+/)+[\w.\-+@]*")


def redact(message: str) -> str:
    """``message`` on one line, with absolute paths replaced by ``<path>``."""
    first = message.strip().splitlines()[0] if message.strip() else ""
    return _PATH.sub("<path>", first)


class HttpProblem(Exception):
    """An HTTP answer other than success: ``status``, ``message`` (the body's ``error``) and
    extra ``headers``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class BadRequest(HttpProblem):
    """400: ``field`` of the request breaks ``rule``; ``got`` is quoted, shortened."""

    def __init__(self, field: str, rule: str, got: object = ...) -> None:
        message = f"{field} must be {rule}"
        if got is not ...:
            text = repr(got)
            if len(text) > 80:
                text = text[:77] + "..."
            message += f"; got {text}"
        super().__init__(400, message)
        self.field = field


def problem_for(
    exc: BaseException, model: str, *, overload_status: int, retry_after: int
) -> HttpProblem:
    """The answer for ``exc``, raised by model ``model``'s serving (or its model)."""
    retry = {"Retry-After": str(retry_after)}
    if isinstance(exc, InvalidInput):
        return HttpProblem(400, f"inputs[0] must be {exc.expected}; got {exc.got}")
    if isinstance(exc, ServingOverloaded):
        return HttpProblem(overload_status, str(exc), retry)
    if isinstance(exc, DeadlineExceeded):
        return HttpProblem(504, str(exc))
    if isinstance(exc, ServingNotRunning):
        return HttpProblem(503, redact(str(exc)), retry)
    if isinstance(exc, SwapFailed):
        return HttpProblem(500, redact(str(exc)))
    if isinstance(exc, PartitionCrashed):
        return HttpProblem(500, redact(str(exc)))
    if isinstance(exc, PortCallError):
        what = f"{exc.remote_type}: {exc.remote_message}"
    else:
        what = f"{type(exc).__name__}: {exc}"
    return HttpProblem(500, redact(f"model '{model}' failed: {what}"))
