"""Seed sketch 2, "Python integration through a port": the model runs in its own OS process
(examples/seed/ml_model.py), driven by a corral process that sends it data and awaits the
result, as Erlang's ``open_port`` and ``{Port, {data, Result}}`` do in the seed.

The port is an ordinary corral process under a supervisor. When its worker dies (here we
SIGKILL it, as an OOM killer or a segfault would), every pending call fails at once with
``PortExited``, the port process exits with that reason, and the supervisor starts a new
worker; the rest of the service never noticed.

The seed mentions NIFs as the faster, riskier alternative: native code inside the VM. corral's
counterpart is a *thread partition*: ``corral.serving.Serving(..., kind="thread")`` runs the
model in a thread of this process (numpy, torch and onnxruntime release the GIL), with no
copy over a pipe -- but a segfault there takes the whole service down. ``kind="port"`` is
this example's isolation. See docs/serving.md and docs/ports.md.

Run it::

    .venv/bin/python examples/seed/python_port.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

import numpy as np

from corral import ChildSpec, Node, PortExited, Supervisor
from corral.port import Port

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # to import the model's test data helper, as the worker does
from ml_model import blobs  # noqa: E402


def ml_model_port() -> Port:
    # cwd=HERE: `python -m corral.port` finds ml_model.py there. spares=1 keeps one warm
    # worker (model loaded) ready, so the restart below adopts it instead of starting cold.
    return Port("ml_model:NearestCentroid", args={"seed": 0}, cwd=str(HERE), spares=1)


async def predict(node: Node, x: np.ndarray) -> np.ndarray:
    """Send data to the model program by its registered name; await the result."""
    labels = await node.lookup("ml_model").call({"op": "predict", "x": x}, timeout=5.0)
    assert isinstance(labels, np.ndarray)
    return labels


async def run() -> int:
    x, y = blobs(50, seed=1)  # held-out points: new draws around the same centers
    spec = ChildSpec(id="ml_model", start=ml_model_port, name="ml_model")
    async with Node([spec]) as node:
        port = node.lookup("ml_model")
        info = await port.call({"op": "info"})
        assert isinstance(info, dict)
        before = await predict(node, x)
        print(f"worker os pid {info['os_pid']}: accuracy {np.mean(before == y):.3f} on {len(y)}")

        async def call_and_report(msg: dict[str, object]) -> str:
            try:
                return repr(await port.call(msg, timeout=60))
            except PortExited as exc:
                return f"PortExited: {exc}"

        async with asyncio.TaskGroup() as tg:
            slow = tg.create_task(call_and_report({"op": "sleep", "seconds": 30}))
            # Calls reach the worker in the order they are made, and its async handle_call
            # answers this one while the slow one sleeps: once it answers, the slow call is
            # in the worker. Then the worker is SIGKILLed, as an OOM killer would.
            await tg.create_task(port.call({"op": "info"}))
            os.kill(info["os_pid"], signal.SIGKILL)
        print(f"in-flight call failed at once: {slow.result()}")
        reason = await port.wait_exit()
        assert isinstance(reason, PortExited)
        print(f"port process exited: PortExited (signal {reason.signal})")

        # A call to the supervisor queues behind the crash notice: once it returns, the
        # restart is done.
        children = await Supervisor.which_children(node.root)
        print(f"supervisor restarted it: restart_count={children[0].restart_count}")
        new_info = await node.lookup("ml_model").call({"op": "info"})
        assert isinstance(new_info, dict)
        after = await predict(node, x)
        print(
            f"new worker os pid {new_info['os_pid']} (was {info['os_pid']}): "
            f"accuracy {np.mean(after == y):.3f}, same predictions: {bool(np.all(after == before))}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The seed's Python port on corral.")
    parser.add_argument("--quick", action="store_true", help="accepted for symmetry; fast anyway")
    parser.parse_args(argv)
    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
