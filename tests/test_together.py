"""A step's store calls run as one (bot/together.py): each result or exception in order, one
after another or at once; a step cut off part way leaves no call unawaited."""

from __future__ import annotations

import asyncio
import inspect

import pytest

from bot.together import together


async def _value(value: int, log: list[str]) -> int:
    log.append(f"start {value}")
    await asyncio.sleep(0)
    log.append(f"end {value}")
    return value


async def _fail(log: list[str]) -> int:
    log.append("fail")
    raise ValueError("refused")


@pytest.mark.parametrize("at_once", [False, True])
async def test_every_call_runs_and_each_result_or_error_comes_back_in_order(at_once: bool) -> None:
    log: list[str] = []
    a, b, c = await together(at_once, _value(1, log), _fail(log), _value(3, log))
    assert a == 1
    assert isinstance(b, ValueError)
    assert c == 3
    if at_once:
        assert log.index("start 3") < log.index("end 1")  # side by side
    else:
        assert log == ["start 1", "end 1", "fail", "start 3", "end 3"]  # one after another


async def test_a_step_cut_off_part_way_leaves_no_call_unawaited() -> None:
    log: list[str] = []
    began, never = asyncio.Event(), asyncio.Event()

    async def waits() -> int:
        log.append("waiting")
        began.set()
        await never.wait()
        return 0

    second = _value(2, log)
    step = asyncio.create_task(together(False, waits(), second))
    await began.wait()
    step.cancel()
    with pytest.raises(asyncio.CancelledError):
        await step
    assert log == ["waiting"]  # the second call never began ...
    # ... and was closed, not left to warn "never awaited" whenever it is collected.
    assert inspect.getcoroutinestate(second) == inspect.CORO_CLOSED
