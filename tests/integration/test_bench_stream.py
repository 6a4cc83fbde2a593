"""``driftline bench`` in stream mode, end to end on the real broker, at a tiny volume.

This checks that the command runs every phase and prints every figure, that
the worker under test joined every pre-produced pair (a bench that timed a
worker dropping pairs would print a meaningless rate), and that the run
leaves no topic behind. It does not check speed: the floors are for a full
run on a quiet machine.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys

import pytest
from aiokafka.admin import AIOKafkaAdminClient

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PAIRS = 500


def _run_bench(bootstrap: str, *args: str) -> subprocess.CompletedProcess[str]:
    # No DRIFTLINE_* from the developer's shell: the worker must run the defaults.
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    return subprocess.run(
        [sys.executable, "-m", "driftline.cli", "bench", "--broker", bootstrap, *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


async def _topics_with_prefix(bootstrap: str, prefix: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return [t for t in await admin.list_topics() if t.startswith(prefix)]
    finally:
        await admin.close()


def _row(table: str, label: str) -> list[str]:
    """The cells of the table row that starts with ``label``."""
    for line in table.splitlines():
        if line.startswith(label):
            return line[len(label) :].split()
    raise AssertionError(f"no row {label!r} in:\n{table}")


def test_bench_stream_tiny_run(kafka_bootstrap):
    proc = _run_bench(
        kafka_bootstrap,
        "--pairs",
        str(PAIRS),
        "--batch-sizes",
        "1,100",
        "--latency-rate",
        "200",
        "--latency-seconds",
        "3",
        "--partitions",
        "2",
    )
    out, err = proc.stdout, proc.stderr
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"
    assert "FAILED" not in out + err, f"{out}\n{err}"

    # One column per batch size, every figure present and numeric.
    assert re.search(r"^ +batch=1 +batch=100$", out, re.M), out
    assert _row(out, "input messages") == [f"{2 * PAIRS:,}", f"{2 * PAIRS // 100:,}"]
    for label in (
        "(a) raw aiokafka msgs/s",
        "(a) raw aiokafka records/s",
        "(b) bare Faust msgs/s",
        "(b) bare Faust records/s",
        "(c) worker pairs/s",
        "(c) worker records/s",
        "c/a (records/s)",
        "c/b (records/s)",
        "worker CPU-s",
        "worker peak RSS MB",
    ):
        cells = _row(out, label)
        assert len(cells) == 2 and all(re.fullmatch(r"[\d,]+(\.\d+)?", c) for c in cells), (
            label,
            cells,
        )
        assert all(float(c.replace(",", "")) > 0 for c in cells), (label, cells)

    # The worker joined every pair, once, with nothing expired or dead-lettered.
    assert _row(out, "joined/expired/dup/dead letters") == [f"{PAIRS}/0/0/0"] * 2

    # A floor check line for each of the two batch sizes that have one.
    assert re.search(r"^  (PASS|FAIL) batch=1: worker [\d,]+ pairs/s", out, re.M), out
    assert re.search(r"^  (PASS|FAIL) batch=100: worker [\d,]+ pairs/s", out, re.M), out

    # Latency: every pair offered was seen processed, and the percentiles printed.
    sent = re.search(r"sent ([\d,]+) pairs .* ([\d,]+) joined", out)
    assert sent, out
    assert sent.group(1) == sent.group(2) == "600", out
    assert re.search(r"pair processed: p50 [\d,]+ ms, p99 [\d,]+ ms", out), out
    assert re.search(r"model-events topic .*600 pairs\): p50 [\d,]+ ms, p99 [\d,]+ ms", out), out

    # Nothing left behind (topic deletion completes asynchronously on the broker).
    prefix = re.search(r"run prefix (\S+)", err)
    assert prefix, err
    for _ in range(50):
        left = asyncio.run(_topics_with_prefix(kafka_bootstrap, prefix.group(1)))
        if not left:
            break
        asyncio.run(asyncio.sleep(0.2))
    assert not left, left
