"""Sampling: integrate the learned ODE dx/dt = v(x, t) from noise (t = 1) back to data (t = 0).

A grid 1 = t_0 > t_1 > ... > t_N = 0 with steps h = t_{i+1} − t_i < 0 (uniform, or shifted: `time_grid`), and one
of two solvers:

    Euler (order 1, 1 evaluation per step):   x ← x + h·v(x, t)
    Heun  (order 2, 2 evaluations per step):  x̃ ← x + h·v(x, t)                       predict with Euler,
                                              x ← x + h/2·(v(x, t) + v(x̃, t + h))      correct with the slope average

Halving h divides Euler's error by about 2 and Heun's by about 4: at equal cost (NFE) Heun wins whenever the field
is smooth. `sample` skips the corrector of the last step, as EDM does (Karras et al. 2022): that step is plain
Euler, so 2·steps − 1 evaluations. One Euler step adds an error O(h²), the same order as Heun's global error, so
the order stays 2; and the net is never asked for v at t = 0, an end that training visits rarely (logit-normal t
almost never). `final_corrector=True` gives textbook Heun, 2 per step, exactly torchdiffeq's "heun2".

`sample_renoised` is the stochastic relative of the Euler solver: each step splits x into the clean sample and
its noise and puts back a share of that noise drawn afresh (DDIM's η: 0 the ODE, 1 DDPM's ancestral steps). A world
model plays with it when its cfg.sample_renoise > 0 (mariofm.rollout).

`noise_for` draws the starting noise of a config's clips from a seed; `sample_videos` runs `sample` in batches
and returns displayable uint8 videos.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from mariofm.config import SOLVERS, Config
from mariofm.flow import Velocity
from mariofm.video import to_uint8


def nfe(steps: int, solver: str = "heun", *, final_corrector: bool = False) -> int:
    """Velocity evaluations (network forward passes) of `steps` steps: Euler 1 per step, Heun 2 per step less
    one when the last step skips its corrector (the default of `sample`)."""
    _check(steps, solver)
    return steps if solver == "euler" else 2 * steps - (not final_corrector)


def _check(steps: int, solver: str) -> None:
    if solver not in SOLVERS:
        raise ValueError(f"solver={solver!r} is unknown; choose one of {SOLVERS}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r} must be a positive integer, e.g. steps=20")


def time_grid(t_start: float, t_end: float, steps: int, shift: float = 1.0) -> list[float]:
    """The `steps + 1` times from t_start to t_end: t = t_end + (t_start − t_end)·s·u / (1 + (s − 1)·u) for u
    uniform from 1 to 0. s = 1 is the uniform grid; s < 1 puts more of the steps near t_end (for sampling: near
    the data, where the small detail is decided), s > 1 near t_start. The same warp as the "timestep shift" of
    Stable Diffusion 3 (Esser et al. 2024), there with s > 1 for large images; a world model playing its own
    frames uses it as cfg.sample_shift (mariofm.rollout.next_frame)."""
    if not 0 < shift < math.inf:
        raise ValueError(f"shift={shift!r} must be a positive number; 1 is the uniform grid")
    if shift == 1:  # exactly the grid of earlier versions, bit for bit
        return torch.linspace(t_start, t_end, steps + 1, dtype=torch.float64).tolist()
    u = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return (t_end + (t_start - t_end) * shift * u / (1 + (shift - 1) * u)).tolist()


def _velocity_at(velocity: Velocity, x: torch.Tensor, t: float) -> torch.Tensor:
    """velocity(x, t) with one t per sample, checked to have x's shape."""
    out = velocity(x, torch.full(x.shape[:1], t, dtype=x.dtype, device=x.device))
    if out.shape != x.shape:
        raise ValueError(f"the velocity returned shape {tuple(out.shape)} for input {tuple(x.shape)}; "
                         "it must return a tensor of its input's shape")
    return out


