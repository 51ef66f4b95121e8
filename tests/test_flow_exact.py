"""The objective's exact values, dtypes and devices (mariofm.flow): the contracts the teaching tests in
test_flow.py take for granted. Written against the mutants `make mutation` left alive (docs/testing.md).

The "meta" device stands in for a GPU on a CPU-only machine: tensors there have shapes and devices but no
values, and mixing them with CPU tensors fails just as mixing CPU and CUDA tensors does.
"""

import re

import pytest
import torch

from mariofm.flow import (
    conditioning,
    fm_loss,
    interpolate,
    loss_by_t,
    sample_t,
    validation_loss,
    velocity_from_x0,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_half_precision_data_keeps_its_dtype():
    """Under autocast the data may be bf16 while t is float32: x_t and v must stay bf16 (not promoted)."""
    x0, noise = torch.rand(2, 3, dtype=torch.bfloat16), torch.randn(2, 3, dtype=torch.bfloat16)
    t = torch.tensor([0.25, 0.5])
    assert interpolate(x0, noise, t).dtype == torch.bfloat16
    assert velocity_from_x0(x0, noise, t).dtype == torch.bfloat16


def test_velocity_from_x0_floors_t_at_its_default_t_min():
    x_t, x0_hat = torch.randn(3, 4, generator=_gen()), torch.randn(3, 4, generator=_gen(1))
    v = velocity_from_x0(x_t, x0_hat, torch.tensor([0.5, 0.05, 0.01]))  # default t_min = 0.05
    torch.testing.assert_close(v, (x_t - x0_hat) / torch.tensor([[0.5], [0.05], [0.05]]))


def test_a_wrong_t_shape_names_both_shapes():
    x0 = torch.zeros(4, 3, 2)
    with pytest.raises(ValueError, match=re.escape("t must have shape (B,)=(4,), one time per sample; got (3,)")):
        interpolate(x0, x0, torch.zeros(3))


def test_sample_t_draws_these_exact_times():
    """uniform (the default kind) is torch.rand; logit-normal is sigmoid(mean + std·n) of the same generator."""
    assert torch.equal(sample_t(6, generator=_gen(3)), torch.rand(6, generator=_gen(3)))
    expected = torch.sigmoid(1.0 + 2.0 * torch.randn(6, generator=_gen(3)))
    assert torch.equal(sample_t(6, "logit_normal", generator=_gen(3), mean=1.0, std=2.0), expected)


def test_sample_t_with_a_cpu_generator_returns_times_on_the_requested_device():
    assert sample_t(4, generator=_gen(), device="meta").device.type == "meta"
    assert sample_t(4, "logit_normal", generator=_gen(), device="meta").device.type == "meta"
    assert sample_t(4, generator=_gen()).device.type == "cpu"


def test_fm_loss_draws_t_then_noise_of_the_data_dtype_from_the_generator():
    """The seeded draw is: t = rand(B) (float32), then ε = randn(x0.shape, dtype=x0.dtype), both from `generator`;
    t is returned in x0's dtype. A float32 ε for float64 data would be a different (coarser) draw."""
    x0 = torch.rand(3, 2, 5, generator=_gen(9), dtype=torch.float64) * 2 - 1
    seen = {}

    def model(x_t, t):
        seen["x_t"], seen["t"] = x_t, t
        return torch.zeros_like(x_t)

    loss, per_sample, t = fm_loss(model, x0, generator=_gen(4))
    g = _gen(4)
    t_exp = torch.rand(3, generator=g).double()
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    assert t.dtype == seen["t"].dtype == torch.float64 and torch.equal(t, t_exp)
    assert torch.equal(seen["x_t"], interpolate(x0, noise, t_exp))
    torch.testing.assert_close(per_sample, (noise - x0).square().flatten(1).mean(1), rtol=0, atol=0)
    assert loss.item() == pytest.approx(per_sample.mean().item(), rel=1e-12)


def test_fm_loss_moves_given_times_to_the_data_dtype_and_device():
    x0 = torch.rand(2, 3)
    seen = {}

    def model(x_t, t):
        seen["t"] = t
        return x_t * t[:, None]

    _, _, t = fm_loss(model, x0, t=torch.tensor([0.25, 0.75], dtype=torch.float64), noise=torch.randn(2, 3))
    assert t.dtype == seen["t"].dtype == torch.float32
    # data on another device (meta) with CPU times and a CPU generator: every tensor ends up beside the data
    meta = x0.to("meta")
    loss, per_sample, t = fm_loss(model, meta, t=torch.tensor([0.25, 0.75]), noise=torch.randn(2, 3).to("meta"))
    assert loss.device.type == per_sample.device.type == t.device.type == "meta"
    loss, per_sample, t = fm_loss(model, meta, generator=_gen())
    assert loss.device.type == t.device.type == "meta"


def test_fm_loss_measures_the_error_in_the_data_precision():
    """A float32 velocity for bf16 data is rounded to bf16 first: the loss is in the data's precision."""
    x0 = torch.rand(2, 8, generator=_gen()).bfloat16()
    _, per_sample, _ = fm_loss(lambda x, t: x.float() * 0.3, x0, generator=_gen(1))
    assert per_sample.dtype == torch.bfloat16


def test_a_model_of_the_wrong_shape_is_told_what_a_velocity_model_must_do():
    with pytest.raises(ValueError, match="a velocity model must return a tensor of its input's shape"):
        fm_loss(lambda x, t: x[:, :1], torch.zeros(2, 3))


def test_loss_by_t_has_ten_bins_by_default_even_when_the_last_ones_are_empty():
    t = torch.tensor([0.01, 0.12, 0.15, 0.29])
    centres, mean, count = loss_by_t(t, torch.tensor([1.0, 2.0, 4.0, 8.0]))
    assert centres.shape == mean.shape == count.shape == (10,)
    assert count.tolist() == [1, 2, 1, 0, 0, 0, 0, 0, 0, 0] and mean[1].item() == 3.0
    assert torch.isnan(mean[3:]).all()


# --- conditions and the validation loss -------------------------------------------------------------------------
class Conditioned(torch.nn.Module):
    """A velocity model that takes one condition per clip, as an action-conditioned model does, with dropout
    (which must be off while it is evaluated)."""
    conditions = ("actions",)

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(0.3))
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, x, t, actions):
        self.grad_seen = sorted(set(getattr(self, "grad_seen", [])) | {torch.is_grad_enabled()})
        self.batches = [*getattr(self, "batches", []), len(x)]
        return self.drop(self.scale * x * t.view(-1, 1, 1) + actions.view(-1, 1, 1))


