"""What the benchmarks share: calls per CPU second on one core, and the resident memory."""

from __future__ import annotations

import time
from typing import Callable


def per_core(label: str, unit: str, call: Callable[[int], object], seconds: float, batch: int = 500) -> float:
    """Run ``call(n)`` with n = 1, 2, ... for about ``seconds``; print and return calls per CPU second."""
    call(0)
    count = 0
    start_cpu = time.process_time()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for n in range(count + 1, count + batch + 1):
            call(n)
        count += batch
    cpu = time.process_time() - start_cpu
    rate = count / cpu
    print(f"{label}: {rate:,.0f} {unit}/s per core ({cpu / count * 1e6:.2f} us CPU each, {count} {unit})")
    return rate


def rss_kib() -> int:
    """This process's resident memory (VmRSS), in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