def solve_ode(velocity: Velocity, x: torch.Tensor, t_start: float, t_end: float, steps: int,
              solver: str = "heun", *, final_corrector: bool = True, progress: bool = False,
              callback: Callable[[int, float, torch.Tensor], None] | None = None, shift: float = 1.0) -> torch.Tensor:
    """Integrate dx/dt = velocity(x, t) from x at t_start to t_end in `steps` steps on `time_grid(..., shift)`.

    Either direction works: `sample` runs 1 → 0, `mariofm.likelihood` runs 0 → 1. final_corrector=False makes
    the last Heun step an Euler step (see the module docstring). `callback(i, t, x)` sees the state at every
    grid time, i = 0 (the start) to steps. Runs under torch.no_grad() — not inference_mode, so a velocity that
    needs autograd inside (the likelihood's divergence) can switch it back on.
    """
    _check(steps, solver)
    grid = time_grid(t_start, t_end, steps, shift)

    # a `with` block rather than a @torch.no_grad() decorator: mutmut skips decorated functions (docs/testing.md)
    with torch.no_grad():
        if callback is not None:
            callback(0, grid[0], x)
        for i in tqdm(range(steps), desc=f"{solver} {t_start:g}→{t_end:g}", disable=not progress, leave=False):
            t, h = grid[i], grid[i + 1] - grid[i]
            slope = _velocity_at(velocity, x, t)
            if solver == "heun" and (final_corrector or i < steps - 1):  # average with the slope at the Euler guess
                slope = (slope + _velocity_at(velocity, x + h * slope, grid[i + 1])) / 2
            x = x + h * slope
            if callback is not None:
                callback(i + 1, grid[i + 1], x)
    return x


def sample(velocity: Velocity, x1: torch.Tensor, steps: int, solver: str = "heun", *, t_end: float = 0.0,
           final_corrector: bool = False, progress: bool = False,
           callback: Callable[[int, float, torch.Tensor], None] | None = None, shift: float = 1.0) -> torch.Tensor:
    """Carry noise x1 (B, ...) at t = 1 to a sample at t = t_end (0: data) with `steps` Euler or Heun steps.

    `velocity(x, t)` is any callable with t of shape (B,): the UNet (in eval mode), its EMA copy, or
    `mariofm.analytic.gaussian_velocity`. Deterministic: the same x1 gives the same sample. Costs
    `nfe(steps, solver, final_corrector=final_corrector)` evaluations, on the grid `time_grid(1, t_end, steps,
    shift)`. To keep the intermediate states (e.g. for a notebook figure):

        path = []
        x0 = sample(model, torch.randn(4, 3, 8, 60, 64), 20, callback=lambda i, t, x: path.append(x.cpu()))
    """
    if not 0.0 <= t_end < 1.0:
        raise ValueError(f"t_end={t_end!r} must lie in [0, 1): sampling runs from noise at t = 1 down to t_end")
    return solve_ode(velocity, x1, 1.0, t_end, steps, solver, final_corrector=final_corrector, progress=progress,
                     callback=callback, shift=shift)


