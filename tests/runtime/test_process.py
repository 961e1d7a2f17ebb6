"""Processes: hooks, call/cast/send, timeouts, mailboxes, names."""

from __future__ import annotations

import asyncio
import weakref

import pytest
from runtime_helpers import Echo, Recorder, Sleeper

import corral
from corral import (
    Actor,
    AlreadyRegistered,
    CallTimeout,
    ExitReason,
    MailboxFull,
    Node,
    NoProcess,
    ProcessExited,
    StartError,
)
from corral.testing import Gate, wait_all_tasks_blocked


async def test_call_returns_what_handle_call_returned() -> None:
    async with Node() as node:
        pid = await node.spawn(Echo())
        assert await pid.call(("hello", 1)) == ("hello", 1)


async def test_async_hooks_are_awaited_and_sync_hooks_are_called() -> None:
    class Mixed(Actor):
        def __init__(self) -> None:
            self.seen: list[str] = []

        async def init(self) -> None:
            await asyncio.sleep(1)
            self.seen.append("init")

        async def handle_call(self, msg: object) -> object:
            await asyncio.sleep(1)
            return [*self.seen, "call"]

        def handle_cast(self, msg: object) -> None:
            self.seen.append("cast")

    async with Node() as node:
        pid = await node.spawn(Mixed())
        pid.cast("x")
        assert await pid.call("what") == ["init", "cast", "call"]


async def test_messages_are_handled_one_at_a_time_in_arrival_order() -> None:
    actor = Echo()
    async with Node() as node:
        pid = await node.spawn(actor)
        pid.cast(1)
        pid.send("info")
        pid.cast(2)
        await pid.call("sync")
        assert actor.casts == [1, 2]
        assert actor.infos == ["info"]


async def test_spawn_waits_for_init_before_returning() -> None:
    class SlowInit(Actor):
        ready = False

        async def init(self) -> None:
            await asyncio.sleep(3)
            self.ready = True

    actor = SlowInit()
    async with Node() as node:
        loop = asyncio.get_running_loop()
        await node.spawn(actor)
        assert actor.ready
        assert loop.time() == 3.0


async def test_spawn_raises_start_error_when_init_raises_and_frees_the_name() -> None:
    class Broken(Actor):
        def init(self) -> None:
            raise ValueError("no model file")

    async with Node() as node:
        with pytest.raises(StartError) as info:
            await node.spawn(Broken(), name="model")
        assert isinstance(info.value.reason, ValueError)
        assert str(info.value).endswith("init failed with ValueError('no model file')")
        assert node.whereis("model") is None
        await node.spawn(Echo(), name="model")


async def test_call_to_a_dead_process_fails_at_once_with_no_process() -> None:
    async with Node() as node:
        pid = await node.spawn(Recorder("a", []))
        await pid.call(("stop", "normal"))
        await pid.wait_exit()
        with pytest.raises(NoProcess) as info:
            await pid.call("anything")
        assert str(info.value) == (
            f"call to process {pid}: the process is not alive (exited with normal)"
        )


async def test_cast_and_send_to_a_dead_process_raise_no_process() -> None:
    async with Node() as node:
        pid = await node.spawn(Echo())
        pid.exit("kill")
        await pid.wait_exit()
        with pytest.raises(NoProcess, match=r"^cast to process"):
            pid.cast(1)
        with pytest.raises(NoProcess, match=r"^send to process"):
            pid.send(1)


async def test_lookup_of_an_unknown_name_raises_no_process_naming_it() -> None:
    async with Node() as node:
        with pytest.raises(NoProcess) as info:
            node.lookup("ranker")
        assert (
            str(info.value)
            == "lookup to process 'ranker': no process is registered under that name"
        )


async def test_call_times_out_at_exactly_its_timeout() -> None:
    async with Node() as node:
        pid = await node.spawn(Sleeper())
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(CallTimeout) as info:
            await pid.call("slow", timeout=2.5)
        assert loop.time() - start == 2.5
        assert isinstance(info.value, TimeoutError)
        assert str(info.value).startswith(f"call to process {pid}: no reply within 2.5 s")


