"""Data parallelism: the processes of one run, as launched by `accelerate launch` or torchrun.

A launcher starts N copies of `steerbench run` with RANK, WORLD_SIZE and LOCAL_RANK (and the
rendezvous MASTER_ADDR / MASTER_PORT) in their environment; `from_environment` joins them into
one `Group`. Without those variables (or with WORLD_SIZE=1) the group is the single process and
every operation below is the identity, so the one-process path computes exactly what it always
did. The runner shards each cell's examples with `shard`, gathers the parts on rank 0 with
`gather_checked` (which alone writes the run folder), and shares decisions with `broadcast`.

Backends: NCCL when the model runs on CUDA (one device per local rank), gloo otherwise. The
Python objects exchanged (answers, scores, decisions) always travel over a gloo group: they are
small, and NCCL would need them copied to a GPU first.
"""

from __future__ import annotations

import datetime
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


def _dist():
    """torch.distributed, imported when a group needs it: the command line imports this module
    (for `RankFailed`) and should not pay for torch before it knows what it runs."""
    import torch.distributed

    return torch.distributed


# What a launcher sets in each process's environment (torchrun's names; accelerate uses them).
RANK, WORLD_SIZE, LOCAL_RANK = "RANK", "WORLD_SIZE", "LOCAL_RANK"
# How long a rank waits for the others at a collective before the run fails: a cell's shard can
# take long on a big model, and a rank that dies is ended by the launcher well before this.
TIMEOUT = datetime.timedelta(hours=2)


class RankFailed(Exception):
    """A rank failed on its part of the work. `everywhere`: every rank raises this, naming the
    first failure (`gather_checked`), and rank 0 alone says it; else only the rank that failed
    raises it, and says it itself."""

    def __init__(self, message: str, *, everywhere: bool = True) -> None:
        super().__init__(message)
        self.everywhere = everywhere


def launched_rank() -> int:
    """This process's rank as its launcher set it (0 when not launched distributed); readable
    before the group is joined, e.g. to let only rank 0 print an error."""
    return int(os.environ.get(RANK, "0"))


