"""Faust's recovery, with streaming/seekfirst.py, seeks before it resumes the partitions.

Runs the installed Faust's own ``Recovery.on_recovery_completed`` on a
stand-in recovery service that records the calls: if a Faust upgrade
changes that method, this says so before a scale-out loses records.
"""

import asyncio
import types
from typing import Any

from faust.tables.recovery import Recovery

from driftline.streaming.seekfirst import seek_before_resume


def recovery_stand_in(calls: list[str], assignment: set[str]) -> Any:
    async def send() -> None:
        calls.append("rebalance_complete")

    async def perform_seek() -> None:
        await asyncio.sleep(0.01)  # the window Faust's own order left open
        calls.append("seek")

    async def maybe_start() -> None:
        calls.append("fetcher")

    async def wait(coro: Any, timeout: Any = None) -> None:
        await coro

    consumer = types.SimpleNamespace(
        assignment=lambda: assignment,
        resume_partitions=lambda tps: calls.append(f"resume_partitions {sorted(tps)}"),
        perform_seek=perform_seek,
        resume_flow=lambda: calls.append("resume_flow"),
    )
    app = types.SimpleNamespace(
        consumer=consumer,
        on_rebalance_complete=types.SimpleNamespace(send=send),
        consumer_generation_id=7,
        conf=types.SimpleNamespace(broker_request_timeout=1.0),
        flow_control=types.SimpleNamespace(resume=lambda: calls.append("flow_resume")),
        _fetcher=types.SimpleNamespace(maybe_start=maybe_start),
        assignor=types.SimpleNamespace(assigned_standbys=lambda: set()),
        on_rebalance_end=lambda: calls.append("rebalance_end"),
    )
    log = types.SimpleNamespace(info=lambda *a: None, warning=lambda *a: None, dev=lambda *a: None)
    return types.SimpleNamespace(
        app=app,
        log=log,
        _set_recovery_ended=lambda: None,
        tables=types.SimpleNamespace(
            values=lambda: [], on_actives_ready=lambda: None, on_standbys_ready=lambda: None
        ),
        actives_for_table={},
        standbys_for_table={},
        _is_changelog_tp=lambda tp: tp.endswith("changelog"),
        _wait=wait,
        completed=types.SimpleNamespace(set=lambda: calls.append("completed")),
    )


def test_partitions_resume_only_after_the_seek_and_the_queue_clearing():
    seek_before_resume()
    calls: list[str] = []
    rec = recovery_stand_in(calls, {"predictions-0", "join-changelog"})
    asyncio.run(Recovery.on_recovery_completed(rec, 7))
    order = [c for c in calls if c.split()[0] in ("seek", "flow_resume", "resume_partitions")]
    assert order == ["seek", "flow_resume", "resume_partitions ['predictions-0']"], calls
    # The stand-in's own methods are back as they were.
    assert "resume_partitions" in vars(rec.app.consumer) and "resume" in vars(rec.app.flow_control)


def test_another_rebalance_during_recovery_leaves_the_partitions_as_faust_would():
    seek_before_resume()
    seek_before_resume()  # idempotent
    calls: list[str] = []
    rec = recovery_stand_in(calls, {"predictions-0"})
    rec.app.consumer_generation_id = 8  # a newer generation: Faust stops early
    asyncio.run(Recovery.on_recovery_completed(rec, 7))
    assert "seek" not in calls and not any(c.startswith("resume_partitions") for c in calls)
