"""Run one function over many clips in worker processes, isolating every clip.

Decoders hang and crash on hostile files (decord #242, #373). Each clip therefore runs in a
pebble worker with its own timeout: a clip that hangs is killed and reported, a clip that
crashes its worker is reported, and neither takes the other clips down. The same map can run
on an existing Dask cluster for scale-out; Dask cannot kill a hung task, so there the timeout
only bounds how long we wait for it.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures import as_completed
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pebble import ProcessExpired, ProcessPool
from tqdm.auto import tqdm

Item = TypeVar("Item")
Value = TypeVar("Value")


@dataclass(frozen=True)
class Outcome(Generic[Item, Value]):
    """What became of one item: its value, or why there is none."""

    item: Item
    value: Value | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _describe_failure(error: BaseException, timeout_s: float) -> str:
    if isinstance(error, FutureTimeout):
        return f"timeout: no result within {timeout_s:g} s"
    if isinstance(error, ProcessExpired):
        return f"worker crashed (exit code {error.exitcode})"
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def _collect(
    finished: Iterable[tuple[int, Callable[[], Value]]],
    items: Sequence[Item],
    *,
    timeout_s: float,
    desc: str,
    progress: bool,
) -> list[Outcome[Item, Value]]:
    """Turn (index, result getter) pairs, in completion order, into outcomes in input order.

    One clip's failure (exception, timeout, dead worker) becomes that clip's error; only an
    interrupt stops the whole map.
    """
    outcomes: list[Outcome[Item, Value] | None] = [None] * len(items)
    with tqdm(total=len(items), desc=desc, unit="clip", disable=not progress) as bar:
        for index, result in finished:
            try:
                outcomes[index] = Outcome(items[index], value=result())
            except KeyboardInterrupt:
                raise
            except BaseException as error:  # every failure is per clip
                outcomes[index] = Outcome(items[index], error=_describe_failure(error, timeout_s))
            bar.update(1)
    return [outcome for outcome in outcomes if outcome is not None]


def map_isolated(
    fn: Callable[[Item], Value],
    items: Sequence[Item],
    *,
    workers: int,
    timeout_s: float,
    desc: str,
    progress: bool = True,
) -> list[Outcome[Item, Value]]:
    """Apply ``fn`` to every item in spawned worker processes; results keep the input order."""
    if not items:
        return []
    context = multiprocessing.get_context("spawn")
    with ProcessPool(max_workers=max(1, min(workers, len(items))), context=context) as pool:
        futures = {
            pool.schedule(fn, args=(item,), timeout=timeout_s): i for i, item in enumerate(items)
        }
        finished = ((futures[f], f.result) for f in as_completed(list(futures)))
        return _collect(finished, items, timeout_s=timeout_s, desc=desc, progress=progress)


def map_on_dask(
    fn: Callable[[Item], Value],
    items: Sequence[Item],
    *,
    address: Any,
    timeout_s: float,
    desc: str,
    progress: bool = True,
) -> list[Outcome[Item, Value]]:
    """Apply ``fn`` to every item on a Dask cluster (an address, or a ``LocalCluster``)."""
    from distributed import Client
    from distributed import as_completed as dask_as_completed

    if not items:
        return []
    with Client(address, set_as_default=False) as client:
        futures = client.map(fn, list(items), pure=False)
        positions = {future.key: i for i, future in enumerate(futures)}
        completed = dask_as_completed(
            futures, loop=client.loop, timeout=timeout_s * max(1, len(items))
        )
        finished = ((positions[f.key], lambda f=f: f.result(timeout=timeout_s)) for f in completed)
        return _collect(finished, items, timeout_s=timeout_s, desc=desc, progress=progress)
