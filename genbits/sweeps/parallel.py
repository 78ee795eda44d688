"""Independent runs in parallel processes: one map shared by sweeps and experiments."""

from __future__ import annotations

import itertools
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any


def cores() -> int:
    """The CPU cores this process may use (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def map_processes(function: Callable[..., Any], calls: Sequence[tuple], workers: int) -> Iterator[tuple[tuple, Any]]:
    """(call, function(*call)) pairs as they finish, from spawned processes (torch and fork do not mix).

    At most ``workers`` calls are queued, so Ctrl-C leaves nothing behind to start: the running calls finish or
    checkpoint and the pool waits for them. ``function`` must be defined at module level (it is pickled by name)."""
    context = multiprocessing.get_context("spawn")
    queue = iter(calls)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        running = {pool.submit(function, *call): call for call in itertools.islice(queue, workers)}
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                call = running.pop(future)
                yield call, future.result()
                running.update({pool.submit(function, *c): c for c in itertools.islice(queue, 1)})
