"""The samplers (mariofm.sample): against torchdiffeq, against the exact Gaussian flow, and their orders."""

import numpy as np
import pytest
import torch
from torchdiffeq import odeint

from mariofm.analytic import gaussian_flow, gaussian_velocity
from mariofm.sample import nfe, sample, solve_ode, time_grid

MU = torch.tensor([1.0, -0.5, 0.0], dtype=torch.float64)
S = torch.tensor([0.5, 2.0, 0.8], dtype=torch.float64)


def _noise(n: int = 16, d: int = 3, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _mlp_field(seed: int = 0) -> torch.nn.Module:
    """A small nonlinear, time-dependent field standing in for the UNet."""

    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(seed)
            self.net = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.Tanh(), torch.nn.Linear(32, 3)).double()

        def forward(self, x, t):
            return self.net(torch.cat([x, t[:, None]], dim=1)) + torch.sin(3 * t)[:, None] * x

    return Field()


@pytest.mark.parametrize("solver, method", [("euler", "euler"), ("heun", "heun2")])
def test_matches_torchdiffeq_fixed_grid(solver, method):
    field, x1, steps = _mlp_field(), _noise(), 12
    path = []
    ours = sample(field, x1, steps, solver, final_corrector=True, callback=lambda i, t, x: path.append(x))
    grid = torch.linspace(1, 0, steps + 1, dtype=torch.float64)
    with torch.no_grad():
        theirs = odeint(lambda t, x: field(x, t.expand(x.shape[0])), x1, grid, method=method)
    assert (ours - theirs[-1]).abs().max() <= 1e-6
    assert (torch.stack(path) - theirs).abs().max() <= 1e-6  # every intermediate state too
    assert (ours - x1).abs().max() > 0.1  # the field really moved the points


def test_default_heun_ends_with_an_euler_step():
    """Like torchdiffeq's heun2 until the last step, which is one Euler step from the same state."""
    field, x1, steps = _mlp_field(), _noise(), 6
    path = []
    ours = sample(field, x1, steps, "heun", callback=lambda i, t, x: path.append(x))
    grid = torch.linspace(1, 0, steps + 1, dtype=torch.float64)
    with torch.no_grad():
        theirs = odeint(lambda t, x: field(x, t.expand(x.shape[0])), x1, grid, method="heun2")
        last = path[-2] + (0 - 1 / steps) * field(path[-2], torch.full((16,), 1 / steps, dtype=torch.float64))
    assert (torch.stack(path[:-1]) - theirs[:-1]).abs().max() <= 1e-6
    assert (ours - last).abs().max() <= 1e-12 and (ours - theirs[-1]).abs().max() > 1e-6


def test_exact_gaussian_flow_maps_noise_to_data():
    z = _noise()
    x0 = sample(gaussian_velocity(MU, S), z, 200, "heun")
    assert torch.allclose(x0, MU + S * z, atol=1e-4)
    # stopping early lands on the exact path at t_end
    half = sample(gaussian_velocity(MU, S), z, 100, "heun", t_end=0.5)
    assert torch.allclose(half, gaussian_flow(MU, S, z, torch.full((16,), 0.5, dtype=torch.float64)), atol=1e-4)


@pytest.mark.parametrize("solver, final_corrector, order", [("euler", False, 1), ("heun", False, 2),
                                                             ("heun", True, 2)])
def test_convergence_order(solver, final_corrector, order):
    """Error at t = 0 ∝ h^order: the slope of log error against log steps is −order (a last Euler step keeps 2)."""
    z, field = _noise(64), gaussian_velocity(MU, S)
    steps = [8, 16, 32, 64, 128]
    errors = [(sample(field, z, n, solver, final_corrector=final_corrector) - (MU + S * z)).abs().max().item()
              for n in steps]
    slope = np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert slope == pytest.approx(-order, abs=0.15)


@pytest.mark.parametrize("solver, final_corrector, expected", [("euler", False, 7), ("euler", True, 7),
                                                                ("heun", False, 13), ("heun", True, 14)])
