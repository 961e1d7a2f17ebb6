"""Small actors shared by the runtime tests."""

from __future__ import annotations

import asyncio

from corral import Actor, ExitReason


class Echo(Actor):
    """Replies with what it is sent; records casts and infos."""

    def __init__(self) -> None:
        self.casts: list[object] = []
        self.infos: list[object] = []

    def handle_call(self, msg: object) -> object:
        return msg

    def handle_cast(self, msg: object) -> None:
        self.casts.append(msg)

    def handle_info(self, msg: object) -> None:
        self.infos.append(msg)


class Recorder(Actor):
    """Logs init/terminate to a shared list; obeys commands sent by call or cast."""

    def __init__(self, tag: str, log: list[tuple[str, str]], *, trap: bool = False) -> None:
        self.tag = tag
        self.log = log
        self.trap = trap
        self.infos: list[object] = []

    def init(self) -> None:
        self.trap_exit = self.trap
        self.log.append(("start", self.tag))

    def handle_call(self, msg: object) -> object:
        match msg:
            case ("crash", str(text)):
                raise RuntimeError(text)
            case ("stop", reason):
                self.stop(reason)  # type: ignore[arg-type]
                return "stopping"
            case "infos":
                return list(self.infos)
        return msg

    def handle_cast(self, msg: object) -> None:
        match msg:
            case ("crash", str(text)):
                raise RuntimeError(text)
            case ("stop", reason):
                self.stop(reason)  # type: ignore[arg-type]

    def handle_info(self, msg: object) -> None:
        self.infos.append(msg)

    def terminate(self, reason: ExitReason) -> None:
        self.log.append(("stop", self.tag))


class Sleeper(Actor):
    """handle_call waits on the given event (virtual time makes long waits instant)."""

    def __init__(self, release: asyncio.Event | None = None) -> None:
        self.release = release or asyncio.Event()
        self.handled: list[object] = []

    async def handle_call(self, msg: object) -> object:
        self.handled.append(msg)
        await self.release.wait()
        return msg
