"""The flow-matching objective: a straight path from data to noise, and the velocity along it.

    x_t = (1 − t)·x0 + t·ε          t = 0: data x0,  t = 1: noise ε ~ N(0, I)
    v*  = d x_t / dt = ε − x0       the velocity of that path (the same at every t)
    loss = E_{t, x0, ε} ‖v_θ(x_t, t) − v*‖²   (mean over every dimension)

The network never sees x0 or ε, only x_t, so the best it can do is the average of v* over all the (x0, ε) pairs
that pass through x_t: v(x, t) = E[ε − x0 | x_t = x]. That field carries noise to data when integrated from
t = 1 to t = 0 (mariofm.sample); mariofm.analytic writes it in closed form for Gaussian data.

A conditioned model (say, on the controller's actions) reads its conditions as keyword arguments,
`model(x_t, t, actions=...)`; the loss sees it as `functools.partial(model, **cond)`, still a velocity of (x, t).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from mariofm.config import TIME_SAMPLINGS

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""Any `velocity(x, t) -> dx/dt` with x of shape (B, ...) and t of shape (B,): the UNet, its EMA copy, a formula."""


def broadcast_t(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """View t of shape (B,) as (B, 1, ..., 1) so that it scales each sample of x."""
    if t.shape != x.shape[:1]:
        raise ValueError(f"t must have shape (B,)={tuple(x.shape[:1])}, one time per sample; got {tuple(t.shape)}")
    return t.reshape(-1, *(1,) * (x.ndim - 1))


def interpolate(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 − t)·x0 + t·ε, with one t per sample (shape (B,)) broadcast over the other dims."""
    t = broadcast_t(t, x0).to(x0.dtype)
    return (1 - t) * x0 + t * noise


def target_velocity(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """v* = ε − x0, the time derivative of `interpolate` (the path is a straight line)."""
    return noise - x0


def velocity_from_x0(x_t: torch.Tensor, x0_hat: torch.Tensor, t: torch.Tensor, t_min: float = 0.05) -> torch.Tensor:
    """The velocity implied by a guess x̂0 of the clean data: v = (x_t − x̂0) / t.

    From x_t = (1 − t)·x0 + t·ε: ε = (x_t − (1 − t)·x0) / t, so v* = ε − x0 = (x_t − x0) / t. A network that
    outputs x̂0 (a clean, smooth picture) instead of v (which holds the noise ε itself, to be copied through
    pixel by pixel) has the easier job in pixel space ("Back to Basics", Li & He 2025; EDM's c_skip/c_out is the
    same idea). Near t = 0 the division would blow up any error in x̂0, so t is floored at t_min.
    """
    return (x_t - x0_hat) / broadcast_t(t, x_t).clamp(min=t_min).to(x_t.dtype)


def sample_t(batch: int, kind: str = "uniform", *, generator: torch.Generator | None = None,
             device: torch.device | str | None = None, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    """Draw B training times in [0, 1).

    "uniform":      t ~ U[0, 1).
    "logit_normal": t = sigmoid(n), n ~ N(mean, std²) (Esser et al. 2024, SD3): t lies in (0, 1), its median is
                    sigmoid(mean), and it puts more weight in the middle, where predicting v* is hardest.
    """
    # draw where the generator lives, then move: a CPU generator gives the same times on every device
    where = generator.device if generator is not None else device
    if kind == "uniform":
        t = torch.rand(batch, generator=generator, device=where)
    elif kind == "logit_normal":
        t = torch.sigmoid(mean + std * torch.randn(batch, generator=generator, device=where))
    else:
        raise ValueError(f"time sampling kind={kind!r} is unknown; choose one of {TIME_SAMPLINGS}")
    return t.to(device) if device is not None else t


def fm_loss(model: Velocity, x0: torch.Tensor, *, t: torch.Tensor | None = None, noise: torch.Tensor | None = None,
            time_sampling: str = "uniform", generator: torch.Generator | None = None,
            weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The flow-matching loss of `model(x_t, t) -> velocity` on a batch of data x0 of shape (B, ...).

    t and noise are drawn (with `generator`, if given) unless passed in. `weight` (> 0, broadcastable to x0; e.g.
    mariofm.moving.loss_weight) makes each sample's MSE the weighted mean Σ w·(v − v*)² / Σ w. Returns
        loss        scalar, the mean of per_sample: call loss.backward()
        per_sample  (B,) the MSE of each sample, averaged over its dimensions. NOT detached (it shares loss's
                    graph, so a caller may reweight it); call .detach() before logging it.
        t           (B,) the times used, e.g. for `loss_by_t`.
    """
    if t is None:
        t = sample_t(x0.shape[0], time_sampling, generator=generator, device=x0.device)
    if noise is None:
        where = generator.device if generator is not None else x0.device
        noise = torch.randn(x0.shape, generator=generator, device=where, dtype=x0.dtype).to(x0.device)
    if noise.shape != x0.shape:
        raise ValueError(f"noise has shape {tuple(noise.shape)} but x0 has {tuple(x0.shape)}; they must match")
    t = t.to(device=x0.device, dtype=x0.dtype)
    x_t = interpolate(x0, noise, t)
    v = model(x_t, t)
    if v.shape != x0.shape:
        raise ValueError(f"the model returned shape {tuple(v.shape)} for input {tuple(x0.shape)}; a velocity "
                         "model must return a tensor of its input's shape")
    # compute the error in x0's precision: under autocast the model may return bf16
    error = (v.to(x0.dtype) - target_velocity(x0, noise)).square()
    if weight is None:
        per_sample = error.flatten(1).mean(1)
    else:
        weight = weight.to(error).expand_as(error).flatten(1)
        per_sample = (weight * error.flatten(1)).sum(1) / weight.sum(1)
    return per_sample.mean(), per_sample, t


def loss_by_t(t: torch.Tensor, per_sample: torch.Tensor, bins: int = 10,
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean loss in `bins` equal bins of t over [0, 1]: (bin_centres, mean_loss, count), each of shape (bins,).

    Pass the t and per_sample of many batches, concatenated. Empty bins have mean_loss nan (matplotlib leaves a
    gap). Even a perfect model keeps a loss at both ends: near t = 0, x_t ≈ x0 says nothing about ε (the
    loss tends to Var ε = 1 per dim); near t = 1, x_t ≈ ε says little about x0 (it tends to Var x0 per dim).
    """
    if t.shape != per_sample.shape or t.ndim != 1:
        raise ValueError(f"t {tuple(t.shape)} and per_sample {tuple(per_sample.shape)} must both have shape (N,)")
    t, loss = t.detach().cpu().double(), per_sample.detach().cpu().double()
    index = (t * bins).long().clamp(0, bins - 1)  # t = 1 falls into the last bin
    count = torch.bincount(index, minlength=bins)
    total = torch.bincount(index, weights=loss, minlength=bins)
    centres = (torch.arange(bins, dtype=torch.float64) + 0.5) / bins
    return centres, total / count, count  # 0 / 0 = nan for an empty bin


def conditioning(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The entries of `batch` that `model` takes as conditions: the names in its `conditions` attribute (none
    for the unconditional VideoUNet). A dataset item may hold more (file names, start frames); they are left out."""
    names = tuple(getattr(model, "conditions", ()))
    if missing := [n for n in names if n not in batch]:
        raise ValueError(f"the model is conditioned on {list(names)}, but the batch holds only {sorted(batch)}; "
                         f"missing {missing}. Train on a data set whose items hold them")
    return {n: batch[n] for n in names}


def validation_loss(model: torch.nn.Module, clips: torch.Tensor, t_grid: int = 8, seed: int = 0,
                    batch_size: int = 4, cond: dict[str, torch.Tensor] | None = None) -> float:
    """The flow-matching loss averaged over a fixed t grid (the midpoints of `t_grid` equal bins of [0, 1]) with
    fixed noise from `seed`: the same number for the same model, so it compares across epochs and runs.
    `cond` holds the model's conditions, one row per clip (see `conditioning`)."""
    cond = cond or {}
    was_training = model.training
    model.eval()
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    with torch.no_grad():  # (a `with`, not a decorator: mutmut skips decorated functions, docs/testing.md)
        for t_value in (torch.arange(t_grid) + 0.5) / t_grid:
            noise = torch.randn(clips.shape, generator=g).to(clips.device)
            for start in range(0, clips.shape[0], batch_size):
                x0, eps = clips[start:start + batch_size], noise[start:start + batch_size]
                rows = {k: v[start:start + batch_size] for k, v in cond.items()}
                t = torch.full((x0.shape[0],), float(t_value), device=clips.device)
                total += fm_loss(functools.partial(model, **rows), x0, t=t, noise=eps)[0].item() * x0.shape[0]
    model.train(was_training)
    return total / (t_grid * clips.shape[0])


__all__ = ["TIME_SAMPLINGS", "Velocity", "broadcast_t", "interpolate", "target_velocity", "velocity_from_x0",
           "sample_t", "fm_loss", "loss_by_t", "conditioning", "validation_loss"]
