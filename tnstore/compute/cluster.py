"""Running a streaming pass as chunk tasks on a dask.distributed cluster (`--scheduler`): the one place tnstore
talks to Dask.

A kernel that can run distributed describes its pass as groups of chunk tasks (one group per result, e.g. one
layer), a function that computes one task's partial result and a function that merges two partials. `map_reduce`
turns that into a Dask graph: every task one partition of a `dask.bag`, each group reduced by a tree of merges
(`split_every` partials per merge), so no process ever holds more than a few partials; the client receives one
merged result per group. Without a scheduler the kernels keep their own local loops and Dask is never imported.

Workers open the store themselves (`worker_store`, by the path or URL in `store_ref`): the store must be at the
same path on every worker (a shared filesystem) or at a URL every worker can read. Task functions must be
module-level functions of an installed tnstore (workers import them by name), so a cluster's workers need the
same tnstore installed.
"""
from __future__ import annotations

import logging
import re
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence, TypeVar, Union

from tnstore.errors import ArgumentError, TnstoreError

if TYPE_CHECKING:
    from distributed import Client

    from tnstore.store.store import Store

T = TypeVar("T")
R = TypeVar("R")

SPLIT_EVERY = 8  # partials merged per reduction task: the tree's fan-in
CONNECT_SECONDS = 10  # how long to try reaching a scheduler before saying so
_ADDRESS = re.compile(r"^(tcp|tls|ucx|ws|wss|inproc)://\S+$")


@dataclass(frozen=True)
class Scheduler:
    """Where chunk tasks run: a running dask.distributed scheduler (`address`, e.g. tcp://10.0.0.5:8786) or a
    LocalCluster of `local_workers` worker processes started on this machine for the call."""

    address: str | None = None
    local_workers: int | None = None

    def __post_init__(self) -> None:
        if (self.address is None) == (self.local_workers is None):
            raise ArgumentError("scheduler", "{arg} needs exactly one of an address (tcp://HOST:PORT) or a number "
                                             "of local worker processes")
        if self.address is not None and not _ADDRESS.match(self.address):
            raise ArgumentError("scheduler", f"{{arg}} {self.address!r} is not a scheduler address such as "
                                             "tcp://10.0.0.5:8786")
        if self.local_workers is not None and (not isinstance(self.local_workers, int) or self.local_workers < 1):
            raise ArgumentError("scheduler", f"{{arg}} local:{self.local_workers}: give a positive number of "
                                             "worker processes")

    @classmethod
    def at(cls, address: str) -> "Scheduler":
        """A running scheduler, e.g. Scheduler.at("tcp://10.0.0.5:8786")."""
        return cls(address=address)

    @classmethod
    def local(cls, n_workers: int) -> "Scheduler":
        """A LocalCluster of `n_workers` processes on this machine, started and stopped around the call."""
        return cls(local_workers=n_workers)

    def describe(self) -> str:
        return self.address if self.address is not None else f"local:{self.local_workers}"


SchedulerLike = Union[Scheduler, "Client", None]


def check_scheduler(scheduler: object) -> "Scheduler | Client | None":
    """`scheduler` if it is None, a Scheduler or a distributed.Client; an ArgumentError otherwise."""
    if scheduler is None or isinstance(scheduler, Scheduler):
        return scheduler
    if type(scheduler).__name__ == "Client" and type(scheduler).__module__.startswith("distributed"):
        return scheduler
    raise ArgumentError("scheduler", f"{{arg}} {scheduler!r} must be tnstore.Scheduler.at(ADDRESS), "
                                     "tnstore.Scheduler.local(N) or a distributed.Client")


def worker_threads(n_workers: int) -> int:
    """Threads each of `n_workers` local worker processes may use, so that together they use every core once."""
    from tnstore.compute.parallel import workers

    return max(1, workers() // n_workers)


@contextmanager
def session(scheduler: "Scheduler | Client") -> Iterator["Client"]:
    """A distributed.Client for `scheduler`, closed (and a LocalCluster stopped) afterwards; a Client passes
    through untouched."""
    if not isinstance(scheduler, Scheduler):
        yield scheduler
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise TnstoreError("--scheduler needs dask.distributed: pip install 'dask[distributed]'") from None
    if scheduler.local_workers is not None:
        n = scheduler.local_workers
        threads = str(worker_threads(n))
        # One task thread per worker process; the kernels' own pools (numba, BLAS, tnstore's) get the process's
        # share of the cores, so N workers do not each start one thread per core.
        env = {name: threads for name in ("TNSTORE_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                          "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}
        env["OMP_WAIT_POLICY"] = "PASSIVE"
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR, env=env)
        try:
            with Client(cluster) as client:
                yield client
        finally:
            cluster.close()
        return
    try:
        client = Client(scheduler.address, timeout=CONNECT_SECONDS)
    except (OSError, TimeoutError) as exc:
        raise TnstoreError(f"cannot reach the dask scheduler at {scheduler.address} ({exc}); start one with "
                           "`dask scheduler` and workers with `dask worker ADDRESS`, or use --scheduler local:N")
    with client:
        yield client


def map_reduce(client: "Client", groups: Sequence[Sequence[T]], chunk: Callable[[T], R],
               merge: Callable[[R, R], R], split_every: int = SPLIT_EVERY) -> list[R]:
    """[merge of chunk(task) over every task of the group, for each group], computed on the cluster.

    Each task is one partition; each group's partials are merged in a tree of fan-in `split_every`, in task order
    (merge(a, b) always gets the earlier tasks' partial as `a`). An empty group is refused.
    """
    import dask.bag as db

    if any(len(tasks) == 0 for tasks in groups):
        raise ValueError("every group needs at least one task")
    reductions = []
    for tasks in groups:
        bag = db.from_sequence(list(tasks), npartitions=len(tasks))
        reductions.append(bag.reduction(_Partition(chunk, merge), _Aggregate(merge), split_every=split_every))
    return list(client.compute(reductions, sync=True))


class _Partition:
    """One partition's partial: its tasks (one, as map_reduce builds them) computed and merged."""

    def __init__(self, chunk: Callable, merge: Callable):
        self.chunk, self.merge = chunk, merge

    def __call__(self, tasks) -> Any:
        out = None
        for task in tasks:
            part = self.chunk(task)
            out = part if out is None else self.merge(out, part)
        return out


class _Aggregate:
    """A reduction node: merges its inputs' partials in order."""

    def __init__(self, merge: Callable):
        self.merge = merge

    def __call__(self, partials) -> Any:
        out = None
        for part in partials:
            out = part if out is None else self.merge(out, part)
        return out


def store_ref(store: "Store") -> str:
    """What a worker opens the store by: its URL where it has one (object storage), else its absolute path."""
    return str(getattr(store, "url", None) or store.path)


@lru_cache(maxsize=8)
def worker_store(ref: str) -> "Store":
    """The store `ref` opened read-only, once per worker process (a Store re-lists its runs when they change)."""
    from tnstore.store.store import open_store

    return open_store(ref, mode="r")
