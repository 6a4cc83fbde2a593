"""Seek the stream partitions to their committed offsets before resuming them.

After a rebalance, Faust 0.15 (``Recovery.on_recovery_completed``) resumes
the stream partitions, then seeks them to their committed offsets, then
resumes flow control, which empties every agent's queue. In between, the
fetcher can hand the agents records from where it had got to before the
rebalance: the agents mark them read, the queue clearing drops some of
them unprocessed, and Faust records the jump as a gap that it treats as
acknowledged, so the commit moves past records no agent processed. The
records fetched again from the committed offset are then below the read
offset and dropped ("DROPPED MESSAGE ROFF"). Records read out of order this
way also reach the monitors below their high-water marks and are dropped
as already applied.

Found by ``scripts/scale_out.py``: now and then a handover lost a few
model events (every model a few predictions short, the lag still 0), and
a 0.5 s delay in the seek made it lose some every time; with this order
it was exact (``docs/reliability.md``, scale out and in).

The fix keeps Faust's own method and only reorders two calls inside it:
resuming the partitions waits until flow control has resumed (and emptied
the queues), which comes after the seek. So nothing of those partitions is
fetched before the seek, and nothing fetched after it is thrown away.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from faust.tables.recovery import Recovery

SEEK_DELAY_ENV = "DRIFTLINE_FAULT_SEEK_DELAY"
"""Fault injection for tests and harnesses: seconds to hold every such seek back.

It widens the window the reordering closes: with Faust's own order, a
0.5 s delay lost records at every handover tried.
"""


def seek_before_resume() -> None:
    """Make Faust resume stream partitions only after the seek (idempotent)."""
    original = Recovery.on_recovery_completed
    if getattr(original, "driftline_seek_first", False):
        return

    async def on_recovery_completed(self: Any, generation_id: int = 0) -> None:
        consumer = self.app.consumer
        flow = self.app.flow_control
        resume_partitions = consumer.resume_partitions
        resume_flow = flow.resume
        deferred: list[set[Any]] = []
        delay = float(os.environ.get(SEEK_DELAY_ENV) or 0)
        perform_seek = consumer.perform_seek

        async def delayed_seek() -> None:
            await asyncio.sleep(delay)
            await perform_seek()

        def defer(tps: Any) -> None:
            deferred.append(set(tps))

        def resume_flow_then_partitions() -> None:
            resume_flow()  # empties the agents' queues: none holds these partitions' records yet
            while deferred:
                resume_partitions(deferred.pop(0))

        undo = [
            _override(consumer, "resume_partitions", defer),
            _override(flow, "resume", resume_flow_then_partitions),
        ]
        if delay:
            undo.append(_override(consumer, "perform_seek", delayed_seek))
        try:
            await original(self, generation_id)
        finally:
            for restore in undo:
                restore()
            while deferred:  # it stopped early (another rebalance): as Faust would have left it
                resume_partitions(deferred.pop(0))

    on_recovery_completed.driftline_seek_first = True  # type: ignore[attr-defined]
    Recovery.on_recovery_completed = on_recovery_completed  # type: ignore[method-assign]


def _override(obj: Any, name: str, value: Any) -> Any:
    """Set ``obj.name`` to ``value``; return what puts it back as it was."""
    own = vars(obj)
    had, old = name in own, own.get(name)
    setattr(obj, name, value)

    def restore() -> None:
        if had:
            setattr(obj, name, old)
        else:
            delattr(obj, name)

    return restore
