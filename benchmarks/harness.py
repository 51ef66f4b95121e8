"""What every benchmark script shares: the report header, markdown tables, and one training step.

Each script prints a self-describing markdown report: the machine, the library versions, the load on the machine
before and after, and the exact command, so that a number pasted into docs/benchmarks.md can be traced and rerun.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
from collections.abc import Callable, Sequence
from importlib import metadata

import torch
from bench_train_step import machine  # the CPU model line, shared with the train-step benchmark

from mariofm.config import Config
from mariofm.device import default_device
from mariofm.flow import fm_loss

PACKAGES = ("torch", "numpy", "opencv-python-headless", "diffusers", "rectified-flow-pytorch")


def versions() -> str:
    """'torch 2.13.0+cpu (AVX512), numpy 2.3.1, ..., rectified-flow-pytorch not installed'."""
    out = []
    for name in PACKAGES:
        try:
            out.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(f"{name} not installed")
    out[0] += f" ({torch.backends.cpu.get_cpu_capability()})"
    return ", ".join(out)


def device_line(device: torch.device) -> str:
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return f"{p.name}, {p.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"
    return f"CPU, {torch.get_num_threads()} torch thread(s)"


def header(title: str, device: torch.device, load_before: tuple[float, ...], note: str = "") -> str:
    """The lines above every table: what ran, where, with what, and how busy the machine was."""
    load = os.getloadavg()
    lines = [f"## {title}", "",
             f"- Machine: {machine()}, Python {platform.python_version()}",
             f"- Device: {device_line(device)}",
             f"- Versions: {versions()}",
             f"- Load average: {load_before[0]:.1f} before, {load[0]:.1f} after (timings are noisy when it "
             f"exceeds the core count, {os.cpu_count()})",
             f"- Command: `OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')} python "
             f"{' '.join(sys.argv)}`"]
    if note:
        lines.append(f"- {note}")
    return "\n".join(lines) + "\n"


def table(rows: Sequence[dict], columns: Sequence[tuple[str, str, str | Callable]]) -> str:
    """A markdown table. columns: (key, title, format) with format a str.format spec (',.2f') or a callable;
    a missing or None value prints as '–'. Text columns (format "s") align left, numbers right."""
    out = ["| " + " | ".join(title for _, title, _ in columns) + " |",
           "|" + "|".join("---" if fmt == "s" else "---:" for _, _, fmt in columns) + "|"]
    for row in rows:
        cells = []
        for key, _, fmt in columns:
            value = row.get(key)
            cells.append("–" if value is None else fmt(value) if callable(fmt) else format(value, fmt))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


pick_device = default_device  # the library's: `name`, else CUDA when present, else the CPU


def make_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """The optimiser of mariofm.train, for every model alike: AdamW(lr, weight_decay, betas=(0.9, 0.99))."""
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, x0: torch.Tensor, noise: torch.Tensor,
               t: torch.Tensor, grad_clip: float, amp_dtype: torch.dtype | None = None) -> float:
    """One step of the flow-matching objective (mariofm.flow.fm_loss, the same loss for every model): forward,
    backward, clip the gradient norm, AdamW. Returns the loss."""
    opt.zero_grad(set_to_none=True)
    with torch.autocast(x0.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        loss = fm_loss(model, x0, t=t, noise=noise)[0]
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return loss.item()


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that a wall-clock reading covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process so far: CUDA's max allocated bytes, else the max resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


__all__ = ["versions", "header", "table", "pick_device", "make_optimizer", "train_step", "sync", "peak_memory_mb"]
