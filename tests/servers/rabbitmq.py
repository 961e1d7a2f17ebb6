"""A real RabbitMQ for the tests (Debian package ``rabbitmq-server``), started once a session.

``RabbitMQServer.start_in(directory)`` runs a node of its own, isolated from any RabbitMQ the
machine already runs:

- its own ``epmd`` on a free loopback port (``ERL_EPMD_PORT``), so the node registers
  nowhere else and nothing outlives the session;
- a unique node name, the AMQP listener and the Erlang distribution on free loopback ports;
- every file in ``directory``: ``HOME`` (so a fresh Erlang cookie is made there), the
  mnesia and log directories, ``rabbitmq.conf``, an empty ``rabbitmq-env.conf`` (Debian's
  ``/etc/rabbitmq/rabbitmq-env.conf`` is not read) and no plugins (no management).

Debian's ``/usr/sbin/rabbitmq-server`` switches to the ``rabbitmq`` user when run as root;
the script it wraps (``/usr/lib/rabbitmq/bin``) is run directly instead. Startup takes
seconds, hence the session scope. Readiness: the AMQP port answers the protocol header
with a ``Connection.Start`` frame (polled, bounded in real time).

Counting messages: ``queue_counts(queue)`` returns ``(ready, unacked)`` as the broker's
queue process holds them, the numbers ``rabbitmqctl list_queues messages_ready
messages_unacknowledged`` prints. ``rabbitmqctl`` boots an Erlang VM per call (about a
second); a test that polls cannot wait that long, so a hidden Erlang node (the *probe*,
``erl`` reading expressions on stdin) stays connected to the broker and asks it in a few
milliseconds. ``close_connections()`` makes the broker drop every client connection at once.

Stop: ``rabbitmqctl -n NODE stop`` (bounded), then the process group is killed, then epmd.

Fixtures (registered for every test by ``servers.fixtures``):

- ``rabbitmq_server`` (session): the node, started on first use; skips (fails under
  ``CI=true``) when ``rabbitmq-server`` is missing;
- ``rabbitmq_queue`` (function): a fresh queue name for this test (the test declares it).
"""

from __future__ import annotations

import itertools
import os
import re
import select
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import pytest

from servers.common import (
    LOOPBACK,
    ServerNotReady,
    ServerProcess,
    free_port,
    require_binary,
)

__all__ = ["RabbitMQServer", "rabbitmq_queue", "rabbitmq_server"]

DEBIAN_SCRIPTS = Path("/usr/lib/rabbitmq/bin")
START_TIMEOUT = 120.0
"""Real seconds a node may take to boot (about 10 on an idle 2-core machine)."""

_PROBE = """
Loop = fun Loop() ->
    case io:get_line('') of
        eof -> halt(0);
        {error, _} -> halt(1);
        Line ->
            Reply = try
                {ok, Tokens, _} = erl_scan:string(Line),
                {ok, Exprs} = erl_parse:parse_exprs(Tokens),
                Bindings = erl_eval:add_binding('Node', '%s', erl_eval:new_bindings()),
                {value, Value, _} = erl_eval:exprs(Exprs, Bindings),
                io_lib:format("ok ~w", [Value])
            catch Class:Reason -> io_lib:format("error ~w:~w", [Class, Reason])
            end,
            io:put_chars([Reply, $\\n]),
            Loop()
    end
end,
Loop().
"""

_COUNTS = re.compile(r"^ok \[\{messages_ready,(\d+)\},\{messages_unacknowledged,(\d+)\}\]$")
_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
_names = itertools.count()


def _script(name: str) -> str:
    """A RabbitMQ script: Debian's unwrapped one, else whatever is on PATH."""
    path = DEBIAN_SCRIPTS / name
    if path.is_file() and os.access(path, os.X_OK):
        return str(path)
    return require_binary(name, "rabbitmq-server")


