"""Flow matching solved on paper: for Gaussian data the optimal velocity, the flow and the loss are known.

Data x0 ~ N(μ, s²) independently in every dimension, noise ε ~ N(0, 1). The path x_t = (1 − t)·x0 + t·ε is a
sum of independent Gaussians, so it is Gaussian too:

    x_t ~ N(m_t, σ_t²),   m_t = (1 − t)·μ,   σ_t² = (1 − t)²·s² + t².

The best velocity a model can learn is v(x, t) = E[ε − x0 | x_t = x]. (ε − x0, x_t) are jointly Gaussian with
E[ε − x0] = −μ and Cov(ε − x0, x_t) = t − (1 − t)·s², and for jointly Gaussian (a, b), E[a | b] = E a +
Cov(a, b)/Var(b)·(b − E b):

    v(x, t) = −μ + (t − (1 − t)·s²) / σ_t² · (x − m_t).

Since σ_t·dσ_t/dt = t − (1 − t)·s², this is v = dm_t/dt + (dσ_t/dt)·(x − m_t)/σ_t: the flow keeps the standardised
position z = (x − m_t)/σ_t fixed, x_t = m_t + σ_t·z. It carries noise z (t = 1) to μ + s·z (t = 0), a sample of
the data. Its divergence, Σ_dims (t − (1 − t)·s²)/σ_t², does not depend on x.

No model beats this field, and it does not reach zero loss: what is left is E[Var(ε − x0 | x_t)] = s²/σ_t² per
dimension, and with t ~ U[0, 1], ∫₀¹ s² / ((1 − t)²s² + t²) dt = π·s/2. Standard normal data: loss π/2 ≈ 1.571.
"""

from __future__ import annotations

import torch

from mariofm.flow import Velocity, broadcast_t


def gaussian_marginal(mu: float | torch.Tensor, s: float | torch.Tensor, t: torch.Tensor,
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(m_t, σ_t) of x_t for data N(μ, s²): m_t = (1 − t)μ, σ_t = sqrt((1 − t)²s² + t²). Broadcasts like numpy."""
    return (1 - t) * mu, ((1 - t) ** 2 * s**2 + t**2).sqrt()


def gaussian_velocity(mu: float | torch.Tensor, s: float | torch.Tensor) -> Velocity:
    """The exact flow-matching velocity for data N(μ, s²) per dimension (see the module docstring):

        v(x, t) = −μ + (t − (1 − t)·s²) / σ_t² · (x − (1 − t)·μ),   σ_t² = (1 − t)²·s² + t².

    μ and s (> 0) are floats or tensors shaped like one sample (x's dims after the batch). Returns a
    `velocity(x, t)` with x of shape (B, ...) and t of shape (B,), usable wherever the UNet is.
    """
    if torch.as_tensor(s).le(0).any():
        raise ValueError("gaussian_velocity needs a standard deviation s > 0 in every dimension")

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = broadcast_t(t, x).to(x.dtype)
        mean, std = gaussian_marginal(mu, s, t)
        return -mu + (t - (1 - t) * s**2) / std**2 * (x - mean)

    return velocity


def gaussian_flow(mu: float | torch.Tensor, s: float | torch.Tensor, z: torch.Tensor, t: torch.Tensor,
                  ) -> torch.Tensor:
    """The exact solution of dx/dt = gaussian_velocity(μ, s) through noise z at t = 1: x_t = m_t + σ_t·z.

    At t = 0 it is μ + s·z, the sample a perfect solver returns for noise z. t has shape (B,).
    """
    mean, std = gaussian_marginal(mu, s, broadcast_t(t, z).to(z.dtype))
    return mean + std * z


__all__ = ["gaussian_marginal", "gaussian_velocity", "gaussian_flow"]