def sample_renoised(velocity: Velocity, x1: torch.Tensor, steps: int, renoise: float,
                    generator: torch.Generator | list[torch.Generator] | None = None, *,
                    shift: float = 1.0) -> torch.Tensor:
    """Carry noise x1 at t = 1 to a sample at t = 0 with `steps` steps that put back fresh noise: DDIM's η
    (Song et al. 2021) on the flow's straight path, η = `renoise`.

    At grid time t the velocity splits x into the clean sample and the noise it is made of,

        x̂0 = x − t·v(x, t),   ε̂ = x + (1 − t)·v(x, t)        (so that x = (1 − t)·x̂0 + t·ε̂),

    and the step to the next grid time t' < t rebuilds x with a share c of that noise drawn afresh, z ~ N(0, I)
    from `generator` (one, or one per row: `randn_rows`):

        x ← (1 − t')·x̂0 + t'·(√(1 − c²)·ε̂ + c·z),   c = η·√(1 − ρ²),   ρ = σ(t')/σ(t),   σ(t) = t/(1 − t)

    σ is the noise-to-signal ratio of x_t = (1 − t)·x0 + t·ε. η = 0 is the Euler step x + (t' − t)·v exactly
    (`sample` with solver="euler": the ODE, DDIM). η = 1 draws x_t' from q(x_t' | x_t, x0 = x̂0) of the Markov chain
    that adds independent noise on the way up: DDPM's ancestral step, which as the steps shrink becomes the reverse
    SDE, a sampler of the same distribution as the ODE. With few steps they differ: fresh noise lets each step
    correct what the steps before got wrong, rather than carry it along. The step from t = 1 (ρ = 0) renews all of
    η's share; the last step, to t' = 0 (ρ = 0, t' = 0), returns x̂0."""
    if not 0.0 <= renoise <= 1.0:
        raise ValueError(f"renoise={renoise!r} must lie in [0, 1]: DDIM's η, 0 the ODE, 1 DDPM's ancestral steps")
    _check(steps, "euler")
    grid, x = time_grid(1.0, 0.0, steps, shift), x1
    with torch.no_grad():
        for t, t_next in zip(grid[:-1], grid[1:]):
            v = _velocity_at(velocity, x, t)
            x0, eps = x - t * v, x + (1 - t) * v
            rho = t_next * (1 - t) / (t * (1 - t_next))  # σ(t')/σ(t), 0 at t = 1
            share = renoise * math.sqrt(1 - rho ** 2)
            if share and t_next > 0:
                eps = math.sqrt(1 - share ** 2) * eps + share * randn_rows(tuple(x.shape), generator).to(x)
            x = (1 - t_next) * x0 + t_next * eps
    return x


def noise_for(cfg: Config, num: int, seed: int) -> torch.Tensor:
    """The starting noise x1 ~ N(0, I) of `num` clips, drawn on the CPU so a seed gives the same videos on
    every device."""
    shape = (num, cfg.video_channels, cfg.sequence_length, cfg.video_height, cfg.video_width)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def randn_rows(shape: tuple[int, ...], generator: torch.Generator | list[torch.Generator] | None = None,
               ) -> torch.Tensor:
    """ε ~ N(0, I) of `shape`, float32 on the CPU (the same numbers on every device), from one generator, or row by
    row from a list of generators, one per row: then a row's numbers do not depend on the rows beside it."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"{len(generator)} generators for {shape[0]} rows: give one generator per row")
        return torch.cat([torch.randn((1, *shape[1:]), generator=g) for g in generator])
    return torch.randn(shape, generator=generator)


def sample_videos(model: torch.nn.Module, noise: torch.Tensor, steps: int, solver: str = "heun", *,
                  device: str | torch.device = "cpu", batch_size: int = 8, progress: bool = False,
                  cond: dict[str, torch.Tensor] | None = None) -> np.ndarray:
    """Integrate from `noise` (t=1) to t=0 in batches; return uint8 videos (N, T, H, W, 3).

    `cond` holds the model's conditioning inputs (one row per clip, e.g. actions), passed to it as keyword
    arguments; empty for the unconditional VideoUNet. No graph is built: `sample` runs under torch.no_grad()."""
    cond = cond or {}
    was_training = model.training
    model.eval()
    out = []
    for i, chunk in enumerate(noise.split(batch_size)):
        rows = {k: v[i * batch_size:(i + 1) * batch_size].to(device) for k, v in cond.items()}
        x0 = sample(functools.partial(model, **rows), chunk.to(device), steps, solver, progress=progress)
        out.append(to_uint8(x0.float().cpu()))
    model.train(was_training)
    return np.concatenate(out)


__all__ = ["SOLVERS", "nfe", "time_grid", "solve_ode", "sample", "sample_renoised", "noise_for", "randn_rows",
           "sample_videos"]
