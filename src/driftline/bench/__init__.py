"""Building blocks of ``driftline bench``: load generation and the baselines driftline is judged by.

The numbers only mean something side by side: the same pre-produced messages
read by raw aiokafka (the ceiling for Python on this machine), by a bare Faust
agent (the ceiling for anything built on Faust) and by the driftline worker.
"""


def per_second(count: float, seconds: float) -> float:
    """``count / seconds``; infinite for a zero-length window rather than an error."""
    return count / seconds if seconds > 0 else float("inf")