def test_conditioning_picks_the_entries_the_model_names():
    batch = {"video": torch.zeros(2, 3, 4), "actions": torch.ones(2), "file": torch.zeros(2)}
    assert conditioning(Conditioned(), batch) == {"actions": batch["actions"]}
    assert conditioning(torch.nn.Linear(2, 2), batch) == {}  # no `conditions`: unconditional
    with pytest.raises(ValueError, match=re.escape("the model is conditioned on ['actions'], but the batch holds "
                                                   "only ['file', 'video']; missing ['actions']")):
        conditioning(Conditioned(), {"video": batch["video"], "file": batch["file"]})


def test_validation_loss_is_the_loss_on_a_fixed_t_grid_with_seeded_noise():
    """The mean over clips and over t = (k + ½)/t_grid of the flow-matching loss, the noise of each t drawn in
    turn from one generator seeded with `seed`; in eval mode (no dropout), then back in training mode."""
    clips = torch.rand(5, 3, 4, generator=_gen(1)) * 2 - 1
    actions = torch.linspace(-1, 1, 5)
    model = Conditioned().train()
    g, total = _gen(7), 0.0
    for k in range(4):
        noise = torch.randn(clips.shape, generator=g)
        t = torch.full((5,), (k + 0.5) / 4)
        v = 0.3 * interpolate(clips, noise, t) * t.view(-1, 1, 1) + actions.view(-1, 1, 1)
        total += (v - (noise - clips)).square().mean().item()
    value = validation_loss(model, clips, t_grid=4, seed=7, batch_size=2, cond={"actions": actions})
    assert value == pytest.approx(total / 4, rel=1e-6) and model.training
    assert validation_loss(model, clips, t_grid=4, seed=7, batch_size=5, cond={"actions": actions}) == \
        pytest.approx(value, rel=1e-6)  # batching does not change it
    assert validation_loss(model, clips, t_grid=4, seed=8, cond={"actions": actions}) != pytest.approx(value)
    default = validation_loss(model, clips, cond={"actions": actions})  # t_grid=8, seed=0
    assert default == validation_loss(model, clips, t_grid=8, seed=0, cond={"actions": actions})
    assert default != pytest.approx(validation_loss(model, clips, t_grid=7, seed=0, cond={"actions": actions}))
    assert model.grad_seen == [False]  # evaluated without building a graph
    model.batches = []
    validation_loss(model, clips, t_grid=2, cond={"actions": actions})
    assert model.batches == [4, 1, 4, 1]  # batches of 4 clips by default


def test_validation_loss_keeps_a_model_in_eval_mode_in_eval_mode():
    model = Conditioned().eval()
    validation_loss(model, torch.zeros(2, 3, 4), t_grid=2, cond={"actions": torch.zeros(2)})
    assert not model.training
