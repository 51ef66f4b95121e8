"""The samplers' exact steps, defaults and side effects (mariofm.sample), written against the mutants
`make mutation` left alive; test_sample.py checks them against torchdiffeq and the exact Gaussian flow."""

import numpy as np
import pytest
import torch

from mariofm.config import preset
from mariofm.sample import nfe, noise_for, randn_rows, sample, sample_videos, solve_ode
from mariofm.video import to_uint8


def test_nfe_defaults_to_heun_without_the_final_corrector():
    assert nfe(5) == 9 and nfe(5, "heun") == 9 and nfe(5, "heun", final_corrector=True) == 10
    assert nfe(5, "euler") == nfe(5, "euler", final_corrector=True) == 5


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_one_step_is_one_euler_step_from_t_1(solver):
    """steps=1 is allowed; by default Heun's only step skips its corrector, so it is x1 − v(x1, 1)."""
    x1 = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    seen = []

    def field(x, t):
        seen.append(t.item())
        return 3 * x + t[:, None]

    assert torch.equal(sample(field, x1, 1, solver), x1 - (3 * x1 + 1))
    assert seen == [1.0]


def test_textbook_heun_step_by_hand():
    """One Heun step from t=1 to t=0.5 on v = x·t: predictor x̃ = x − ½·x, corrector slope (x + x̃·½) / 2."""
    x = torch.tensor([[2.0]], dtype=torch.float64)
    out = solve_ode(lambda x, t: x * t[:, None], x, 1.0, 0.5, 1)  # Heun with its corrector is the default
    predictor = x - 0.5 * x
    assert torch.equal(out, x - 0.5 * (x * 1.0 + predictor * 0.5) / 2)


def test_progress_bar_only_when_asked(capsys):
    x1 = torch.zeros(2, 3)
    sample(lambda x, t: x, x1, 3)
    solve_ode(lambda x, t: x, x1, 0.0, 1.0, 2)
    assert capsys.readouterr().err == ""
    sample(lambda x, t: x, x1, 3, "heun", progress=True)
    err = capsys.readouterr().err
    assert "heun 1→0" in err and "0/3" in err
    assert err.endswith("\r") and "\n" not in err  # the finished bar is erased, not left behind as a line
    solve_ode(lambda x, t: x, x1, 0.0, 1.0, 2, "euler", progress=True)
    assert "euler 0→1" in capsys.readouterr().err


def test_times_are_made_on_the_state_device():
    """Each t handed to the velocity lives beside x (meta stands in for a GPU): a CPU t would not mix."""
    x1 = torch.zeros(4, 3, device="meta")
    out = sample(lambda x, t: x * t[:, None], x1, 2, "heun", final_corrector=True)
    assert out.device.type == "meta" and out.shape == (4, 3)


def test_sampling_builds_no_graph_even_for_a_trainable_field():
    w = torch.nn.Parameter(torch.tensor(0.5))
    out = sample(lambda x, t: w * x, torch.ones(2, 3), 3)
    assert not out.requires_grad and out.grad_fn is None


def test_a_velocity_of_the_wrong_shape_is_told_what_it_must_return():
    with pytest.raises(ValueError, match=r"returned shape \(2, 1\) for input \(2, 3\); it must return a tensor "
                                         "of its input's shape"):
        solve_ode(lambda x, t: x[:, :1], torch.zeros(2, 3), 0.0, 1.0, 2)


# --- videos from noise ---------------------------------------------------------------------------------------
def test_noise_for_is_a_seeded_draw_of_the_config_clip_shape():
    cfg = preset("smoke")
    noise = noise_for(cfg, 3, seed=4)
    assert noise.shape == (3, 3, cfg.sequence_length, cfg.video_height, cfg.video_width)
    assert torch.equal(noise, torch.randn(noise.shape, generator=torch.Generator().manual_seed(4)))


def test_randn_rows_draws_each_row_from_its_own_generator():
    """One generator: one draw of the whole shape. A list: row j is generator j's draw alone, so it does not change
    with the rows beside it (a rollout's starts, mariofm.rollout)."""
    def gens(*seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    rows = randn_rows((3, 2, 5), gens(7, 8, 9))
    assert rows.shape == (3, 2, 5) and rows.dtype == torch.float32
    for j, s in enumerate((7, 8, 9)):
        assert torch.equal(rows[j], torch.randn((1, 2, 5), generator=gens(s)[0])[0])
    assert torch.equal(randn_rows((2, 2, 5), gens(8, 9)), rows[1:])
    assert torch.equal(randn_rows((3, 2, 5), gens(7)[0]), torch.randn((3, 2, 5), generator=gens(7)[0]))
    assert not torch.equal(randn_rows((3, 2, 5), gens(7)[0]), rows)
    with pytest.raises(ValueError, match="2 generators for 3 rows"):
        randn_rows((3, 2, 5), gens(7, 8))


class Conditioned(torch.nn.Module):
    conditions = ("actions",)

    def __init__(self):
        super().__init__()
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, x, t, actions):
        return self.drop(-x * t.view(-1, 1, 1, 1, 1) + actions.view(-1, 1, 1, 1, 1))


def test_sample_videos_samples_in_batches_with_each_clips_own_condition():
    """Batches of 2 give what one batch gives: uint8 (N, T, H, W, 3) of `sample` with Heun (the default), each
    clip with its own row of `cond`, in eval mode (no dropout); the model goes back to training mode."""
    noise = torch.randn(5, 3, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    actions = torch.linspace(-0.8, 0.8, 5)
    model = Conditioned().train()
    expected = to_uint8(sample(lambda x, t: -x * t.view(-1, 1, 1, 1, 1) + actions.view(-1, 1, 1, 1, 1), noise, 3))
    videos = sample_videos(model, noise, 3, batch_size=2, cond={"actions": actions})
    assert videos.dtype == np.uint8 and videos.shape == (5, 2, 4, 4, 3)
    np.testing.assert_array_equal(videos, expected)
    assert model.training
    euler = sample_videos(model, noise, 3, "euler", cond={"actions": actions})
    assert not np.array_equal(euler, videos)


def test_sample_videos_takes_8_clips_at_a_time_and_shows_progress_only_when_asked(capsys):
    seen = []

    class Field(torch.nn.Module):
        def forward(self, x, t):
            seen.append(len(x))
            return -x

    field = Field()
    sample_videos(field, torch.zeros(10, 3, 1, 2, 2), 1, "euler")
    assert seen == [8, 2] and capsys.readouterr().err == ""
    sample_videos(field, torch.zeros(2, 3, 1, 2, 2), 2, "euler", progress=True)
    assert "euler 1→0" in capsys.readouterr().err
