"""The schedule of a training run: how long it lasts, how fast it learns at each step, which clips each step sees.

    budget = Budget(minutes=10)                          # or epochs=..., steps=...: whichever ends first
    sched = make_scheduler(opt, warmup=100, spent=...)   # linear warmup, then cosine decay to lr/10
    epoch_batches(n=1000, batch=4, seed=0, epoch=3)      # the clip indices of every step of epoch 3
    epoch_loader(train_set, cfg, epoch=3, skip=0, ...)    # this process's batches of epoch 3, on its device

Everything here is a function of (seed, step) or of the time spent, so a stopped run resumes on the same schedule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader

from mariofm.config import Config
from mariofm.data import collate
from mariofm.device import Dist


@dataclass
class Budget:
    """How long to train: whichever of epochs, steps and minutes runs out first."""
    epochs: int | None = None
    steps: int | None = None
    minutes: float | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "steps", "minutes"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"--{name}={value} must be positive")

    def max_steps(self, steps_per_epoch: int) -> int | None:
        """The step count of the epochs or steps budget (the smaller); None for a wall-clock budget alone."""
        return min((n for n in (self.steps, self.epochs and self.epochs * steps_per_epoch) if n), default=None)


def make_scheduler(opt: torch.optim.Optimizer, warmup: int, spent: Callable[[int], float]) -> LambdaLR:
    """Linear warmup to the full learning rate over `warmup` steps, then cosine decay to a tenth of it as the
    rest of the budget is spent:

        lr(step) = lr · (step + 1) / warmup                       while step < warmup
        lr(step) = lr · (0.1 + 0.45·(1 + cos(π·min(1, s))))       after, with s = spent(step) in [0, 1]

    `spent(step)` says how much of the budget is used: a fraction of the steps, or of the seconds for a
    wall-clock budget, whose step count nobody knows in advance. That is why this is torch's LambdaLR with the
    cosine written out, not CosineAnnealingLR, which needs the step count up front."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, spent(step))))
    return LambdaLR(opt, factor)


def epoch_batches(n: int, batch: int, seed: int, epoch: int) -> list[list[int]]:
    """The global batches of one epoch: a permutation seeded by (seed, epoch), the ragged tail dropped."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    return [perm[i:i + batch] for i in range(0, n - batch + 1, batch)]


def epoch_loader(train_set, cfg: Config, epoch: int, skip: int, dist: Dist, workers: int, dev: torch.device):
    """This rank's batches of `epoch` on `dev`, from batch `skip` on (a resumed run skips those it has done)."""
    local = cfg.batch_size // dist.world
    batches = epoch_batches(len(train_set), cfg.batch_size, cfg.seed, epoch)[skip:]
    rank_batches = [b[dist.rank * local:(dist.rank + 1) * local] for b in batches]
    # its own generator: making a DataLoader must not draw from the global RNG (dropout uses it)
    loader = DataLoader(train_set, batch_sampler=rank_batches, num_workers=workers, collate_fn=collate,
                        pin_memory=dev.type == "cuda", generator=torch.Generator())
    return ({k: v.to(dev, non_blocking=True) for k, v in batch.items()} for batch in loader)


__all__ = ["Budget", "make_scheduler", "epoch_batches", "epoch_loader"]
