"""The flow-matching objective (mariofm.flow) and the Gaussian case solved on paper (mariofm.analytic)."""

import math

import pytest
import torch

from mariofm.analytic import gaussian_flow, gaussian_marginal, gaussian_velocity
from mariofm.flow import fm_loss, interpolate, loss_by_t, sample_t, target_velocity


def _batch(seed: int = 0, shape: tuple[int, ...] = (4, 3, 2, 5, 6)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) * 2 - 1, torch.randn(shape, generator=g)


def test_path_endpoints_are_data_and_noise():
    x0, noise = _batch()
    assert torch.equal(interpolate(x0, noise, torch.zeros(4)), x0)
    assert torch.equal(interpolate(x0, noise, torch.ones(4)), noise)
    # one t per sample: sample 1 at t=0 is data, sample 2 at t=1 is noise, whatever the others do
    x_t = interpolate(x0, noise, torch.tensor([0.3, 0.0, 1.0, 0.5]))
    assert torch.equal(x_t[1], x0[1]) and torch.equal(x_t[2], noise[2])
    assert torch.allclose(x_t[3], (x0[3] + noise[3]) / 2)


def test_path_derivative_is_the_target_velocity():
    x0, noise = _batch()
    t = torch.tensor([0.1, 0.4, 0.7, 0.95])
    # forward-mode derivative of x_t with respect to each sample's own t
    _, dxdt = torch.autograd.functional.jvp(lambda t: interpolate(x0, noise, t), t, torch.ones(4))
    assert torch.allclose(dxdt, target_velocity(x0, noise), atol=1e-6)


def test_oracle_that_knows_x0_and_noise_has_zero_loss():
    x0, noise = _batch()
    oracle = lambda x_t, t: noise - x0  # noqa: E731
    loss, per_sample, t = fm_loss(oracle, x0, noise=noise, generator=torch.Generator().manual_seed(1))
    assert loss.item() == 0 and per_sample.shape == (4,) and torch.all(per_sample == 0)
    # and a model that is off by 0.5 everywhere pays exactly 0.25 per sample
    loss, per_sample, _ = fm_loss(lambda x_t, t: noise - x0 + 0.5, x0, noise=noise, t=t)
    assert torch.allclose(per_sample, torch.full((4,), 0.25)) and math.isclose(loss.item(), 0.25, rel_tol=1e-6)


def test_model_sees_the_interpolated_input_and_the_given_times():
    x0, noise = _batch()
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    seen = {}

    def model(x_t, t_in):
        seen["x_t"], seen["t"] = x_t, t_in
        return torch.zeros_like(x_t)

    loss, per_sample, t_used = fm_loss(model, x0, t=t, noise=noise)
    assert torch.equal(seen["t"], t) and torch.equal(t_used, t)
    assert torch.equal(seen["x_t"], interpolate(x0, noise, t))
    # the zero model's loss is the mean square of the target velocity
    assert torch.allclose(per_sample, (noise - x0).square().flatten(1).mean(1))
    assert per_sample.requires_grad is False and torch.isclose(loss, per_sample.mean())


def test_a_weight_makes_each_samples_loss_the_weighted_mean_of_its_squared_errors():
    x0, noise = _batch()
    t = torch.full((x0.shape[0],), 0.5)
    off = torch.arange(x0[0].numel(), dtype=torch.float32).view(1, *x0.shape[1:]) / x0[0].numel()
    model = lambda x_t, t: noise - x0 + off  # noqa: E731  (squared error off² at every place of every sample)
    weight = 1 + torch.rand(x0.shape[0], 1, *x0.shape[2:], generator=torch.Generator().manual_seed(2))  # per place
    loss, per_sample, _ = fm_loss(model, x0, t=t, noise=noise, weight=weight)
    w = weight.expand_as(x0).flatten(1)
    expected = (w * off.square().flatten(1)).sum(1) / w.sum(1)
    assert per_sample.shape == (x0.shape[0],) and torch.allclose(per_sample, expected)
    assert torch.isclose(loss, expected.mean())
    # a weight of another dtype (a float64 or integer mask) is taken in the error's precision
    assert fm_loss(model, x0, t=t, noise=noise, weight=weight.double())[1].dtype == x0.dtype
    plain = fm_loss(model, x0, t=t, noise=noise)[1]  # a weight changes the answer: it is not the plain mean
    assert not torch.allclose(per_sample, plain) and torch.allclose(plain, off.square().mean().expand(x0.shape[0]))


def test_per_sample_loss_carries_gradients():
    x0, noise = _batch()
    scale = torch.nn.Parameter(torch.tensor(0.5))
    loss, per_sample, _ = fm_loss(lambda x_t, t: scale * x_t, x0, noise=noise,
                                  generator=torch.Generator().manual_seed(0))
    assert per_sample.requires_grad  # documented: not detached, so it can be reweighted
    loss.backward()
    assert scale.grad is not None and scale.grad.abs() > 0


def test_time_sampling_distributions():
    g = torch.Generator().manual_seed(0)
    uniform = sample_t(20000, "uniform", generator=g)
    assert uniform.min() >= 0 and uniform.max() < 1 and abs(uniform.mean().item() - 0.5) < 0.01
    logit = sample_t(20000, "logit_normal", generator=g)
    assert logit.min() > 0 and logit.max() < 1
    assert abs(logit.median().item() - 0.5) < 0.01
    # logit-normal is peaked in the middle: fewer samples in the outer fifths than uniform's 40 %
    assert ((logit < 0.2) | (logit > 0.8)).float().mean() < 0.25
    shifted = sample_t(20000, "logit_normal", generator=g, mean=1.0)
    assert abs(shifted.median().item() - torch.sigmoid(torch.tensor(1.0)).item()) < 0.01
    with pytest.raises(ValueError, match="logit_normal"):
        sample_t(3, "lognormal")


