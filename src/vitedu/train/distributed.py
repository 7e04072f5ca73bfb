"""One process per GPU under ``torchrun``: the process group, and which process is which.

``torchrun --nproc_per_node=N`` starts N copies of the same command and tells each its place through the environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``). Each process then trains a replica of the model on its own share of the
data; ``fit`` wraps the model in ``DistributedDataParallel``, which averages the gradients (an all-reduce) so that the
replicas stay identical. Without torchrun there is one process and no process group at all.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_distributed(device: str | torch.device | None = None) -> tuple[int, int, int, torch.device]:
    """Join the process group torchrun set up; returns ``(rank, world_size, local_rank, device)``.

    One process (no torchrun): no process group; ``device`` if given, else CUDA, MPS or CPU. Several: the NCCL backend
    on GPUs (each process on GPU ``local_rank``), gloo on CPUs (also when ``device`` says ``"cpu"``).
    """
    from ..env import pick_device

    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(device) if device is not None else None
    if world_size == 1:
        return rank, world_size, local_rank, device if device is not None else pick_device()
    cuda = torch.cuda.is_available() if device is None else device.type == "cuda"
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"process {rank} has local rank {local_rank} but this machine has "
                               f"{torch.cuda.device_count()} GPU(s): start at most that many processes per node.")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", **({"device_id": device} if cuda else {}))
    return rank, world_size, local_rank, device


def cleanup() -> None:
    """Leave the process group (if any), so the process exits without NCCL's warning."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_main() -> bool:
    """True on the process that prints and writes files: rank 0, or the only one."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
