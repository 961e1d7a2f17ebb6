"""Seed sketch 1, "AI service manager": one orchestrator process routes requests to many
model services and collects their answers concurrently.

As in the Erlang sketch, the manager is registered by name; ``("request", service, data)``
is forwarded to the named model service as ``("process", manager_pid, data)``, and the
service answers with ``("response", result)``, which the manager prints. ``handle_request``
sends a request to the manager by its registered name. Each model service is a process of
its own, under a supervisor: when bad input crashes one ("let it crash"), its supervisor
starts a fresh one, the manager -- which monitors the services -- answers the request that
crashed it with an error and re-sends the ones the dead process had not handled, and the
other services never stop answering.

Run it::

    .venv/bin/python examples/seed/service_manager.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import math
import sys
from collections.abc import Callable

import numpy as np

from corral import Actor, Caller, ChildSpec, Down, Node, Pid, Supervisor, get_node

LEXICON = {"good": 1.0, "great": 2.0, "love": 2.0, "bad": -1.0, "awful": -2.0, "slow": -1.0}
MEAN, STD = np.array([10.0, 0.5, 200.0]), np.array([2.0, 0.1, 50.0])


def sentiment(text: object) -> str:
    score = sum(LEXICON.get(w, 0.0) for w in str(text).lower().split())
    return f"{'positive' if score >= 0 else 'negative'} ({math.tanh(score / 2):+.2f})"


def anomaly(values: object) -> bool:
    x = np.asarray(values, dtype=float)
    if np.isnan(x).any():
        raise ValueError(f"anomaly model: NaN in input {values!r}")  # let it crash
    return bool(np.any(np.abs((x - MEAN) / STD) > 3.0))


def forecast(series: object) -> float:
    y = np.asarray(series, dtype=float)
    slope, intercept = np.polyfit(np.arange(len(y)), y, 1)  # a linear trend
    return round(float(slope * len(y) + intercept), 3)


MODELS: dict[str, Callable[[object], object]] = {
    "sentiment": sentiment,
    "anomaly": anomaly,
    "forecast": forecast,
}


class ModelService(Actor):
    """One model, registered under its service name."""

    def __init__(self, service: str) -> None:
        self.service, self.model = service, MODELS[service]

    def init(self) -> None:
        manager = self.node.whereis("service_manager")
        if manager is not None:  # a restarted service tells the manager it is back
            manager.send(("up", self.service, self.pid))

    def handle_info(self, msg: object) -> None:
        match msg:
            case ("process", Pid() as reply_to, {"id": int(request_id), "input": data}):
                output = self.model(data)  # raises on bad input: the process crashes
                result = {"service": self.service, "id": request_id, "output": output}
                reply_to.send(("response", result))


class ServiceManager(Actor):
    """Routes requests to services by name and collects the responses."""

    def __init__(self) -> None:
        self.ids = itertools.count(1)
        self.pending: dict[str, dict[int, object]] = {s: {} for s in MODELS}  # unanswered
        self.up: dict[str, Pid | None] = {}
        self.answers: dict[int, dict[str, object]] = {}
        self.waiter: Caller | None = None

    def init(self) -> None:
        for service in MODELS:
            self._watch(service, self.node.lookup(service))

    def _watch(self, service: str, pid: Pid) -> None:
        self.monitor(pid)
        self.up[service] = pid
        for request_id, data in self.pending[service].items():  # in the order they came
            pid.send(("process", self.pid, {"id": request_id, "input": data}))

    def handle_info(self, msg: object) -> None:
        match msg:
            case ("request", str(service), data):
                request_id = next(self.ids)
                self.pending[service][request_id] = data
                if (pid := self.up[service]) is not None:  # else sent when it is back
                    pid.send(("process", self.pid, {"id": request_id, "input": data}))
            case ("response", {"service": str(service), "id": int(request_id), "output": out}):
                self._answer(service, request_id, {"output": out})
            case Down(pid=pid, reason=reason):
                service = next(s for s, p in self.up.items() if p is pid)
                self.up[service] = None
                if lost := self.pending[service]:
                    # A service handles requests in order, so the oldest unanswered one
                    # was running when it crashed: it gets the error; the rest wait.
                    crashed = next(iter(lost))
                    print(f"manager: {service} crashed on request {crashed}: {reason!r}")
                    self._answer(service, crashed, {"error": repr(reason)})
            case ("up", str(service), Pid() as pid):
                waiting = list(self.pending[service])
                print(f"manager: {service} is back as {pid}; re-sending requests {waiting}")
                self._watch(service, pid)

    def _answer(self, service: str, request_id: int, result: dict[str, object]) -> None:
        del self.pending[service][request_id]
        self.answers[request_id] = result
        print(f"response {request_id} from {service}: {result}")
        self._reply_if_done()

    def handle_call(self, msg: object) -> object:
        if msg != "wait_answers":
            raise ValueError(f"ServiceManager: unknown call {msg!r}")
        # This call queues behind every request sent before it: once nothing is pending,
        # all of them have been answered.
        self.waiter = self.defer_reply()
        self._reply_if_done()
        return None

    def _reply_if_done(self) -> None:
        if self.waiter is not None and not any(self.pending.values()):
            self.waiter.reply(dict(self.answers))
            self.waiter = None


def handle_request(service: str, data: object) -> None:
    """The seed's ``handle_request(Service, Data)``: send to the manager by its name."""
    get_node().lookup("service_manager").send(("request", service, data))


POISON = ("anomaly", [float("nan"), 0.5, 200.0])  # bad input: crashes the anomaly service
REQUESTS = [
    ("sentiment", "great model, love it"),
    ("anomaly", [10.5, 0.52, 190.0]),
    ("forecast", [1.0, 2.1, 2.9, 4.2, 5.0]),
    POISON,
    ("sentiment", "awful and slow"),
    ("anomaly", [19.0, 0.5, 210.0]),  # queued behind the crash: re-sent after the restart
    ("forecast", [10.0, 9.0, 8.5, 7.0]),
    ("anomaly", [9.0, 0.45, 220.0]),
]


def models_supervisor() -> Supervisor:
    """A fresh supervisor of one process per model service (one_for_one)."""
    specs = [ChildSpec(id=s, start=functools.partial(ModelService, s), name=s) for s in MODELS]
    return Supervisor(specs, strategy="one_for_one")


async def run(repeat: int) -> int:
    children = [
        ChildSpec(id="models", start=models_supervisor, type="supervisor"),
        ChildSpec(id="service_manager", start=ServiceManager, name="service_manager"),
    ]
    async with Node(children) as node:
        requests = REQUESTS + [r for r in REQUESTS if r is not POISON] * (repeat - 1)
        for service, data in requests:  # all at once: the services work concurrently
            handle_request(service, data)
        answers = await node.lookup("service_manager").call("wait_answers")
        assert isinstance(answers, dict)
        sup = next(c.pid for c in await Supervisor.which_children(node.root) if c.id == "models")
        assert sup is not None
        restarts = {c.id: c.restart_count for c in await Supervisor.which_children(sup)}
    errors = sorted(i for i, a in answers.items() if "error" in a)
    print(f"answered {len(answers)}/{len(requests)} requests; errors for {errors}")
    print(f"restarts: {restarts}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The seed's AI service manager on corral.")
    parser.add_argument("--quick", action="store_true", help="8 requests, not 36")
    args = parser.parse_args(argv)
    return asyncio.run(run(1 if args.quick else 5))


if __name__ == "__main__":
    sys.exit(main())