def test_seeded_loss_is_deterministic():
    x0, _ = _batch()
    conv = torch.nn.Conv3d(3, 3, 1)
    model = lambda x_t, t: conv(x_t) * t[:, None, None, None, None]  # noqa: E731
    runs = [fm_loss(model, x0, time_sampling=kind, generator=torch.Generator().manual_seed(seed))
            for kind, seed in [("uniform", 7), ("uniform", 7), ("uniform", 8), ("logit_normal", 7)]]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][2], runs[1][2])
    assert not torch.equal(runs[0][2], runs[2][2]) and not torch.equal(runs[0][0], runs[2][0])
    assert not torch.equal(runs[0][2], runs[3][2])


def test_bad_inputs_say_what_is_wrong():
    x0, noise = _batch()
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        interpolate(x0, noise, torch.zeros(3))
    with pytest.raises(ValueError, match="noise has shape"):
        fm_loss(lambda x, t: x, x0, noise=noise[:, :2])
    with pytest.raises(ValueError, match="model returned shape"):
        fm_loss(lambda x, t: x[:, :1], x0)


def test_loss_by_t_bins():
    t = torch.tensor([0.05, 0.15, 0.12, 0.99, 1.0, 0.0])
    loss = torch.tensor([1.0, 2.0, 4.0, 5.0, 7.0, 3.0], requires_grad=True)
    centres, mean, count = loss_by_t(t, loss, bins=5)
    assert torch.allclose(centres, torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9], dtype=torch.float64))
    assert count.tolist() == [4, 0, 0, 0, 2]  # t = 1 lands in the last bin
    assert mean[0].item() == pytest.approx(2.5) and mean[4].item() == pytest.approx(6.0)
    assert torch.isnan(mean[1:4]).all()
    with pytest.raises(ValueError, match="shape"):
        loss_by_t(t, loss[:3])


# --- the Gaussian case: x0 ~ N(μ, s²) per dimension ------------------------------------------------------------
MU = torch.tensor([1.0, -0.5, 0.0, 2.0], dtype=torch.float64)
S = torch.tensor([0.5, 1.0, 2.0, 0.8], dtype=torch.float64)


def _gaussian_data(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return MU + S * torch.randn(n, 4, generator=g, dtype=torch.float64)


def test_gaussian_velocity_is_the_derivative_of_the_gaussian_flow():
    z = torch.randn(5, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.tensor([0.0, 0.2, 0.5, 0.9, 1.0], dtype=torch.float64)
    _, dxdt = torch.autograd.functional.jvp(lambda t: gaussian_flow(MU, S, z, t), t, torch.ones_like(t))
    assert torch.allclose(gaussian_velocity(MU, S)(gaussian_flow(MU, S, z, t), t), dxdt, atol=1e-12)
    assert torch.allclose(gaussian_flow(MU, S, z, torch.ones(5, dtype=torch.float64)), z)
    assert torch.allclose(gaussian_flow(MU, S, z, torch.zeros(5, dtype=torch.float64)), MU + S * z)


def test_gaussian_marginal_matches_the_path_statistics():
    n = 200_000
    x0, noise = _gaussian_data(n), torch.randn(n, 4, generator=torch.Generator().manual_seed(1),
                                                 dtype=torch.float64)
    t = torch.full((n,), 0.3, dtype=torch.float64)
    x_t = interpolate(x0, noise, t)
    mean, std = gaussian_marginal(MU, S, torch.tensor(0.3, dtype=torch.float64))
    assert torch.allclose(x_t.mean(0), mean, atol=0.01) and torch.allclose(x_t.std(0), std, rtol=0.01)


def test_exact_gaussian_field_reaches_the_minimum_loss_and_perturbations_cost_their_square():
    """The minimum is π·s/2 per dimension; a field off by δ pays E δ² more (the cross term vanishes)."""
    n = 100_000
    x0 = _gaussian_data(n)
    g = torch.Generator().manual_seed(3)
    t, noise = torch.rand(n, generator=g, dtype=torch.float64), torch.randn(n, 4, generator=g, dtype=torch.float64)
    exact = gaussian_velocity(MU, S)

    def loss(field) -> float:
        return fm_loss(field, x0, t=t, noise=noise)[0].item()

    best = loss(exact)
    assert best == pytest.approx((math.pi * S / 2).mean().item(), rel=0.01)
    for delta in (0.3, -0.3, 0.1):
        assert loss(lambda x, t, d=delta: exact(x, t) + d) == pytest.approx(best + delta**2, abs=0.002)
    # a wrong slope or a wrong mean (the field of N(μ', s'²)) is worse too
    for wrong in (gaussian_velocity(MU, S * 1.3), gaussian_velocity(MU + 0.2, S), gaussian_velocity(MU, S * 0.8)):
        assert loss(wrong) > best + 0.005
    with pytest.raises(ValueError, match="s > 0"):
        gaussian_velocity(0.0, torch.tensor([1.0, 0.0]))
