"""Freed host memory goes back to the operating system between the pipeline's stages."""

from __future__ import annotations

import sys
import time

import pytest
import torch

from neurolabel.plugin_core.runtime.memory import release_freed_memory


def _rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; glibc only")
def test_heap_pages_pinned_by_a_few_live_tensors_are_given_back():
    if not release_freed_memory():
        pytest.skip("this C library has no malloc_trim")
    before = _rss_mib()  # after a trim: earlier tests' free heap would hide the blocks' pages
    # 64 KB blocks stay below glibc's mmap threshold, so they live on the heap; one survivor
    # in fifty keeps the heap from shrinking by itself, as a pass's few kept results do.
    blocks = [torch.ones(16 * 1024) for _ in range(8000)]
    survivors = blocks[::50]
    del blocks
    held = _rss_mib()
    assert held - before > 300, "the freed blocks were returned without trimming"
    release_freed_memory()
    assert held - _rss_mib() > 300
    assert all(float(block[0]) == 1.0 for block in survivors)  # live data is untouched


def test_periodic_release_trims_at_once_then_within_its_time_budget(monkeypatch):
    from neurolabel.plugin_core.runtime import memory

    calls: list[float] = []

    def slow_trim() -> bool:
        calls.append(time.perf_counter())
        time.sleep(0.01)  # a trim of a large heap
        return True

    monkeypatch.setattr(memory, "release_freed_memory", slow_trim)
    release = memory.PeriodicRelease(max_overhead_percent=10.0)
    start = time.perf_counter()
    while time.perf_counter() - start < 0.5:
        release.tick()
    assert calls and calls[0] - start < 0.005  # the first batch trims
    # Each 10 ms trim is followed by at least 100 ms without one: at most 10 % overhead.
    gaps = [b - a for a, b in zip(calls, calls[1:], strict=False)]
    assert 2 <= len(calls) <= 6 and all(gap >= 0.1 for gap in gaps)


def test_periodic_release_stops_trying_where_the_c_library_cannot_trim(monkeypatch):
    from neurolabel.plugin_core.runtime import memory

    calls = []
    monkeypatch.setattr(memory, "release_freed_memory", lambda: calls.append(1) or False)
    release = memory.PeriodicRelease()
    for _ in range(100):
        release.tick()
    assert calls == [1]