async def test_call_timeout_defaults_to_five_seconds() -> None:
    async with Node() as node:
        pid = await node.spawn(Sleeper())
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(CallTimeout):
            await pid.call("slow")
        assert loop.time() - start == corral.runtime.DEFAULT_CALL_TIMEOUT == 5.0


async def test_calls_with_different_timeouts_each_expire_on_time() -> None:
    async with Node() as node:
        pid = await node.spawn(Sleeper())
        loop = asyncio.get_running_loop()
        expired: dict[float, float] = {}

        async def one(timeout: float) -> None:
            with pytest.raises(CallTimeout):
                await pid.call(timeout, timeout=timeout)
            expired[timeout] = loop.time()

        async with asyncio.TaskGroup() as tg:
            for timeout in (7.0, 1.0, 3.0):
                tg.create_task(one(timeout))
        assert expired == {1.0: 1.0, 3.0: 3.0, 7.0: 7.0}


async def test_a_call_that_timed_out_before_pickup_is_dropped_unhandled() -> None:
    sleeper = Sleeper()
    async with Node() as node:
        pid = await node.spawn(sleeper)
        first = asyncio.ensure_future(pid.call("first", timeout=None))
        await wait_all_tasks_blocked()
        with pytest.raises(CallTimeout):
            await pid.call("second", timeout=1.0)
        sleeper.release.set()
        assert await first == "first"
        assert await pid.call("third") == "third"
        assert sleeper.handled == ["first", "third"]


async def test_a_reply_after_the_callers_timeout_never_reaches_its_mailbox() -> None:
    gate = Gate()

    class Slow(Actor):
        async def handle_call(self, msg: object) -> object:
            await gate.enter()
            return "late reply"

    class Client(Actor):
        def __init__(self, server: corral.Pid) -> None:
            self.server = server
            self.infos: list[object] = []

        async def handle_call(self, msg: object) -> object:
            try:
                await self.server.call("work", timeout=1.0)
            except CallTimeout:
                return "timed out"
            return "replied"

        def handle_info(self, msg: object) -> None:
            self.infos.append(msg)

    async with Node() as node:
        server = await node.spawn(Slow())
        client_actor = Client(server)
        client = await node.spawn(client_actor)
        assert await client.call("go") == "timed out"
        gate.release()
        await wait_all_tasks_blocked()
        assert await client.call("go2", timeout=None) == "timed out"
        gate.open()
        await wait_all_tasks_blocked()
        assert client_actor.infos == []
        assert client.mailbox_length == 0


async def test_pending_calls_fail_with_process_exited_when_the_process_crashes() -> None:
    class Crasher(Actor):
        async def handle_call(self, msg: object) -> object:
            await asyncio.sleep(1)
            raise RuntimeError("model diverged")

    async with Node() as node:
        pid = await node.spawn(Crasher())
        first = asyncio.ensure_future(pid.call(1))
        second = asyncio.ensure_future(pid.call(2))
        results = await asyncio.gather(first, second, return_exceptions=True)
        for result in results:
            assert isinstance(result, ProcessExited)
            assert isinstance(result.reason, RuntimeError)
            assert result.__cause__ is result.reason
        assert str(results[0]) == (
            f"call to process {pid}: the process exited with "
            "RuntimeError('model diverged') before it replied"
        )


async def test_an_exception_in_handle_cast_ends_the_process_with_it() -> None:
    async with Node() as node:
        pid = await node.spawn(Recorder("a", []))
        pid.cast(("crash", "bad input"))
        reason = await pid.wait_exit()
        assert isinstance(reason, RuntimeError)
        assert str(reason) == "bad input"
        assert not pid.alive
        assert pid.exit_reason is reason