def test_nfe_counts_the_calls_and_times_have_shape_b(solver, final_corrector, expected):
    calls = []

    def counting(x, t):
        calls.append(t)
        return -x

    sample(counting, _noise(5), 7, solver, final_corrector=final_corrector)
    assert len(calls) == nfe(7, solver, final_corrector=final_corrector) == expected
    assert all(t.shape == (5,) and t.dtype == torch.float64 for t in calls)
    # only textbook Heun asks for the velocity at t = 0
    assert calls[0][0].item() == 1.0 and calls[-1][0].item() == pytest.approx(0.0 if expected == 14 else 1 / 7)


def test_deterministic_and_graph_free():
    field, x1 = _mlp_field(), _noise()
    a, b = sample(field, x1, 5), sample(field, x1.clone(), 5)
    assert torch.equal(a, b) and not a.requires_grad
    assert not torch.equal(a, sample(field, _noise(seed=1), 5))


def test_callback_sees_every_grid_time():
    seen = []
    x1 = _noise()
    out = sample(lambda x, t: -x, x1, 4, "euler", callback=lambda i, t, x: seen.append((i, t, x)))
    assert [i for i, _, _ in seen] == [0, 1, 2, 3, 4]
    assert [t for _, t, _ in seen] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    assert torch.equal(seen[0][2], x1) and torch.equal(seen[-1][2], out)


def test_a_shifted_grid_puts_its_steps_near_the_data_and_mirrors_its_inverse():
    """t = s·u / (1 + (s − 1)·u): at s = 1/2 and 4 steps exactly 1, 3/5, 1/3, 1/7, 0; s and 1/s mirror each other
    (t_s(u) = 1 − t_{1/s}(1 − u)); s = 1 is torch.linspace bit for bit (the grid of earlier versions)."""
    assert time_grid(1.0, 0.0, 4, 0.5) == pytest.approx([1, 3 / 5, 1 / 3, 1 / 7, 0], abs=1e-15)
    assert time_grid(1.0, 0.0, 7) == torch.linspace(1, 0, 8, dtype=torch.float64).tolist()  # s = 1 by default
    assert time_grid(0.0, 1.0, 7, 1.0) == torch.linspace(0, 1, 8, dtype=torch.float64).tolist()  # 1 − u would not be
    assert time_grid(1.0, 0.0, 5, 3.0) == pytest.approx([1 - t for t in time_grid(1.0, 0.0, 5, 1 / 3)[::-1]])
    assert time_grid(0.0, 1.0, 4, 0.5)[0] == 0 and time_grid(0.0, 1.0, 4, 0.5)[-1] == 1  # ends kept either way
    for shift in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="positive number"):
            time_grid(1.0, 0.0, 4, shift)


@pytest.mark.parametrize("solver, method", [("euler", "euler"), ("heun", "heun2")])
def test_a_shifted_grid_matches_torchdiffeq_on_the_same_times(solver, method):
    field, x1, steps = _mlp_field(), _noise(), 6
    ours = sample(field, x1, steps, solver, final_corrector=True, shift=0.4)
    with torch.no_grad():
        theirs = odeint(lambda t, x: field(x, t.expand(x.shape[0])), x1,
                        torch.tensor(time_grid(1.0, 0.0, steps, 0.4), dtype=torch.float64), method=method)
    assert (ours - theirs[-1]).abs().max() <= 1e-6
    assert (ours - sample(field, x1, steps, solver, final_corrector=True)).abs().max() > 1e-3  # another grid


def test_solve_ode_runs_forwards_too():
    """0 → 1 on the Gaussian field carries data to its noise: the inverse of sampling, on a uniform grid."""
    seen = []
    solve_ode(lambda x, t: -x, _noise(), 0.0, 1.0, 4, "euler", callback=lambda i, t, x: seen.append(t))
    assert seen == [0.0, 0.25, 0.5, 0.75, 1.0]
    z = _noise()
    z_back = solve_ode(gaussian_velocity(MU, S), MU + S * z, 0.0, 1.0, 200, "heun")
    assert torch.allclose(z_back, z, atol=1e-4)


def test_bad_arguments_say_what_is_wrong():
    x1 = _noise()
    with pytest.raises(ValueError, match="solver"):
        sample(lambda x, t: x, x1, 4, "rk4")
    with pytest.raises(ValueError, match="positive integer"):
        sample(lambda x, t: x, x1, 0)
    with pytest.raises(ValueError, match="t_end"):
        sample(lambda x, t: x, x1, 4, t_end=1.0)
    with pytest.raises(ValueError, match="returned shape"):
        sample(lambda x, t: x[:, :1], x1, 4)


