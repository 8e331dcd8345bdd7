"""Execution engine: errors, timeouts and deadlines, retries, compensation, cancellation, hooks."""

from __future__ import annotations

import asyncio
import builtins
import math
import threading
from typing import Any

import pytest
from pydantic import BaseModel

import jido._exec as exec_mod
from jido import (
    Action,
    ActionContext,
    CancelledError,
    CompensationError,
    DefinitionError,
    ExecutionError,
    JidoError,
    TimeoutError,
    ValidationError,
    check_cancelled,
    execute,
    run_action,
)


class Boom(Action):
    """Always fails."""

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        raise ZeroDivisionError("nope")


class Forever(Action):
    """Never returns."""

    timeout = 0.05

    async def run(self, params: Any, ctx: ActionContext) -> Any:
        await asyncio.Event().wait()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record backoff delays instead of sleeping."""
    recorded: list[float] = []

    async def fake_sleep(delay: float) -> None:
        recorded.append(delay)

    monkeypatch.setattr(exec_mod, "_sleep", fake_sleep)
    return recorded


async def test_exception_in_run_becomes_execution_error() -> None:
    with pytest.raises(ExecutionError) as info:
        await execute(Boom)
    err = info.value
    assert err.retryable is False
    assert err.details["exception"] == "ZeroDivisionError"
    assert err.details["action"] == "boom"
    assert isinstance(err.__cause__, ZeroDivisionError)
    assert "nope" in err.message


async def test_invalid_params_detail_each_field() -> None:
    class Typed(Action):
        class Params(BaseModel):
            n: int
            s: str

        async def run(self, params: Any, ctx: ActionContext) -> Any:
            return None

    with pytest.raises(ValidationError) as info:
        await execute(Typed, {"n": "x"})
    errors = {tuple(e["loc"]): e for e in info.value.details["errors"]}
    assert errors[("n",)]["type"] == "int_parsing"
    assert errors[("n",)]["input_type"] == "str"
    assert errors[("s",)]["type"] == "missing"
    assert info.value.to_dict()["type"] == "validation_error"
    with pytest.raises(ValidationError, match="must be a dict"):
        await execute(Typed, [1, 2])  # type: ignore[arg-type]


async def test_not_an_action_is_a_definition_error() -> None:
    with pytest.raises(DefinitionError):
        await execute(int)  # type: ignore[arg-type]
    with pytest.raises(DefinitionError):
        await execute("deposit")  # type: ignore[arg-type]


async def test_run_that_never_returns_times_out() -> None:
    with pytest.raises(TimeoutError) as info:
        await execute(Forever)
    assert info.value.details["timeout"] == 0.05
    assert info.value.retryable is True
    assert isinstance(info.value, builtins.TimeoutError)
    # the loop is fine afterwards and the current task carries no stray cancellation
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0)


async def test_per_call_timeout_overrides_class_default() -> None:
    class Slowish(Action):
        timeout = None

        async def run(self, params: Any, ctx: ActionContext) -> Any:
            await asyncio.Event().wait()

    with pytest.raises(TimeoutError):
        await execute(Slowish, timeout=0.02)
    started = asyncio.Event()

    class Quick(Action):
        timeout = 0.001

        async def run(self, params: Any, ctx: ActionContext) -> Any:
            started.set()
            return {"ok": True}

    assert (await execute(Quick, timeout=math.inf)).result == {"ok": True}


async def test_nested_calls_get_only_the_remaining_deadline() -> None:
    seen: dict[str, float | None] = {}

    class Inner(Action):
        timeout = 1000.0

        async def run(self, params: Any, ctx: ActionContext) -> Any:
            seen["inner"] = ctx.deadline
            await asyncio.Event().wait()

    class Outer(Action):
        timeout = 0.05

        async def run(self, params: Any, ctx: ActionContext) -> Any:
            seen["outer"] = ctx.deadline
            return await run_action(Inner, {}, ctx)

    loop = asyncio.get_running_loop()
    with pytest.raises(TimeoutError) as info:
        await execute(Outer)
    # the inner action (own timeout 1000 s) was held to the outer action's deadline
    assert seen["outer"] is not None and seen["inner"] == seen["outer"]
    # the outer action's own timeout expired: it is the one reported
    assert info.value.details["action"] == "outer"
    assert info.value.details["deadline_from_context"] is False
    # a deadline handed in by the caller is reported as such
    with pytest.raises(TimeoutError) as info:
        await execute(Inner, {}, ActionContext(deadline=loop.time() + 0.02))
    assert info.value.details["deadline_from_context"] is True
    assert "deadline" in info.value.message


async def test_context_deadline_already_passed() -> None:
    loop = asyncio.get_running_loop()

    class Fine(Action):
        async def run(self, params: Any, ctx: ActionContext) -> Any:
            return {}

    with pytest.raises(TimeoutError, match="deadline"):
        await execute(Fine, {}, ActionContext(deadline=loop.time() - 1))


async def test_caller_context_not_mutated() -> None:
    class Peek(Action):
        timeout = 5.0

        async def run(self, params: Any, ctx: ActionContext) -> Any:
            return {"deadline": ctx.deadline}

    ctx = ActionContext(agent_id="a", metadata={"k": 1})
    out = await run_action(Peek, {}, ctx)
    assert out["deadline"] is not None
    assert ctx.deadline is None


async def test_retries_only_retryable_errors_with_growing_jittered_backoff(
    sleeps: list[float],
) -> None:
    calls: list[int] = []

    class Flaky(Action):
        max_retries = 4
        backoff_base = 0.1
        backoff_max = 10.0
        retry_on = (ConnectionError,)

        async def run(self, params: Any, ctx: ActionContext) -> Any:
            calls.append(1)
            if len(calls) < 4:
                raise ConnectionError("reset")
            return {"ok": True}

    out = await execute(Flaky)
    assert out.result == {"ok": True}
    assert out.attempts == 4
    assert len(sleeps) == 3
    for n, delay in enumerate(sleeps):
        ceiling = 0.1 * 2**n
        assert ceiling / 2 <= delay <= ceiling

    calls.clear()
    sleeps.clear()
    with pytest.raises(ExecutionError) as info:
        await execute(Boom, max_retries=5)  # ZeroDivisionError: not retryable
    assert sleeps == []
    assert info.value.details["attempts"] == 1


async def test_retries_exhausted_reports_attempts(sleeps: list[float]) -> None:
    class Always(Action):
        async def run(self, params: Any, ctx: ActionContext) -> Any:
            raise ExecutionError("busy", retryable=True)

    with pytest.raises(ExecutionError) as info:
        await execute(Always, max_retries=2)
    assert info.value.details["attempts"] == 3
    assert len(sleeps) == 2


async def test_backoff_is_capped(sleeps: list[float]) -> None:
    class Capped(Action):
        backoff_base = 1.0
        backoff_max = 2.0

        async def run(self, params: Any, ctx: ActionContext) -> Any:
            raise ExecutionError("busy", retryable=True)

    with pytest.raises(ExecutionError):
        await execute(Capped, max_retries=5)
    assert all(d <= 2.0 for d in sleeps)


async def test_timeouts_are_retried_when_asked() -> None:
    attempts: list[int] = []

    class SlowThenFast(Action):
        timeout = 0.02
        max_retries = 2
        backoff_base = 0.001

        async def run(self, params: Any, ctx: ActionContext) -> Any:
            attempts.append(1)
            if len(attempts) == 1:
                await asyncio.Event().wait()
            return {"n": len(attempts)}

    out = await execute(SlowThenFast)
    assert out.result == {"n": 2}


async def test_no_retry_past_the_context_deadline(sleeps: list[float]) -> None:
    class Busy(Action):
        backoff_base = 5.0

        async def run(self, params: Any, ctx: ActionContext) -> Any:
            raise ExecutionError("busy", retryable=True)

    loop = asyncio.get_running_loop()
    with pytest.raises(ExecutionError) as info:
        await execute(Busy, {}, ActionContext(deadline=loop.time() + 1.0), max_retries=3)
    assert sleeps == []
    assert "deadline" in info.value.details["retry_stopped"]


async def test_compensation_gets_the_original_error() -> None:
    got: list[JidoError] = []

    class Transfer(Action):
        async def run(self, params: Any, ctx: ActionContext) -> Any:
            raise ValueError("bank down")

        async def compensate(self, params: Any, error: JidoError, ctx: ActionContext) -> Any:
            got.append(error)
            return {"refunded": True}

    with pytest.raises(ExecutionError) as info:
        await execute(Transfer)
    assert got and got[0] is info.value
    assert info.value.details["compensation"] == {
        "compensated": True,
        "result": {"refunded": True},
    }


async def test_compensation_failure_carries_both_errors() -> None:
    class Transfer(Action):
        async def run(self, params: Any, ctx: ActionContext) -> Any:
            raise ValueError("bank down")

        def compensate(self, params: Any, error: JidoError, ctx: ActionContext) -> Any:
            raise RuntimeError("refund failed")

    with pytest.raises(CompensationError) as info:
        await execute(Transfer)
    err = info.value
    assert err.details["original"]["type"] == "execution_error"
    assert "bank down" in err.details["original"]["message"]
    assert err.details["compensation_error"]["message"] == "refund failed"
    assert isinstance(err.__cause__, ExecutionError)
    assert JidoError.from_dict(err.to_dict()).type == "compensation_error"


async def test_compensation_runs_once_after_final_failure(sleeps: list[float]) -> None:
    comp: list[int] = []

    class Flaky(Action):
        max_retries = 2

        async def run(self, params: Any, ctx: ActionContext) -> Any:
            raise ExecutionError("temporary", retryable=True)

        async def compensate(self, params: Any, error: JidoError, ctx: ActionContext) -> Any:
            comp.append(1)

    with pytest.raises(ExecutionError):
        await execute(Flaky)
    assert comp == [1]
    assert len(sleeps) == 2


async def test_cancelling_the_caller_really_stops_the_work() -> None:
    started = asyncio.Event()
    stopped = asyncio.Event()
    finished: list[bool] = []

    class Long(Action):
        timeout = None

        async def run(self, params: Any, ctx: ActionContext) -> Any:
            started.set()
            try:
                await asyncio.Event().wait()
                finished.append(True)
            finally:
                stopped.set()

    task = asyncio.create_task(run_action(Long))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stopped.is_set()
    assert finished == []


async def test_cancelling_the_caller_with_a_deadline_propagates_cancel_not_timeout() -> None:
    started = asyncio.Event()

    class Long(Action):
        timeout = 100.0

        async def run(self, params: Any, ctx: ActionContext) -> Any:
            started.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(run_action(Long))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_internal_cancellation_becomes_typed_error() -> None:
    class SelfCancel(Action):
        async def run(self, params: Any, ctx: ActionContext) -> Any:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            fut.cancel()
            await fut

    with pytest.raises(CancelledError):
        await execute(SelfCancel)


async def test_sync_run_timeout_signals_the_worker_thread() -> None:
    entered = threading.Event()
    release = threading.Event()
    saw_cancel = threading.Event()

    class Blocking(Action):
        timeout = 0.05

        def run(self, params: Any, ctx: ActionContext) -> Any:
            entered.set()
            release.wait(5)
            try:
                check_cancelled()
            except CancelledError:
                saw_cancel.set()
                raise
            return {}

    with pytest.raises(TimeoutError):
        await execute(Blocking)
    assert entered.is_set()
    release.set()
    await asyncio.to_thread(saw_cancel.wait, 5)
    assert saw_cancel.is_set()
    check_cancelled()  # outside a worker thread: no effect


async def test_each_hook_is_invoked() -> None:
    calls: list[str] = []

    class Hooked(Action):
        class Params(BaseModel):
            n: int

        def before_validate(self, params: dict[str, Any], ctx: ActionContext) -> Any:
            calls.append("before_validate")
            return {**params, "n": int(params["n"]) + 1}

        async def after_validate(self, params: Any, ctx: ActionContext) -> Any:
            calls.append("after_validate")
            return type(params)(n=params.n * 10)

        async def run(self, params: Any, ctx: ActionContext) -> Any:
            calls.append("run")
            if params.n > 100:
                raise ValueError("too big")
            return {"n": params.n}

        def after_run(self, result: dict[str, Any], ctx: ActionContext) -> Any:
            calls.append("after_run")
            return {**result, "checked": True}

        async def on_error(self, error: JidoError, ctx: ActionContext) -> Any:
            calls.append(f"on_error:{error.type}")

    assert await run_action(Hooked, {"n": 1}) == {"n": 20, "checked": True}
    assert calls == ["before_validate", "after_validate", "run", "after_run"]
    calls.clear()
    with pytest.raises(ExecutionError):
        await run_action(Hooked, {"n": 50})
    assert calls == ["before_validate", "after_validate", "run", "on_error:execution_error"]
    calls.clear()
    with pytest.raises(ExecutionError, match="before_validate") as info:
        await run_action(Hooked, {"n": "x1"})  # the hook itself raises ValueError
    assert info.value.details["hook"] == "before_validate"
    assert calls == ["before_validate", "on_error:execution_error"]
    calls.clear()
    with pytest.raises(ValidationError):
        await run_action(Hooked, {"n": 1, "zzz": 0})
    assert calls == ["before_validate", "on_error:validation_error"]


async def test_failing_on_error_hook_does_not_hide_the_error() -> None:
    class Noisy(Action):
        async def run(self, params: Any, ctx: ActionContext) -> Any:
            raise ValueError("real problem")

        def on_error(self, error: JidoError, ctx: ActionContext) -> Any:
            raise RuntimeError("hook broke")

    with pytest.raises(ExecutionError, match="real problem") as info:
        await execute(Noisy)
    assert "hook broke" in info.value.details["on_error_failed"]


async def test_on_error_sees_validation_errors_and_each_failed_attempt(
    sleeps: list[float],
) -> None:
    seen: list[str] = []

    class Watch(Action):
        class Params(BaseModel):
            n: int

        async def run(self, params: Any, ctx: ActionContext) -> Any:
            raise ExecutionError("again", retryable=True)

        def on_error(self, error: JidoError, ctx: ActionContext) -> Any:
            seen.append(error.type)

    with pytest.raises(ValidationError):
        await execute(Watch, {"n": "x"})
    assert seen == ["validation_error"]
    seen.clear()
    with pytest.raises(ExecutionError):
        await execute(Watch, {"n": 1}, max_retries=2)
    assert seen == ["execution_error"] * 3


async def test_bad_hook_return_is_a_definition_error() -> None:
    class BadAfterRun(Action):
        async def run(self, params: Any, ctx: ActionContext) -> Any:
            return {}

        def after_run(self, result: dict[str, Any], ctx: ActionContext) -> Any:
            return 5

    with pytest.raises(DefinitionError, match="after_run"):
        await execute(BadAfterRun)


async def test_errors_never_escape_untyped_and_loop_survives() -> None:
    class Weird(Action):
        async def run(self, params: Any, ctx: ActionContext) -> Any:
            raise KeyError("k")

    results = await asyncio.gather(
        execute(Weird), execute(Boom), execute(Forever), return_exceptions=True
    )
    assert all(isinstance(r, JidoError) for r in results)


async def test_suspending_runs_get_values_and_exceptions_delivered() -> None:
    """A run that suspends (so the deadline timer is armed) sees results and errors intact."""

    class Juggle(Action):
        timeout = 5.0

        async def run(self, params: Any, ctx: ActionContext) -> Any:
            loop = asyncio.get_running_loop()
            f1: asyncio.Future[int] = loop.create_future()
            loop.call_soon(f1.set_exception, KeyError("k"))
            try:
                await f1
                caught = False
            except KeyError:
                caught = True
            f2: asyncio.Future[int] = loop.create_future()
            loop.call_soon(f2.set_result, 5)
            value = await f2
            await asyncio.sleep(0)
            return {"caught": caught, "value": value}

    for _ in range(3):
        assert await run_action(Juggle) == {"caught": True, "value": 5}
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_run_that_swallows_the_timeout_cancel_still_returns() -> None:
    class Stubborn(Action):
        timeout = 0.02

        async def run(self, params: Any, ctx: ActionContext) -> Any:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                return {"swallowed": True}

    assert await run_action(Stubborn) == {"swallowed": True}
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