class RabbitMQServer:
    """One RabbitMQ node of the tests, its epmd and its probe; see the module docstring."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.host = LOOPBACK
        self.port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.node = f"corral-test-{os.getpid()}-{uuid.uuid4().hex[:8]}@localhost"
        self.env = {
            "HOME": str(directory),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": LOOPBACK,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": LOOPBACK,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONF_ENV_FILE": str(directory / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq.conf"),
            "RABBITMQ_CONFIG_FILES": str(directory / "conf.d"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(directory / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(directory / "log"),
            "RABBITMQ_PID_FILE": str(directory / "rabbitmq.pid"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }
        self._epmd: ServerProcess | None = None
        self._server: ServerProcess | None = None
        self._probe: subprocess.Popen[bytes] | None = None
        self._probe_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<RabbitMQServer {self.node} amqp://{self.host}:{self.port}>"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{self.host}:{self.port}/"

    @classmethod
    def start_in(cls, directory: Path) -> RabbitMQServer:
        """Start a node with its files in ``directory``; ``ServerNotReady`` (with its log)
        if it does not come up within ``START_TIMEOUT`` seconds."""
        server = cls(directory)
        try:
            server.start()
        except BaseException:
            server.stop()
            raise
        return server

    def start(self) -> Self:
        d = self.directory
        server_script = _script("rabbitmq-server")
        epmd = require_binary("epmd", "erlang-base")
        require_binary("erl", "erlang-base")
        (d / "rabbitmq-env.conf").write_text("")
        (d / "enabled_plugins").write_text("[].\n")
        (d / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = {LOOPBACK}:{self.port}\n"
            "log.console.level = warning\n"
            "log.file.level = info\n"
        )
        self._epmd = ServerProcess(
            "epmd",
            [epmd, "-port", str(self.epmd_port), "-address", LOOPBACK],
            cwd=d,
            port=self.epmd_port,
        ).start()
        self._server = ServerProcess(
            "rabbitmq",
            [server_script],
            cwd=d,
            port=self.port,
            env=self.env,
            start_timeout=START_TIMEOUT,
            stop_timeout=15.0,
        ).start()
        self._wait_amqp()
        self._start_probe()
        return self

    def _wait_amqp(self) -> None:
        """Wait until the listener speaks AMQP (it accepts TCP a moment before that)."""
        import socket

        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with socket.create_connection((self.host, self.port), timeout=2.0) as sock:
                    sock.sendall(b"AMQP\x00\x00\x09\x01")
                    if sock.recv(1) == b"\x01":  # a method frame: Connection.Start
                        return
            except OSError:
                pass
            if time.monotonic() >= deadline:
                assert self._server is not None
                raise ServerNotReady(
                    f"rabbitmq {self.node} did not answer AMQP in {START_TIMEOUT:g} s; "
                    f"its log:\n{self._server.log()}"
                )
            time.sleep(0.05)  # polling an external process for readiness, bounded above

    def _start_probe(self) -> None:
        erl = require_binary("erl", "erlang-base")
        name = f"corral-probe-{os.getpid()}-{next(_names)}-{uuid.uuid4().hex[:6]}"
        argv = [
            erl,
            "-sname", name,
            "-hidden",
            "-noshell",
            "-kernel", "inet_dist_use_interface", "{127,0,0,1}",
            "-eval", _PROBE % self.node,
        ]  # fmt: skip
        with open(self.directory / "probe.log", "ab") as log:
            self._probe = subprocess.Popen(
                argv,
                cwd=self.directory,
                env={**os.environ, **self.env},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )
        reply = self.eval("rpc:call(Node, erlang, node, []).")
        if reply != f"ok '{self.node}'":
            raise ServerNotReady(f"the probe cannot reach {self.node}: {reply}")

    def eval(self, expression: str, timeout: float = 30.0) -> str:
        """Evaluate an Erlang ``expression`` (ending with ``.``; ``Node`` is the broker's
        node name) on the probe; return its ``ok <term>`` or ``error <class>:<reason>``
        line. Blocks up to ``timeout`` real seconds; thread-safe."""
        with self._probe_lock:
            probe = self._probe
            if probe is None or probe.poll() is not None:
                raise RuntimeError(f"{self!r}: the probe is not running")
            assert probe.stdin is not None and probe.stdout is not None
            probe.stdin.write(expression.encode() + b"\n")
            probe.stdin.flush()
            ready, _, _ = select.select([probe.stdout], [], [], timeout)
            if not ready:
                raise TimeoutError(f"{self!r}: no answer to {expression!r} in {timeout:g} s")
            return probe.stdout.readline().decode().rstrip("\n")

    def queue_counts(self, queue: str, vhost: str = "/") -> tuple[int, int]:
        """``(ready, unacked)`` messages of ``queue`` as the broker holds them now.
        ``LookupError`` if the queue does not exist."""
        for name in (queue, vhost):
            if not _NAME.match(name) and name != "/":
                raise ValueError(f"queue_counts: names are [A-Za-z0-9._-]+ here; got {name!r}")
        reply = self.eval(
            "case rpc:call(Node, rabbit_amqqueue, lookup, "
            f'[{{resource, <<"{vhost}">>, queue, <<"{queue}">>}}]) of '
            "{ok, Q} -> rpc:call(Node, rabbit_amqqueue, info, "
            "[Q, [messages_ready, messages_unacknowledged]]); "
            "Other -> Other end."
        )
        match = _COUNTS.match(reply)
        if match is None:
            raise LookupError(f"{self!r}: queue {queue!r}: {reply}")
        return int(match[1]), int(match[2])

    def close_connections(self, name_prefix: str = "") -> int:
        """Make the broker close the client connections whose client-provided name
        (``connection_name``) starts with ``name_prefix`` (all of them by default), as
        ``rabbitmqctl close_connection`` does: ``connection.close`` with CONNECTION_FORCED,
        then the socket. Returns how many it closed."""
        if not re.match(r"^[A-Za-z0-9 ._-]*$", name_prefix):
            raise ValueError(f"close_connections: a plain name prefix; got {name_prefix!r}")
        reply = self.eval(
            "Name = fun(P) -> case rpc:call(Node, rabbit_networking, connection_info, "
            "[P, [client_properties]]) of [{client_properties, Props}] -> "
            'case lists:keyfind(<<"connection_name">>, 1, Props) of {_, longstr, N} -> N; '
            "_ -> <<>> end; _ -> <<>> end end, "
            "Pids = [P || P <- rpc:call(Node, rabbit_networking, connections, []), "
            f'string:prefix(Name(P), <<"{name_prefix}">>) =/= nomatch], '
            'rpc:call(Node, rabbit_networking, close_connections, [Pids, "test"]), '
            "length(Pids)."
        )
        if not reply.startswith("ok "):
            raise RuntimeError(f"{self!r}: close_connections: {reply}")
        return int(reply[3:])

    def stop(self) -> None:
        """Stop the node (``rabbitmqctl stop``, bounded), its process group, the probe and
        epmd. Safe to call more than once."""
        probe, self._probe = self._probe, None
        if probe is not None:
            _end(probe)
        server, self._server = self._server, None
        if server is not None:
            if server.running:
                try:
                    subprocess.run(
                        [_script("rabbitmqctl"), "-n", self.node, "stop"],
                        env={**os.environ, **self.env},
                        cwd=self.directory,
                        stdin=subprocess.DEVNULL,
                        capture_output=True,
                        timeout=60,
                        check=False,
                    )
                except subprocess.TimeoutExpired:
                    pass  # the process group is killed next
            server.stop()
        epmd, self._epmd = self._epmd, None
        if epmd is not None:
            epmd.stop()


def _end(process: subprocess.Popen[bytes]) -> None:
    """Close the probe's stdin (it halts at EOF), then make sure it is gone."""
    try:
        if process.stdin is not None:
            process.stdin.close()
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    finally:
        if process.stdout is not None:
            process.stdout.close()


@pytest.fixture(scope="session")
def rabbitmq_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQServer]:
    """One RabbitMQ node for the test session (skipped where it is missing, not in CI)."""
    _script("rabbitmq-server")
    server = RabbitMQServer.start_in(tmp_path_factory.mktemp("rabbitmq"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def rabbitmq_queue(request: pytest.FixtureRequest) -> str:
    """A queue name no other test uses (the test declares the queue)."""
    return f"corral-{re.sub(r'[^A-Za-z0-9]+', '-', request.node.name)[:80]}-{next(_names)}"