@dataclass(frozen=True)
class Group:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    objects: Any = field(default=None, compare=False, repr=False)  # the gloo group for objects

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def device(self, device: str) -> str:
        """The device this rank runs `device` on: each local rank its own GPU."""
        if self.distributed and device.split(":")[0] == "cuda":
            return f"cuda:{self.local_rank}"
        return device

    def shard(self, n: int, batch_size: int = 1) -> range:
        """This rank's contiguous share of `n` items, cut at multiples of `batch_size`: each
        rank then forms the very batches one process would have (batches are not split)."""
        batches = -(-n // batch_size)
        first = self.rank * batches // self.size
        last = (self.rank + 1) * batches // self.size
        return range(min(first * batch_size, n), min(last * batch_size, n))

    def barrier(self) -> None:
        if self.distributed:
            _dist().barrier(group=self.objects)

    def broadcast(self, value: T) -> T:
        """Rank 0's `value`, on every rank."""
        if not self.distributed:
            return value
        box = [value if self.main else None]
        _dist().broadcast_object_list(box, src=0, group=self.objects)
        return box[0]

    def gather(self, value: T) -> list[T] | None:
        """Every rank's `value` in rank order on rank 0; None on the others."""
        if not self.distributed:
            return [value]
        parts: list[Any] | None = [None] * self.size if self.main else None
        _dist().gather_object(value, parts, dst=0, group=self.objects)
        return parts

    def all_gather(self, value: T) -> list[T]:
        """Every rank's `value` in rank order, on every rank."""
        if not self.distributed:
            return [value]
        parts: list[Any] = [None] * self.size
        _dist().all_gather_object(parts, value, group=self.objects)
        return parts

    def gather_checked(self, compute: Callable[[], T]) -> list[T] | None:
        """`compute()` on every rank, the results on rank 0 (None on the others). If it raises
        on any rank, every rank raises `RankFailed` naming the first failure, after the
        exchange: no rank is left waiting for one that gave up. In one process an error
        propagates as it is."""
        if not self.distributed:
            return [compute()]
        try:
            value, failure = compute(), None
        except Exception as error:  # sent to rank 0 instead of leaving the others waiting
            reason = str(error).splitlines()[0] if str(error) else ""
            value, failure = None, f"rank {self.rank} failed: {type(error).__name__}: {reason}"
        parts = self.gather((value, failure))
        first = self.broadcast(
            next((f for _, f in parts if f is not None), None) if parts is not None else None
        )
        if first is not None:
            raise RankFailed(first)
        return [v for v, _ in parts] if parts is not None else None

    def close(self) -> None:
        if self.distributed and _dist().is_initialized():
            _dist().destroy_process_group()


SINGLE = Group()


def from_environment(device: str) -> Group:
    """Join the processes a launcher started (see the module's docstring); the single process
    when there is no launcher. `device`: the experiment's model device (picks the backend)."""
    size = int(os.environ.get(WORLD_SIZE, "1"))
    if size <= 1:
        return SINGLE
    rank, local = launched_rank(), int(os.environ.get(LOCAL_RANK, "0"))
    cuda = device.split(":")[0] == "cuda"
    if cuda:
        import torch

        torch.cuda.set_device(local)
    backend = "nccl" if cuda else "gloo"
    if not _dist().is_initialized():
        _dist().init_process_group(backend, timeout=TIMEOUT)
    objects = _dist().new_group(backend="gloo", timeout=TIMEOUT) if cuda else None
    return Group(rank, size, local, objects)


def free_port() -> int:
    """A port on localhost that nothing listens on now: for a rendezvous of local processes."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(processes: int, argv: Sequence[str]) -> int:
    """Run `python -m bench <argv>` in `processes` processes on this machine, joined as one
    group over localhost (what `steerbench run --processes N` does; `accelerate launch` and
    torchrun set the same variables). Each process gets an equal share of the CPU's threads
    unless OMP_NUM_THREADS says otherwise. Returns rank 0's exit code, or the first failing
    rank's when that one had to be stopped."""
    port = free_port()
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // processes))
    common = {
        WORLD_SIZE: str(processes),
        "LOCAL_WORLD_SIZE": str(processes),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "OMP_NUM_THREADS": threads,
    }
    ranks = [
        subprocess.Popen(
            [sys.executable, "-m", "bench", *argv],
            env={**os.environ, **common, RANK: str(rank), LOCAL_RANK: str(rank)},
        )
        for rank in range(processes)
    ]
    try:
        failed = _wait_for_first_failure(ranks)
        if failed is not None:
            # A rank that raised made every rank raise (`gather_checked`): give them time to
            # end on their own (rank 0 records the run as failed); a rank that died outright
            # leaves the others waiting at a collective, so they are stopped.
            deadline = time.monotonic() + GRACE_SECONDS
            while any(r.poll() is None for r in ranks) and time.monotonic() < deadline:
                time.sleep(0.1)
            if any(r.poll() is None for r in ranks):
                code = ranks[failed].returncode
                print(
                    f"steerbench: error: rank {failed} ended with exit code {code}; "
                    "stopping the other ranks (finished cells are kept)",
                    file=sys.stderr,
                )
                _stop(ranks)
                return code
        return ranks[0].wait()
    except KeyboardInterrupt:  # Ctrl-C reached every rank too (one process group)
        _stop(ranks)
        raise


GRACE_SECONDS = 30.0


def _wait_for_first_failure(ranks: Sequence[subprocess.Popen]) -> int | None:
    """The index of the first rank that exits non-zero, or None once every rank exited 0."""
    while True:
        codes = [r.poll() for r in ranks]
        failed = [i for i, code in enumerate(codes) if code not in (None, 0)]
        if failed:
            return failed[0]
        if all(code == 0 for code in codes):
            return None
        time.sleep(0.1)


def _stop(ranks: Sequence[subprocess.Popen]) -> None:
    for rank in ranks:
        if rank.poll() is None:
            rank.terminate()
    for rank in ranks:
        try:
            rank.wait(timeout=GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            rank.kill()
            rank.wait()
