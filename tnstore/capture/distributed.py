"""The ranks of a distributed capture (torchrun: torch.distributed, gloo on CPU, NCCL on GPU), and the few
collective steps the capture runner needs. One process without torchrun is a world of one, with every step a
no-op, so the runner has one code path.

    torchrun --nproc-per-node 8 -m tnstore capture --model M --corpus C --store S
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 -m tnstore capture ...

Roles. Rank 0 is the store's one writer: it holds the writer lock for the whole run, creates the run (journal,
Zarr arrays), writes the journal, and commits (catalog, sentences, then the runs row). Every rank computes and
writes the chunk files of its own blocks of the run, which no other rank touches. The ranks move in steps of one
block each; after every step they exchange (all_gather) which of their blocks are durable and whether anything
failed, so rank 0 journals every rank's finished blocks and a failure anywhere stops every rank at the same step
with the same one-line error, before anything is committed. A rank killed outright stops the others through
torchrun (its default: any failed worker ends the job); the journal then holds the blocks every rank had made
durable, and running the same command again (any number of ranks, or none) resumes from them.
"""
from __future__ import annotations

import datetime
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TypeVar

from tnstore.errors import TnstoreError

T = TypeVar("T")
TIMEOUT = datetime.timedelta(minutes=30)  # a collective step waits this long for a rank that stopped answering


@dataclass(frozen=True)
class Ranks:
    """This process's place in the capture: rank `rank` of `world`, `local_rank` on its node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def leader(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def mine(self, items: list[T]) -> list[T]:
        """This rank's share of `items` (every world-th one, from its rank): neighbours in a length-sorted run
        cost about the same, so the ranks stay in step."""
        return items[self.rank::self.world]

    def steps(self, n_items: int) -> int:
        """Collective steps to cover `n_items` items, one item per rank and step (the same on every rank)."""
        return -(-n_items // self.world)


ONE = Ranks()


def from_environment() -> Ranks:
    """The ranks torchrun describes in WORLD_SIZE, RANK and LOCAL_RANK; one process without them."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise TnstoreError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (torchrun sets them)") from None
    if world < 1 or not 0 <= rank < world:
        raise TnstoreError(f"RANK {rank} of WORLD_SIZE {world} is not a rank; start the capture with torchrun")
    return Ranks(rank, world, local)


def device_for(ranks: Ranks, device: str) -> str:
    """The device of this rank: a rank of a multi-GPU capture takes GPU LOCAL_RANK ("cuda" / "auto" on a GPU
    machine); an explicit cuda:N or cpu is kept."""
    if not ranks.distributed or device not in ("auto", "cuda"):
        return device
    import torch

    if torch.cuda.is_available():
        return f"cuda:{ranks.local_rank % torch.cuda.device_count()}"
    return "cpu" if device == "auto" else device


@contextmanager
def process_group(ranks: Ranks, device: str) -> Iterator[None]:
    """torch.distributed's process group for the capture (NCCL where this rank's device is a GPU, else gloo),
    destroyed afterwards; nothing for one process."""
    if not ranks.distributed:
        yield
        return
    import torch
    import torch.distributed as dist

    if dist.is_initialized():  # a caller that set the group up itself
        yield
        return
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group(backend, timeout=TIMEOUT)
    try:
        yield
    finally:
        dist.destroy_process_group()


def leader_decides(ranks: Ranks, decide: Callable[[], T]) -> T:
    """Rank 0 runs `decide()`; every rank returns its result, or raises the TnstoreError it raised."""
    if not ranks.distributed:
        return decide()
    import torch.distributed as dist

    box: list[Any] = [None]
    if ranks.leader:
        try:
            box[0] = ("ok", decide())
        except TnstoreError as exc:
            box[0] = ("error", exc)
        except BaseException as exc:
            box[0] = ("error", TnstoreError(f"rank 0 failed: {type(exc).__name__}: {exc}"))
            dist.broadcast_object_list(box, src=0)
            raise
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        raise value
    return value


def exchange(ranks: Ranks, mine: T) -> list[T]:
    """Every rank's `mine`, in rank order (one collective step)."""
    if not ranks.distributed:
        return [mine]
    import torch.distributed as dist

    out: list[Any] = [None] * ranks.world
    dist.all_gather_object(out, mine)
    return out


def barrier(ranks: Ranks) -> None:
    if ranks.distributed:
        import torch.distributed as dist

        dist.barrier()
