"""``GatewayOptions``: every option of a ``Gateway``, with its doc, default, unit and rule."""

from __future__ import annotations

from dataclasses import dataclass

from corral._options import Options, is_int, is_number, option

__all__ = ["GatewayOptions"]


def _is_host(value: object) -> bool:
    return type(value) is str and value != "" and not any(c.isspace() for c in value)


@dataclass(frozen=True, kw_only=True)
class GatewayOptions(Options):
    """Where the gateway listens, what it accepts and how it answers."""

    _what = "gateway"

    host: str = option(
        "127.0.0.1",
        doc="Address to bind. The loopback address by default: only this machine can reach "
        "the gateway until you say otherwise ('0.0.0.0' for every interface, behind a load "
        "balancer).",
        rule="a non-empty str without spaces",
        check=_is_host,
    )
    port: int = option(
        8000,
        doc="TCP port to bind; 0 picks a free one (read it back from Gateway.port).",
        rule="an int from 0 to 65535",
        check=lambda v: type(v) is int and 0 <= v <= 65535,
    )
    admin_token: str | None = option(
        None,
        doc="Bearer token the model-repository endpoints (load, unload, index) require. The "
        "repository endpoints exist only when this and a repository are given.",
        rule="a str of at least 16 characters, or None",
        check=lambda v: v is None or (type(v) is str and len(v) >= 16),
    )
    max_body_bytes: int = option(
        64 * 1024 * 1024,
        doc="Largest request body accepted, in bytes; a larger one is answered 413 as soon as "
        "it is seen (from Content-Length, or while the body streams in), never buffered.",
        rule="an int >= 1",
        check=is_int(1),
    )
    max_json_depth: int = option(
        32,
        doc="Deepest nesting of arrays and objects a JSON body may have; deeper is 400.",
        rule="an int >= 4",
        check=is_int(4),
    )
    default_timeout: float | None = option(
        None,
        doc="Seconds a request may take when it names no deadline itself (parameters.timeout "
        "or the Corral-Timeout header); past it the answer is 504. None: no deadline.",
        rule="a number > 0 or None",
        check=lambda v: v is None or is_number(0, strict=True)(v),
    )
    overload_status: int = option(
        503,
        doc="HTTP status of a request refused because the serving's queue is full: 503 or "
        "429. Both carry Retry-After.",
        rule="503 or 429",
        check=lambda v: type(v) is int and v in (503, 429),
    )
    retry_after: int = option(
        1,
        doc="Seconds in the Retry-After header of an overload or not-running answer.",
        rule="an int >= 0",
        check=is_int(0),
    )
    drain_timeout: float = option(
        30.0,
        doc="Seconds a stopping gateway waits for in-flight requests to be answered (it "
        "accepts no new connection meanwhile) before it cancels what is left.",
        rule="a number >= 0",
        check=is_number(0),
    )
    keep_alive: float = option(
        5.0,
        doc="Seconds an idle keep-alive connection stays open.",
        rule="a number > 0",
        check=is_number(0, strict=True),
    )
    metrics: bool = option(
        False,
        doc="Serve Prometheus metrics at /metrics (corral.metrics, in a registry of the "
        "gateway's own; needs corral[metrics]). They are counted while the gateway runs. "
        "Like the dashboard, /metrics is on the gateway's bind, and with an admin_token it "
        "needs that token (Authorization: Bearer).",
        rule="a bool",
        check=lambda v: type(v) is bool,
    )
    access_log: bool = option(
        False,
        doc="Log every request (uvicorn's access log, logger 'uvicorn.access').",
        rule="a bool",
        check=lambda v: type(v) is bool,
    )