def test_renoised_steps_at_eta_0_are_euler_and_at_eta_1_sample_the_gaussian_as_ddpm_does():
    """sample_renoised: η = 0 is the Euler ODE; η = 1 (DDPM's ancestral steps) samples the data N(μ, s²) once
    the steps are small, and puts back noise on each step by ρ = σ(t')/σ(t) (a share 1 on every step, forgetting ε̂
    whole, would keep only about 0.7 of the spread)."""
    from mariofm.sample import sample_renoised

    field, x1 = gaussian_velocity(MU, S), _noise(40_000)
    for shift in (1.0, 0.5):
        euler = sample(field, x1[:1000], 4, "euler", shift=shift)
        assert torch.allclose(sample_renoised(field, x1[:1000], 4, 0.0, shift=shift), euler, atol=1e-12)
    x = sample_renoised(field, x1, 1000, 1.0, torch.Generator().manual_seed(1))
    assert (x.mean(0) - MU).abs().max() < 0.03 and (x.std(0) / S - 1).abs().max() < 0.015
    few = sample_renoised(field, x1, 4, 1.0, torch.Generator().manual_seed(1))  # 4 steps: drawn narrower
    assert (few.mean(0) - MU).abs().max() < 0.03
    assert (few.std(0) < sample(field, x1, 4, "euler").std(0)).all()


def test_renoised_steps_draw_from_the_generator_and_refuse_a_bad_eta():
    from mariofm.sample import sample_renoised

    field, x1 = gaussian_velocity(MU, S), _noise(4)
    runs = [sample_renoised(field, x1, 4, 0.5, torch.Generator().manual_seed(seed)) for seed in (1, 1, 2)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    rows = [torch.Generator().manual_seed(j) for j in range(4)]  # one generator per row: rows play alone
    alone = sample_renoised(field, x1[2:3], 4, 0.5, [torch.Generator().manual_seed(2)])
    assert torch.allclose(sample_renoised(field, x1, 4, 0.5, rows)[2:3], alone)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="must lie in \\[0, 1\\]"):
            sample_renoised(field, x1, 4, bad)
    with pytest.raises(ValueError, match="returned shape"):  # checked as sample checks it
        sample_renoised(lambda x, t: x[:, :1], x1, 4, 0.5)


def test_renoised_steps_by_value_as_the_docstring_writes_them():
    """Three steps on the uniform grid 1, 2/3, 1/3, 0 written out by hand: x̂0 = x − t·v, ε̂ = x + (1 − t)·v,
    ε̂ ← √(1 − c²)·ε̂ + c·z with c = η·√(1 − ρ²), ρ = σ(t')/σ(t), σ(t) = t/(1 − t) (ρ = 0 from t = 1), x ← (1 − t')·x̂0
    + t'·ε̂; no fresh noise on the last step (its t' = 0 keeps no noise) and none at all when η = 0."""
    from mariofm.sample import sample_renoised

    field, x1, eta = gaussian_velocity(MU, S), _noise(8), 0.7
    g, x = torch.Generator().manual_seed(3), x1
    for t, t_next in ((1.0, 2 / 3), (2 / 3, 1 / 3), (1 / 3, 0.0)):
        v = field(x, torch.full((8,), t, dtype=x.dtype))
        x0, eps = x - t * v, x + (1 - t) * v
        if t_next > 0:
            rho = 0.0 if t == 1 else (t_next / (1 - t_next)) / (t / (1 - t))
            c = eta * (1 - rho ** 2) ** 0.5
            eps = (1 - c ** 2) ** 0.5 * eps + c * torch.randn(x.shape, generator=g)
        x = (1 - t_next) * x0 + t_next * eps
    drawn = torch.Generator().manual_seed(3)
    assert torch.allclose(sample_renoised(field, x1, 3, eta, drawn), x, atol=1e-12)
    assert torch.equal(drawn.get_state(), g.get_state())  # two draws: none on the last step
    untouched = torch.Generator().manual_seed(3)
    euler = sample_renoised(field, x1, 3, 0.0, untouched)  # η = 0 draws nothing, and the default grid is uniform
    assert torch.equal(untouched.get_state(), torch.Generator().manual_seed(3).get_state())
    assert torch.allclose(euler, sample(field, x1, 3, "euler"), atol=1e-12)
