"""Likelihood: how probable the model finds real data, by running its ODE forwards, from data to noise.

Along a trajectory of dx/dt = v(x, t) the log-density changes by the instantaneous change of variables
(Chen et al. 2018, "Neural ODEs"):

    d/dt log p_t(x_t) = −div v(x_t, t),     div v = Σ_i ∂v_i/∂x_i = tr(∂v/∂x).

Integrate from the data x0 at t = 0 to x1 at t = 1, where p_1 = N(0, I) (in nats, D dimensions per sample):

    log p_0(x0) = log N(x1; 0, I) + ∫₀¹ div v(x_t, t) dt,     log N(x1; 0, I) = −‖x1‖²/2 − (D/2)·log 2π.

We solve for x_t and the integral together, with the Euler or Heun of mariofm.sample on the joint state. The
divergence, at each velocity evaluation, is
  - exact for small inputs: tr J = Σ_i e_iᵀ J e_i, one vector-Jacobian product (vjp) per dimension;
  - Hutchinson's estimate for videos: tr J = E[εᵀ J ε] for any ε with E[εεᵀ] = I. We use Rademacher ε (±1
    entries, the least variance among such ε) and average `probes` of them, one vjp each. The probes are drawn
    once per trajectory and kept fixed along it: the integrand then stays a smooth function of t, and the
    estimate of log p_0 stays unbiased.
One log-likelihood costs 2·steps (Heun, with its final corrector) or steps (Euler) forward passes, each followed
by D (exact) or `probes` vjps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mariofm.flow import Velocity
from mariofm.sample import nfe, solve_ode

EXACT_DIVERGENCE_MAX_DIM = 64  # above this many dimensions per sample, default to Hutchinson's estimate


@dataclass
class Likelihood:
    log_prob: torch.Tensor  # (B,) log p_0(x0) in nats
    prior_log_prob: torch.Tensor  # (B,) log N(x1; 0, I)
    divergence: torch.Tensor  # (B,) ∫₀¹ div v dt, so that log_prob = prior_log_prob + divergence
    x1: torch.Tensor  # (B, ...) the noise the flow carries x0 to
    nfe: int  # velocity evaluations (forward passes)
    vjps_per_eval: int  # D when the divergence is exact, else the number of Hutchinson probes


@dataclass
class BitsPerDim:
    bpd: torch.Tensor  # (B,) bits per dimension of the 8-bit data (an upper bound, on average over u)
    likelihood: Likelihood  # of the dequantised data y in [-1, 1)


def _velocity_and_divergence(velocity: Velocity, x: torch.Tensor, t: torch.Tensor,
                             probes: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """v(x, t) and Σ_k ε_kᵀ (∂v/∂x) ε_k / K over the probes ε_k, or the exact trace when probes is None."""
    with torch.enable_grad():  # the sampler runs under no_grad; the divergence needs autograd
        x = x.detach().requires_grad_(True)
        v = velocity(x, t)
        if not v.requires_grad:
            raise ValueError("the velocity's output does not depend on x through autograd, so its divergence "
                             "cannot be computed: do not call the model under torch.no_grad/inference_mode")
        d = x[0].numel()
        count = d if probes is None else len(probes)
        div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for k in range(count):
            if probes is None:  # the k-th basis vector e_k in every sample: e_kᵀ J e_k = ∂v_k/∂x_k
                eps = torch.zeros_like(x).flatten(1)
                eps[:, k] = 1
                eps = eps.view_as(x)
            else:
                eps = probes[k]
            # one vjp gives εᵀJ for every sample at once, because the samples do not interact
            (eps_j,) = torch.autograd.grad(v, x, grad_outputs=eps, retain_graph=k < count - 1)
            div += (eps_j * eps).flatten(1).sum(1)
    return v.detach(), div if probes is None else div / count


def log_likelihood(velocity: Velocity, x0: torch.Tensor, steps: int = 100, solver: str = "heun", *,
                   exact_divergence: bool | None = None, probes: int = 1,
                   generator: torch.Generator | None = None, progress: bool = False) -> Likelihood:
    """log p_0(x0) in nats of each sample of x0 (B, ...) under the flow of `velocity(x, t)` (see module docstring).

    exact_divergence: None picks exact when a sample has at most 64 dimensions, else Hutchinson with `probes`
    Rademacher vectors per sample drawn with `generator` (same generator state → same estimate). `velocity` must
    be differentiable in x: put the model in eval mode, but do not wrap the call in no_grad/inference_mode.
    """
    if probes < 1:
        raise ValueError(f"probes={probes!r} must be a positive integer, e.g. probes=1")
    b, d = x0.shape[0], x0[0].numel()
    exact = d <= EXACT_DIVERGENCE_MAX_DIM if exact_divergence is None else exact_divergence
    eps = None
    if not exact:  # Rademacher: ±1 with probability 1/2 each, fixed along the trajectory
        where = generator.device if generator is not None else x0.device
        bits = torch.randint(0, 2, (probes, *x0.shape), generator=generator, device=where)
        eps = (2 * bits - 1).to(x0)

    def joint(state: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """d/dt of the joint state [x_t, ∫div] of shape (B, D + 1)."""
        v, div = _velocity_and_divergence(velocity, state[:, :d].view_as(x0), t, eps)
        return torch.cat([v.flatten(1), div[:, None]], dim=1)

    start = torch.cat([x0.flatten(1), x0.new_zeros(b, 1)], dim=1)
    end = solve_ode(joint, start, 0.0, 1.0, steps, solver, progress=progress)  # textbook Heun: 2 NFE per step
    x1, divergence = end[:, :d], end[:, d]
    prior = -0.5 * x1.square().sum(1) - 0.5 * d * math.log(2 * math.pi)
    return Likelihood(log_prob=prior + divergence, prior_log_prob=prior, divergence=divergence,
                      x1=x1.view_as(x0), nfe=nfe(steps, solver, final_corrector=True),
                      vjps_per_eval=d if exact else probes)


def dequantize(data: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """8-bit data → y = (x + u)/128 − 1 in [−1, 1), u ~ U[0, 1) per dimension.

    `data` is a uint8 tensor of levels x, or a float video in [−1, 1] made from them as x/127.5 − 1 (the
    levels are recovered by rounding; anything else is refused).
    """
    if data.dtype == torch.uint8:
        levels = data.double()
    elif data.is_floating_point():
        levels = (data.double() + 1) * 127.5
        if data.numel() and (levels.min() < -0.01 or levels.max() > 255.01
                             or (levels - levels.round()).abs().max() > 0.01):
            raise ValueError("a float video for bits_per_dim must hold 8-bit levels scaled as x/127.5 - 1; "
                             "pass the uint8 frames instead (permuted to the model's (B, C, T, H, W) layout)")
        levels = levels.round()
    else:
        raise ValueError(f"data has dtype {data.dtype}; pass uint8 levels or a float video in [-1, 1]")
    where = generator.device if generator is not None else data.device
    u = torch.rand(data.shape, generator=generator, device=where, dtype=torch.float64).to(data.device)
    return (levels + u) / 128 - 1


def bits_per_dim(velocity: Velocity, data: torch.Tensor, steps: int = 100, solver: str = "heun", *,
                 exact_divergence: bool | None = None, probes: int = 1, generator: torch.Generator | None = None,
                 progress: bool = False, dtype: torch.dtype = torch.float32) -> BitsPerDim:
    """Bits per dimension of 8-bit data (B, ...) in the model's layout, with uniform dequantisation.

    The model has a density p_Y on [−1, 1]^D; 8-bit levels x ∈ {0, ..., 255}^D need probabilities. Dequantise:
    y = (x + u)/128 − 1, u ~ U[0, 1)^D (`dequantize`). The discrete model P(x) = ∫_[0,1)^D p_X(x + u) du, where
    p_X(x + u) = p_Y(y)·(1/128)^D: the map [0, 256) → [−1, 1) shrinks every dimension by 128. By Jensen,

        −log₂ P(x) ≤ E_u[−log₂ p_Y(y)] + D·log₂ 128,   so   bpd = −log p_Y(y) / (D·ln 2) + 7

    per draw of u: an unbiased estimate (up to the ODE solver's error; with Hutchinson, over the probes too) of an
    upper bound on the code length of x. Lower is better. Yardsticks: a uniform density on [−1, 1)^D scores
    exactly 8 (raw bytes); an untrained, zero-velocity model is N(0, I) and scores ≈ 8.57 on uniform noise bytes.
    Frames (T, H, W, 3) from disk go in as `torch.from_numpy(frames).permute(3, 0, 1, 2)[None]`.
    """
    y = dequantize(data, generator).to(dtype)
    result = log_likelihood(velocity, y, steps, solver, exact_divergence=exact_divergence, probes=probes,
                            generator=generator, progress=progress)
    d = y[0].numel()
    return BitsPerDim(bpd=-result.log_prob / (d * math.log(2)) + 7, likelihood=result)


__all__ = ["Likelihood", "BitsPerDim", "log_likelihood", "dequantize", "bits_per_dim"]