async def test_a_full_mailbox_raises_mailbox_full_and_loses_nothing_accepted() -> None:
    actor = Echo()
    gate = Gate()

    class Held(Echo):
        async def init(self) -> None:
            pass

        async def handle_cast(self, msg: object) -> None:  # type: ignore[override]
            await gate.enter()
            actor.casts.append(msg)

    async with Node() as node:
        pid = await node.spawn(Held(), mailbox_size=3)
        pid.cast(0)
        await gate.wait_blocked()
        for i in (1, 2, 3):
            pid.cast(i)
        # 0 is being handled; 1, 2, 3 fill the mailbox.
        with pytest.raises(MailboxFull) as info:
            pid.cast(4)
        assert str(info.value) == (
            f"send to process {pid}: the mailbox is full (3 messages queued, mailbox_size=3); "
            "the process is slower than its senders"
        )
        with pytest.raises(MailboxFull):
            await pid.call("x")
        assert isinstance(info.value, corral.Overloaded)
        gate.open()
        await wait_all_tasks_blocked()
        assert actor.casts == [0, 1, 2, 3]


async def test_system_messages_are_not_refused_by_a_full_mailbox() -> None:
    gate = Gate()

    class Watcher(Actor):
        mailbox_size = 1

        def __init__(self) -> None:
            self.infos: list[object] = []

        async def handle_cast(self, msg: object) -> None:
            if msg == "watch":
                return
            await gate.enter()

        def handle_info(self, msg: object) -> None:
            self.infos.append(msg)

    watcher_actor = Watcher()
    async with Node() as node:
        watcher = await node.spawn(watcher_actor)
        target = await node.spawn(Echo())

        ref = watcher_actor.monitor(target)
        watcher.cast("hold")
        await gate.wait_blocked()
        watcher.cast("fill")
        target.exit("kill")
        await wait_all_tasks_blocked()
        gate.open()
        await wait_all_tasks_blocked()
        assert watcher_actor.infos == [corral.Down(ref, target, "killed")]


async def test_a_process_cannot_call_itself() -> None:
    class Selfish(Actor):
        async def handle_call(self, msg: object) -> object:
            try:
                await self.pid.call("again")
            except RuntimeError as exc:
                return str(exc)
            return "called"

    async with Node() as node:
        pid = await node.spawn(Selfish())
        assert await pid.call("go") == f"call to process {pid}: a process cannot call itself"


async def test_stop_replies_first_then_runs_terminate_with_the_reason() -> None:
    log: list[tuple[str, str]] = []
    reasons: list[ExitReason] = []

    class Stopper(Recorder):
        def terminate(self, reason: ExitReason) -> None:
            reasons.append(reason)

    async with Node() as node:
        pid = await node.spawn(Stopper("a", log))
        assert await pid.call(("stop", "done")) == "stopping"
        assert await pid.wait_exit() == "done"
        assert reasons == ["done"]


async def test_terminate_is_not_run_when_the_process_is_killed() -> None:
    log: list[tuple[str, str]] = []
    async with Node() as node:
        pid = await node.spawn(Recorder("a", log))
        pid.exit("kill")
        assert await pid.wait_exit() == "killed"
        assert log == [("start", "a")]


async def test_terminate_runs_after_a_crash_with_the_exception() -> None:
    reasons: list[ExitReason] = []

    class Crashy(Recorder):
        def terminate(self, reason: ExitReason) -> None:
            reasons.append(reason)

    async with Node() as node:
        pid = await node.spawn(Crashy("a", []))
        with pytest.raises(ProcessExited):
            await pid.call(("crash", "oops"))
        await pid.wait_exit()
        assert len(reasons) == 1
        assert isinstance(reasons[0], RuntimeError)


