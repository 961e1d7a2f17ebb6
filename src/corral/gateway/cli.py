"""``corral serve``: servings behind the HTTP gateway, from the command line or an app file.

    corral serve mymodels:load --name rank --partitions 2 --kind port --http 127.0.0.1:8000
    corral serve --app app.toml
    corral serve mymodels:load --name rank --partitions 2 --ray 10.0.0.5:6379

Every serving option is a flag, generated from ``ServingOptions``' schema (its doc, rule and
default are the flag's help); ``batch_keys`` (a callable) has none. ``--ray ADDRESS``
connects to a Ray cluster first, and servings that set no ``kind`` run ``kind="ray"``
partitions there (docs/cluster.md). Logs go to stderr at
INFO (``--log-level``, ``--log-format text|json``; ``--quiet`` is ``--log-level warning``)
unless the application configured logging (``corral.logs``). SIGINT or SIGTERM drains: the gateway
stops accepting, answers what is in flight, then the servings stop; exit status 0. A bad
option or app file is exit status 2; a node that gave up, 1.

The app file (TOML)::

    [gateway]
    http = "127.0.0.1:8000"        # and any GatewayOptions field (admin_token, ...)

    [[serving]]
    name = "rank"
    factory = "mymodels:load"
    versions = { "2" = "mymodels:load_v2" }   # what /v2/repository/models/rank/load may swap to
    [serving.options]
    partitions = 2
    kind = "port"
    input_spec = { shape = [4], dtype = "float32" }
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from corral import logs
from corral.gateway.options import GatewayOptions
from corral.serving.options import ServingOptions

__all__ = ["main"]

_SKIPPED = ("batch_keys",)
"""ServingOptions with no command-line form (a callable)."""
_PAIRS = {"port_options": "--port-option", "ray_options": "--ray-option"}
"""ServingOptions given as repeated NAME=JSON flags."""


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (127.0.0.1:8000); got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _input_spec(text: str) -> tuple[tuple[int, ...], str]:
    shape, sep, dtype = text.partition(":")
    try:
        dims = tuple(int(d) for d in shape.split(",") if d.strip())
    except ValueError:
        dims = (-1,)
    if not sep or any(d < 0 for d in dims):
        raise argparse.ArgumentTypeError(
            f"expected SHAPE:DTYPE (4:float32, 3,4:int64); got {text!r}"
        )
    return dims, dtype


def _optional(convert: Callable[[str], object]) -> Callable[[str], object]:
    return lambda text: None if text.lower() == "none" else convert(text)


def _converter(field: dataclasses.Field[object]) -> Callable[[str], object] | None:
    kinds: dict[str, Callable[[str], object]] = {
        "int": int,
        "float": float,
        "str": str,
        "int | None": _optional(int),
        "float | None": _optional(float),
        "str | None": _optional(str),
        "PartitionKind": str,
        "tuple[int, ...]": lambda t: tuple(int(v) for v in t.split(",") if v.strip()),
        "InputSpec | None": _input_spec,
        "Spec | None": _input_spec,  # one array's spec from the command line
    }
    return kinds.get(str(field.type))


def _add_serving_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("serving options (ServingOptions; also [serving.options])")
    for field in dataclasses.fields(ServingOptions):
        if field.name in _SKIPPED:
            continue
        flag = "--" + field.name.replace("_", "-")
        doc = (
            f"{field.metadata['doc']} Must be {field.metadata['rule']}; default {field.default!r}."
        )
        doc = doc.replace("%", "%%")
        if str(field.type) == "bool":
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=doc)
            continue
        if field.name in _PAIRS:
            group.add_argument(
                _PAIRS[field.name],
                dest=field.name,
                action="append",
                metavar="NAME=JSON",
                help=doc + " One NAME=VALUE per flag, VALUE as JSON ('spares=0').",
            )
            continue
        convert = _converter(field)
        if convert is None:
            continue
        metavar = "SHAPE:DTYPE" if field.name == "input_spec" else field.name.upper()
        group.add_argument(flag, type=convert, default=None, metavar=metavar, help=doc)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="corral serve",
        description="Serve models over HTTP with the Open Inference Protocol (KServe v2): "
        "one serving from a factory, or several from an app file. See docs/http.md.",
    )
    parser.add_argument("factory", nargs="?", help="the model factory, 'module:attr'")
    parser.add_argument("--app", type=Path, help="a TOML app file with [[serving]] tables")
    parser.add_argument("--name", default="model", help="the model's name (default 'model')")
    parser.add_argument(
        "--http",
        type=_host_port,
        default=("127.0.0.1", 8000),
        metavar="HOST:PORT",
        help="where to listen (default 127.0.0.1:8000; port 0 picks a free one, logged)",
    )
    parser.add_argument(
        "--version-factory",
        action="append",
        default=[],
        metavar="VERSION=module:attr",
        help="declare a version the repository's load endpoint may hot-swap to (repeatable); "
        "needs an admin token",
    )
    parser.add_argument(
        "--admin-token-env",
        metavar="VAR",
        help="read the repository endpoints' bearer token from this environment variable "
        "(the repository endpoints are off without one)",
    )
    parser.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="connect to the Ray cluster at ADDRESS ('auto', HOST:PORT, ray://...) and run "
        "partitions there: servings that do not set kind get kind='ray' (docs/cluster.md)",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="log warnings and crashes only (--log-level warning)"
    )
    logs.add_arguments(parser)
    gateway = parser.add_argument_group("gateway options (GatewayOptions; also [gateway])")
    for field in dataclasses.fields(GatewayOptions):
        if field.name in ("host", "port", "admin_token"):
            continue
        flag = "--" + field.name.replace("_", "-")
        doc = f"{field.metadata['doc']} Default {field.default!r}.".replace("%", "%%")
        if str(field.type) == "bool":
            gateway.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=doc
            )
        else:
            convert = _converter(field)
            assert convert is not None, field.name
            gateway.add_argument(flag, type=convert, default=None, metavar="N", help=doc)
    _add_serving_options(parser)
    return parser


def _flag_options(args: argparse.Namespace, fields: Sequence[str]) -> dict[str, object]:
    return {f: getattr(args, f) for f in fields if getattr(args, f, None) is not None}


def _from_args(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    import json

    serving_fields = [f.name for f in dataclasses.fields(ServingOptions)]
    options: dict[str, Any] = _flag_options(args, serving_fields)
    for field, flag in _PAIRS.items():
        if field in options:
            pairs = {}
            for item in options[field]:
                key, sep, value = str(item).partition("=")
                if not sep:
                    raise ValueError(f"{flag} must be NAME=JSON; got {item!r}")
                pairs[key] = json.loads(value)
            options[field] = pairs
    versions = {}
    for item in args.version_factory:
        version, sep, factory = item.partition("=")
        if not sep or not version or not factory:
            raise ValueError(f"--version-factory must be VERSION=module:attr; got {item!r}")
        versions[version] = factory
    serving = {"name": args.name, "factory": args.factory, "options": options}
    serving["versions"] = versions
    gateway = _flag_options(args, [f.name for f in dataclasses.fields(GatewayOptions)])
    return [serving], gateway


def _from_file(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    with open(path, "rb") as f:
        doc = tomllib.load(f)
    unknown = set(doc) - {"serving", "gateway"}
    if unknown:
        raise ValueError(
            f"{path}: unknown table(s) {sorted(unknown)}; expected [[serving]], [gateway]"
        )
    servings = doc.get("serving")
    if not isinstance(servings, list) or not servings:
        raise ValueError(f"{path}: needs at least one [[serving]] table")
    gateway = dict(doc.get("gateway", {}))
    if "http" in gateway:
        gateway["host"], gateway["port"] = _host_port(str(gateway.pop("http")))
    for i, table in enumerate(servings):
        unknown = set(table) - {"name", "factory", "options", "versions"}
        if unknown or "factory" not in table:
            raise ValueError(
                f"{path}: serving[{i}] takes factory, name, options and versions; "
                f"got {sorted(table)}"
            )
        opts = dict(table.get("options", {}))
        spec = opts.get("input_spec")
        if isinstance(spec, dict):
            opts["input_spec"] = (tuple(spec.get("shape", ())), spec.get("dtype"))
        for key in ("pad_to",):
            if isinstance(opts.get(key), list):
                opts[key] = tuple(opts[key])
        table["options"] = opts
    return servings, gateway


def main(argv: Sequence[str]) -> int:
    """``corral serve``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.app is None) == (args.factory is None):
        parser.error("give a factory (module:attr) or --app FILE, not both")
    logs.configure("warning" if args.quiet else args.log_level, args.log_format)
    from corral.gateway.gateway import Gateway
    from corral.runtime.node import Node
    from corral.serving import Serving

    try:
        if args.app is not None:
            tables, gateway_options = _from_file(args.app)
        else:
            tables, gateway_options = _from_args(args)
        if args.app is None or "port" not in gateway_options:
            gateway_options.setdefault("host", args.http[0])
            gateway_options.setdefault("port", args.http[1])
        if args.admin_token_env:
            token = os.environ.get(args.admin_token_env)
            if not token:
                raise ValueError(f"--admin-token-env: ${args.admin_token_env} is not set")
            gateway_options["admin_token"] = token
        if args.ray is not None:
            for t in tables:
                t["options"].setdefault("kind", "ray")
        servings = [
            Serving(t["factory"], name=str(t.get("name", "model")), **dict(t["options"]))
            for t in tables
        ]
        repository = {
            str(t.get("name", "model")): dict(t["versions"]) for t in tables if t.get("versions")
        }
        gateway = Gateway(servings, repository=repository or None, **gateway_options)
    except (ValueError, OSError, tomllib.TOMLDecodeError) as exc:
        print(f"corral serve: {exc}", file=sys.stderr)
        return 2
    if args.ray is not None:
        from corral.cluster import connect, disconnect

        try:
            connect(args.ray)
        except Exception as exc:  # Ray's own errors (ConnectionError, ...) say what failed
            print(f"corral serve: --ray {args.ray}: cannot connect: {exc}", file=sys.stderr)
            return 2
    node = Node([*(s.child_spec() for s in servings), gateway.child_spec()], name="serve")
    try:
        node.run()
    except Exception as exc:
        logging.getLogger("corral.serve").error("corral serve: the node stopped: %r", exc)
        return 1
    finally:
        if args.ray is not None:
            disconnect()
    return 0
