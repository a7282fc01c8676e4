"""Runs started by ``torchrun``: each rank labels its own shard of the images (``RANK`` of
``WORLD_SIZE``) on its own GPU (``LOCAL_RANK``), writes its own manifest, and rank 0 prints one
summary of all ranks.

    torchrun --nproc-per-node 8 -m pseudolabel generate --dataset voc --out masks/
"""

from __future__ import annotations

import datetime
import json
import os
import time
from dataclasses import dataclass

from pseudolabel.core.errors import ConfigError

SUMMARY_TIMEOUT = datetime.timedelta(hours=24)
"""How long a finished rank waits for the slowest one before the combined summary."""


@dataclass(frozen=True)
class Place:
    """This process's place in a torchrun job (rank 0 of 1 when run alone)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def torchrun_place() -> Place | None:
    """The place torchrun set in the environment; None outside torchrun or with one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    return Place(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def is_main_process() -> bool:
    """True in a single-process run and in rank 0 of a torchrun one."""
    place = torchrun_place()
    return place is None or place.main


def tell_torchrun(message: str) -> None:
    """Hand a failing rank's one-line message to torchrun (its ``TORCHELASTIC_ERROR_FILE``), whose
    failure report then shows it for the rank instead of a link to its docs."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path:
        with open(path, "w", encoding="utf-8") as handle:
            # the layout torch's own ``record`` writes; its report shows ``py_callstack`` as the traceback
            extra = {"py_callstack": message, "timestamp": str(int(time.time()))}
            json.dump({"message": {"message": message, "extraInfo": extra}}, handle)


def run_shard(text: str) -> tuple[int, int]:
    """The shard this process runs: ``--shard i/n``, or (RANK, WORLD_SIZE) under torchrun.

    Raises:
        ConfigError: a malformed ``--shard``, or ``--shard`` beside torchrun (both split the images).
    """
    from pseudolabel.runner.loop import parse_shard

    shard = parse_shard(text)
    place = torchrun_place()
    if place is None:
        return shard
    if shard != (0, 1):
        raise ConfigError(f"--shard {text} and torchrun's {place.world} processes both split the images: use one")
    return place.rank, place.world


def local_device(text: str) -> str:
    """``--device``: under torchrun, ``auto`` and ``cuda`` mean this rank's GPU (``cuda:LOCAL_RANK``)
    when CUDA is available; anything else is left as given."""
    import torch

    place = torchrun_place()
    if place is None or text not in ("auto", "cuda") or not torch.cuda.is_available():
        return text
    return f"cuda:{place.local_rank}"


def gather_to_main(value: object) -> list[object] | None:
    """Every rank's ``value``, in rank order, on rank 0 (None on the other ranks); ``[value]``
    outside torchrun. Ranks wait for each other here (a gloo group over torchrun's rendezvous)."""
    import torch.distributed as dist

    place = torchrun_place()
    if place is None:
        return [value]
    joined = not dist.is_initialized()
    if joined:
        dist.init_process_group("gloo", timeout=SUMMARY_TIMEOUT)
    gathered: list[object] | None = [None] * place.world if place.rank == 0 else None
    dist.gather_object(value, gathered, dst=0)
    if joined:
        dist.destroy_process_group()
    return gathered