async def test_a_deferred_reply_reaches_the_caller_later() -> None:
    class Batcher(Actor):
        def __init__(self) -> None:
            self.waiting: list[tuple[corral.Caller, object]] = []

        def handle_call(self, msg: object) -> object:
            if msg == "flush":
                for caller, item in self.waiting:
                    caller.reply(("done", item))
                self.waiting.clear()
                return "flushed"
            self.waiting.append((self.defer_reply(), msg))
            return "ignored"

    async with Node() as node:
        pid = await node.spawn(Batcher())
        a = asyncio.ensure_future(pid.call("a"))
        b = asyncio.ensure_future(pid.call("b"))
        await wait_all_tasks_blocked()
        assert not a.done()
        assert await pid.call("flush") == "flushed"
        assert await a == ("done", "a")
        assert await b == ("done", "b")


async def test_a_deferred_call_fails_with_process_exited_if_the_process_ends() -> None:
    class Forgetful(Actor):
        def handle_call(self, msg: object) -> object:
            if msg == "die":
                self.stop("shutdown")
                return None
            self.defer_reply()
            return None

    async with Node() as node:
        pid = await node.spawn(Forgetful())
        pending = asyncio.ensure_future(pid.call("later"))
        await wait_all_tasks_blocked()
        await pid.call("die")
        with pytest.raises(ProcessExited) as info:
            await pending
        assert info.value.reason == "shutdown"


async def test_a_name_is_freed_when_its_process_exits() -> None:
    async with Node() as node:
        pid = await node.spawn(Echo(), name="echo")
        assert node.whereis("echo") is pid
        assert node.registered() == ["echo"]
        pid.exit("kill")
        await pid.wait_exit()
        assert node.whereis("echo") is None
        second = await node.spawn(Echo(), name="echo")
        assert node.lookup("echo") is second


async def test_spawning_under_a_taken_name_raises_already_registered() -> None:
    async with Node() as node:
        first = await node.spawn(Echo(), name="echo")
        with pytest.raises(AlreadyRegistered) as info:
            await node.spawn(Echo(), name="echo")
        assert info.value.pid is first
        assert str(info.value) == (
            f"register name 'echo': the name is taken by live process {first}; "
            "names are freed when their process exits"
        )


async def test_an_actor_instance_cannot_be_spawned_twice() -> None:
    actor = Echo()
    async with Node() as node:
        await node.spawn(actor)
        with pytest.raises(ValueError, match="already ran as process"):
            await node.spawn(actor)


async def test_spawn_rejects_bad_arguments_with_the_rule() -> None:
    async with Node() as node:
        with pytest.raises(TypeError, match="actor must be an Actor instance; got"):
            await node.spawn(Echo)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="mailbox_size must be an int >= 1; got 0"):
            await node.spawn(Echo(), mailbox_size=0)
        with pytest.raises(RuntimeError, match="only a process can link"):
            await node.spawn(Echo(), link=True)


async def test_a_busy_process_yields_to_others_between_message_runs() -> None:
    order: list[str] = []

    class Tagger(Actor):
        def __init__(self, tag: str) -> None:
            self.tag = tag

        def handle_cast(self, msg: object) -> None:
            order.append(self.tag)

    async with Node() as node:
        a = await node.spawn(Tagger("a"))
        b = await node.spawn(Tagger("b"))
        for _ in range(300):
            a.cast(None)
            b.cast(None)
        await wait_all_tasks_blocked()
        assert order.count("a") == order.count("b") == 300
        # Each process handles at most FAIRNESS_BUDGET messages before the other runs.
        first_b = order.index("b")
        assert first_b <= corral.runtime.process.FAIRNESS_BUDGET


async def test_an_idle_process_does_not_keep_its_last_message_alive() -> None:
    class Payload:
        pass

    class Sink(Actor):
        def handle_cast(self, msg: object) -> None:
            pass

    async with Node() as node:
        pid = await node.spawn(Sink())
        payload = Payload()
        ref = weakref.ref(payload)
        pid.cast(payload)
        del payload
        await wait_all_tasks_blocked()
        assert pid.mailbox_length == 0
        assert ref() is None
