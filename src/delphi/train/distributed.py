"""Data parallelism applied to the model from outside (torchtitan style).

One process (the CPU default) and `torchrun --nproc_per_node K -m delphi.cli train ...` share
every line of the trainer but `wrap_model`: under torchrun the process group is initialised
(gloo on CPU, NCCL on GPU), every rank trains on its slice of the global batch, and the model is
sharded with FSDP2 (`fully_shard`, one unit per decoder block plus the root) or replicated with
DDP (`DELPHI_PARALLEL=ddp`, or where FSDP2 is unavailable). Gradients are averaged across ranks
by the wrapper, so K ranks on B/K rows each see the gradient of the same global mean loss as one
process on B rows. AdamH's norms under FSDP2 are over the full matrices: the optimizer
all-reduces the shards' squared norms (`delphi.optim.adamh`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: str = "cpu"
    backend: str | None = None
    parallel: str = "none"  # "none" | "fsdp" | "ddp"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed() -> DistInfo:
    """Initialise torch.distributed when launched by torchrun (WORLD_SIZE > 1), else one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world <= 1:
        return DistInfo(device="cuda" if cuda else "cpu")
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend)
    parallel = os.environ.get("DELPHI_PARALLEL", "fsdp").lower()
    if parallel not in ("fsdp", "ddp"):
        from delphi.errors import DelphiError

        raise DelphiError(f"DELPHI_PARALLEL must be fsdp or ddp, got {parallel!r}")
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, local_world_size=local_world,
                    device=f"cuda:{local_rank}" if cuda else "cpu", backend=backend, parallel=parallel)


def wrap_model(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """Shard (FSDP2) or replicate (DDP) `model` across the process group; identity for one process."""
    if not info.distributed:
        return model
    if info.parallel == "fsdp":
        try:
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard
        except ImportError:  # older torch: fall back to DDP
            fully_shard = None
        if fully_shard is not None:
            mesh = init_device_mesh("cuda" if info.device.startswith("cuda") else "cpu", (info.world_size,))
            for block in getattr(model, "layers", []):
                fully_shard(block, mesh=mesh)
            fully_shard(model, mesh=mesh)
            return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[info.local_rank] if info.device.startswith("cuda") else None)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    for attr in ("_orig_mod", "module"):
        while isinstance(getattr(model, attr, None), torch.nn.Module):
            model = getattr(model, attr)
    return model


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.distributed:
        import torch.distributed as dist

        t = t.clone()
        dist.all_reduce(t)
    return t


def broadcast_object(obj, info: DistInfo):
    """Rank 0's value of `obj` on every rank (decisions such as "checkpoint now" must agree)."""
    if not info.distributed:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.distributed:
        import torch.distributed as dist

        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def local_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """This rank's weights (local shards of DTensors), as plain CPU tensors for a checkpoint."""
    out = {}
    for name, t in unwrap(model).state_dict().items():
        if hasattr(t, "to_local"):
            t = t.to_local()
        out[name] = t.detach().to("cpu", copy=True)
    return out


@torch.no_grad()
def load_local_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Inverse of `local_state_dict`: copy into the (possibly sharded) parameters in place."""
    own = unwrap(model).state_dict()
    missing = set(own) - set(state)
    if missing:
        raise RuntimeError(f"checkpoint lacks weights: {sorted(missing)[:5]}")
    for name, t in own.items():
        dst = t.to_local() if hasattr(t, "to_local") else t
        dst.copy_(state[name].to(dst.device, dst.dtype))


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Full (gathered) weights on CPU; a collective under FSDP2, so every rank must call it."""
    out = {}
    for name, t in unwrap(model).state_dict().items():
        if hasattr(t, "full_tensor"):
            t = t.full_tensor()
        out[name] = t.detach().to("cpu", copy=True)
    return out


def configure_threads(info: DistInfo) -> int:
    """Intra-op threads: `DELPHI_THREADS` if set, else the CPU cores shared among local ranks."""
    env = os.environ.get("DELPHI_THREADS")
    if env:
        n = int(env)
    elif info.device == "cpu" and info.local_world_size > 1:
        n = max(1, (os.cpu_count() or 1) // info.local_world_size)
    else:
        return torch.get_num_threads()
    if n != torch.get_num_threads():
        torch.set_num_threads(n)
    return n
