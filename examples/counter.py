"""The README's first example: a supervised counter that crashes and comes back."""

import asyncio

from corral import Actor, ChildSpec, Node, Supervisor


class Counter(Actor):
    def __init__(self) -> None:
        self.n = 0

    def handle_call(self, msg: object) -> object:  # `await pid.call(msg)`; may be async
        return self.n

    def handle_cast(self, msg: object) -> None:  # `pid.cast(msg)`: no reply
        if msg == "boom":
            raise RuntimeError("let it crash")
        self.n += 1


async def main() -> None:
    async with Node([ChildSpec(id="counter", start=Counter, name="counter")]) as node:
        pid = node.lookup("counter")
        pid.cast("tick")
        print(await pid.call("get"))  # 1
        pid.cast("boom")  # the supervisor restarts it
        await pid.wait_exit()
        # A call to the supervisor queues behind the crash notice: once it returns,
        # the restart is done.
        await Supervisor.which_children(node.root)
        print(await node.lookup("counter").call("get"))  # 0: a fresh Counter


asyncio.run(main())
