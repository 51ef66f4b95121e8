"""Where a run computes: the device, the processes of a multi-GPU run (DDP), and the precision (AMP).

    dev = pick_device()              # cuda if present (each torchrun rank its own GPU), else cpu
    dist = setup_distributed(dev)    # rank 0 of 1 unless started by torchrun
    dtype = autocast_dtype(dev, cfg) # bf16 / fp16 on CUDA, None (float32) on the CPU
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass

import torch

from mariofm.config import Config


def default_device(name: str | torch.device | None = None) -> torch.device:
    """`name` if given, else CUDA when present, else the CPU. A device this machine lacks is a ValueError that
    says which devices it has, before any work (torch would fail later, deep inside the first tensor copy)."""
    try:
        dev = torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise ValueError(f"--device {name}: this machine has no CUDA GPU (torch {torch.__version__}); "
                             f"use --device cpu, or leave --device out to pick what is there")
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"--device {name}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: MPS (Apple GPU) is not available here; use --device cpu")
    return dev


def pick_device(name: str | None = None) -> torch.device:
    """`default_device(name)`, made current; under torchrun each rank takes the GPU of its LOCAL_RANK."""
    dev = default_device(name)
    if dev.type == "cuda":
        dev = torch.device("cuda", dev.index if dev.index is not None else int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(dev)
    return dev


@dataclass
class Dist:
    """This process's place in a run: rank `rank` of `world` processes (0 of 1 without torchrun)."""
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean over all ranks (the value itself in a single process)."""
        if self.world > 1:
            value = value.clone()
            torch.distributed.all_reduce(value)
            value /= self.world
        return value


def setup_distributed(device: torch.device) -> Dist:
    """Join the process group when started by torchrun (gloo on CPU, nccl on CUDA)."""
    if int(os.environ.get("WORLD_SIZE", 1)) == 1:
        return Dist()
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(torch.distributed.get_rank(), torch.distributed.get_world_size())


def autocast_dtype(device: torch.device, cfg: Config) -> torch.dtype | None:
    """bf16 on GPUs that have it in hardware (Ampere and later), fp16 with a GradScaler on older ones (Colab's
    T4); fp32 on the CPU, where bf16 autocast measured no faster for these convolutions."""
    if device.type != "cuda" or not cfg.amp:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16


def hardware() -> str:
    """What this process runs on, in words, for the model card."""
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}){gpu}, " \
           f"{torch.get_num_threads()} torch threads; torch {torch.__version__}"


__all__ = ["default_device", "pick_device", "Dist", "setup_distributed", "autocast_dtype", "hardware"]
