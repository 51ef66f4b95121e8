"""Log-likelihood and bits/dim (mariofm.likelihood) against Gaussian densities known in closed form."""

import math

import pytest
import torch

from mariofm.analytic import gaussian_velocity
from mariofm.likelihood import bits_per_dim, dequantize, log_likelihood

MU = torch.tensor([1.0, -0.5, 0.3, 2.0], dtype=torch.float64)
S = torch.tensor([0.6, 1.5, 0.8, 1.0], dtype=torch.float64)
# an orthogonal R makes the data N(Rμ, R diag(s²) Rᵀ): its Jacobian is not diagonal, so Hutchinson has variance
R = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64))[0]


def rotated_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The exact field of the rotated data: noise is isotropic, so v_R(x) = R v(Rᵀx) (rows: x R, then · Rᵀ)."""
    return gaussian_velocity(MU, S)(x @ R, t) @ R.T


def _data(n: int, seed: int = 1) -> torch.Tensor:
    return MU + S * torch.randn(n, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _true_log_prob(y: torch.Tensor) -> torch.Tensor:
    return torch.distributions.Normal(MU, S).log_prob(y).sum(1)


def test_exact_divergence_recovers_the_gaussian_log_density():
    y = _data(8)
    result = log_likelihood(gaussian_velocity(MU, S), y, steps=100, solver="heun")
    assert (result.log_prob - _true_log_prob(y)).abs().max() < 1e-3
    assert result.nfe == 200 and result.vjps_per_eval == 4  # 4 dims ≤ 64: exact by default
    # the flow carries data to its noise, and the pieces add up
    assert torch.allclose(result.x1, (y - MU) / S, atol=1e-3)
    assert torch.allclose(result.log_prob, result.prior_log_prob + result.divergence)


def test_error_shrinks_at_the_solvers_order():
    """4× the steps divides the error by about 4 (Euler, order 1) or 16 (Heun, order 2)."""
    y = _data(8)

    def error(solver: str, steps: int) -> float:
        result = log_likelihood(gaussian_velocity(MU, S), y, steps, solver)
        return (result.log_prob - _true_log_prob(y)).abs().max().item()

    for solver, order in (("euler", 1), ("heun", 2)):
        measured = math.log(error(solver, 40) / error(solver, 160)) / math.log(4)
        assert measured == pytest.approx(order, abs=0.15)


def test_rotated_gaussian_exact_and_hutchinson():
    x = _data(6) @ R.T  # samples of N(Rμ, R diag(s²) Rᵀ), whose log-density is that of xR under N(μ, s²)
    truth = _true_log_prob(x @ R)
    exact = log_likelihood(rotated_velocity, x, 50, exact_divergence=True)
    assert (exact.log_prob - truth).abs().max() < 1e-3
    one, many = (log_likelihood(rotated_velocity, x, 50, exact_divergence=False, probes=probes,
                                generator=torch.Generator().manual_seed(0)) for probes in (1, 64))
    assert one.vjps_per_eval == 1 and many.vjps_per_eval == 64
    one_error, many_error = ((r.log_prob - exact.log_prob).abs().max().item() for r in (one, many))
    assert one_error > 0.2  # one probe is noisy here...
    assert many_error < 0.3 and many_error < one_error / 2  # ...64 of them much less (std shrinks as 1/√64)


def test_hutchinson_is_unbiased():
    """512 copies of one point, each with its own probe: their mean is the exact value, within 4 std errors."""
    x = (_data(1) @ R.T).expand(512, 4).contiguous()
    exact = log_likelihood(rotated_velocity, x[:1], 50, exact_divergence=True).log_prob
    estimates = log_likelihood(rotated_velocity, x, 50, exact_divergence=False,
                               generator=torch.Generator().manual_seed(1)).log_prob
    assert estimates.std() > 0.05
    assert abs(estimates.mean() - exact) < 4 * estimates.std() / math.sqrt(512)


def test_rademacher_probes_are_exact_for_a_diagonal_jacobian():
    """εᵀ diag(a) ε = Σ a_i ε_i² = Σ a_i when every ε_i = ±1: the per-dimension Gaussian field needs one probe."""
    y = _data(4)
    exact = log_likelihood(gaussian_velocity(MU, S), y, 30, exact_divergence=True).log_prob
    hutch = log_likelihood(gaussian_velocity(MU, S), y, 30, exact_divergence=False,
                           generator=torch.Generator().manual_seed(0)).log_prob
    assert torch.allclose(hutch, exact, atol=1e-12)


def test_seeded_estimates_are_deterministic_and_parameters_untouched():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(81, 32), torch.nn.Tanh(), torch.nn.Linear(32, 80)).double()
    field = lambda x, t: net(torch.cat([x, t[:, None]], 1))  # noqa: E731
    x = torch.randn(3, 80, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    runs = [log_likelihood(field, x, 4, generator=torch.Generator().manual_seed(seed)) for seed in (5, 5, 6)]
    assert runs[0].vjps_per_eval == 1  # 80 dims > 64: Hutchinson by default
    assert torch.equal(runs[0].log_prob, runs[1].log_prob)
    assert not torch.equal(runs[0].log_prob, runs[2].log_prob)
    assert all(p.grad is None for p in net.parameters())  # only vjps with respect to x were taken
    assert not runs[0].log_prob.requires_grad


def test_bits_per_dim_of_a_known_density():
    """Standard normal data has v(x, t) = (2t − 1)/((1 − t)² + t²)·x and p_Y = N(0, I): bpd in closed form."""
    frames = torch.randint(0, 256, (2, 3, 2, 4, 4), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    result = bits_per_dim(gaussian_velocity(0.0, 1.0), frames, 100, exact_divergence=False,
                          generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    y = dequantize(frames, torch.Generator().manual_seed(7))  # the same draw of u
    d = y[0].numel()
    log_p = torch.distributions.Normal(0.0, 1.0).log_prob(y).flatten(1).sum(1)
    assert torch.allclose(result.bpd, -log_p / (d * math.log(2)) + 7, atol=1e-5)
    assert result.likelihood.nfe == 200


def test_an_untrained_model_scores_the_prior_on_noise_bytes():
    """v = 0 leaves p = N(0, I); for uniform bytes E[−log p(y)]/D = (log 2π + E y²)/2 with E y² = 1/3: ≈ 8.566."""
    frames = torch.randint(0, 256, (2, 3, 4, 16, 16), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    result = bits_per_dim(lambda x, t: 0 * x, frames, 2, generator=torch.Generator().manual_seed(0))
    expected = (math.log(2 * math.pi) + 1 / 3) / 2 / math.log(2) + 7
    assert result.bpd.tolist() == pytest.approx([expected] * 2, abs=0.01)
    assert result.likelihood.divergence.abs().max() == 0


def test_dequantize_stays_in_the_level_cell():
    levels = torch.arange(256, dtype=torch.uint8).reshape(2, 128)
    y = dequantize(levels, torch.Generator().manual_seed(0))
    assert y.min() >= -1 and y.max() < 1
    assert torch.equal(((y + 1) * 128).floor(), levels.double())  # u never leaves [0, 1)
    # a float video x/127.5 - 1 is read back to the same levels, so the same generator gives the same y
    as_float = levels.float() / 127.5 - 1
    assert torch.equal(dequantize(as_float, torch.Generator().manual_seed(0)), y)
    with pytest.raises(ValueError, match="uint8"):
        dequantize(levels.float() / 128 - 1)  # another scaling is refused, not silently misread


def test_a_velocity_without_autograd_is_refused():
    def frozen(x, t):
        with torch.no_grad():
            return -x

    with pytest.raises(ValueError, match="no_grad"):
        log_likelihood(frozen, _data(2), 2)
