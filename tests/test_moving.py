"""The pixels the camera does not explain (mariofm.moving) and the loss that weighs them (cfg.moving_weight)."""

from __future__ import annotations

import copy
import functools

import pytest
import torch

from mariofm.config import preset
from mariofm.device import Dist
from mariofm.flow import fm_loss, sample_t
from mariofm.metrics import hud_height
from mariofm.moving import MOVING_THRESHOLD, SPREAD, loss_weight, moving_pixels
from mariofm.schedule import Budget
from mariofm.state import Run
from mariofm.train import train_step

H, W = 60, 64
HUD = hud_height(H)  # 8 rows


def scene(width: int, seed: int = 0, run: int = 1) -> torch.Tensor:
    """(3, H, width) in [-1, 0]: random tiles `run` pixels wide, darker than anything the tests add."""
    g = torch.Generator().manual_seed(seed)
    tiles = torch.randint(0, 9, (3, H, -(-width // run)), generator=g) / 8 - 1
    return tiles.repeat_interleave(run, dim=2)[..., :width]


def with_hud_of(frame: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """`frame` with the HUD rows of `other`: the HUD does not move with the camera."""
    frame = frame.clone()
    frame[:, :HUD] = other[:, :HUD]
    return frame


@pytest.mark.parametrize("s", [0, 1, 3, 8, -2])
def test_a_frame_the_camera_moved_does_not_move_nor_do_the_columns_it_brings_in(s):
    world = scene(W + abs(s))
    new = slice(W, None) if s >= 0 else slice(0, -s)
    world[:, :, new] = 1.0  # what the camera brings in: a colour the frame before does not hold
    before, after = (world[:, :, :W], world[:, :, s:]) if s >= 0 else (world[:, :, -s:], world[:, :, :W])
    m = moving_pixels(before[None], with_hud_of(after, before)[None])
    assert m.shape == (1, 1, H, W) and not m.any()


def test_a_sprite_over_a_moving_scene_is_what_moves_and_so_is_a_changed_hud():
    world = scene(W + 2, seed=1)
    before = world[:, :, :W]
    after = with_hud_of(world[:, :, 2:], before)
    after[:, 30:34, 20:24] = 1.0  # Mario, say: not in the frame before at any shift
    after[0, 3, 50] = 1.0  # a digit of the timer changes
    m = moving_pixels(before[None], after[None])[0, 0]
    expected = torch.zeros(H, W)
    expected[30:34, 20:24] = expected[3, 50] = 1.0
    assert m.equal(expected)


@pytest.mark.parametrize("fine_shift", [1, 2, 3, 6])
def test_a_camera_move_of_a_fraction_of_a_pixel_is_not_moving(fine_shift):
    """The game scrolls by pixels of 256; at 64 wide a move of one of them is a quarter pixel, which area resizing
    turns into a blend of two neighbours: a blend of two whole shifts, which moving_pixels tries."""
    fine = scene(4 * W + 8, seed=2, run=4)  # a colour per pixel of 64: a move of 256's pixels is an exact blend
    coarse = lambda x0: fine[:, :, x0:x0 + 4 * W].unflatten(2, (W, 4)).mean(3)  # noqa: E731  area resize
    before = coarse(0)
    after = with_hud_of(coarse(fine_shift), before)
    m = moving_pixels(before[None], after[None])[0, 0]
    assert not m.any()
    # the same frames compared at whole shifts only would call much of the scene moving
    whole = torch.stack([(after - torch.roll(before, -s, 2)).abs().amax(0) for s in (0, 1, 2)]).amin(0)
    assert (whole[HUD:, : W - 2] > 24 / 127.5).float().mean() > 0.2


def test_the_weight_is_one_plus_alpha_where_pixels_move_widened_by_the_spread():
    world = scene(W + 1, seed=3)
    before, after = world[:, :, :W], with_hud_of(world[:, :, 1:], world[:, :, :W])
    after[:, 40:44, 10:14] = 1.0
    frames = torch.stack([before, after], dim=1)[None]  # (1, 3, 2, H, W)
    w = loss_weight(frames, 4.0)
    assert w.shape == (1, 1, 1, H, W)
    assert torch.equal(w[0, 0, 0], 1 + 4 * moving_pixels(before[None], after[None])[0, 0])
    expected = torch.ones(H, W)
    expected[40:44, 10:14] = 5.0
    assert torch.equal(w[0, 0, 0], expected)
    expected[39:45, 9:15] = 5.0  # one pixel more on every side
    assert torch.equal(loss_weight(frames, 4.0, spread=1)[0, 0, 0], expected)
    # of more frames, the last two: a frame in front of them changes nothing
    longer = torch.cat([torch.full_like(frames[:, :, :1], 1.0), frames], dim=2)
    assert torch.equal(loss_weight(longer, 4.0), w)
    with pytest.raises(ValueError, match=r"before \(1, 3, 60, 64\) and after \(1, 3, 60, 60\) must both be"):
        moving_pixels(before[None], after[None, :, :, :60])


def test_a_colour_off_by_the_threshold_is_still_the_scene_and_one_level_more_moves():
    before = torch.zeros(1, 3, H, W)
    after = before.clone()
    after[0, 1, 30, 20] = MOVING_THRESHOLD  # 24 of 255 levels off in one colour: within the tolerance
    after[0, 2, 30, 40] = MOVING_THRESHOLD + 1 / 127.5  # 25 levels off: moves
    m = moving_pixels(before, after)[0, 0]
    assert m.sum() == 1 and m[30, 40] == 1


# --- the weighted loss --------------------------------------------------------------------------------------
def test_the_weighted_loss_is_the_weighted_mean_of_the_squared_error():
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.rand(2, 3, 1, 4, 5, generator=g) * 2 - 1, torch.randn(2, 3, 1, 4, 5, generator=g)
    zero = lambda x_t, t: torch.zeros_like(x_t)  # noqa: E731  its error is v* = noise - x0 itself
    weight = 1 + 3 * (torch.rand(2, 1, 1, 4, 5, generator=g) > 0.7).float()
    t = torch.tensor([0.2, 0.9])
    _, per_sample, _ = fm_loss(zero, x0, t=t, noise=noise, weight=weight)
    error = (noise - x0).square()
    expected = (weight * error).sum((1, 2, 3, 4)) / weight.expand_as(error).sum((1, 2, 3, 4))
    torch.testing.assert_close(per_sample, expected)
    _, plain, _ = fm_loss(zero, x0, t=t, noise=noise)
    _, ones, _ = fm_loss(zero, x0, t=t, noise=noise, weight=torch.ones(1))
    _, scaled, _ = fm_loss(zero, x0, t=t, noise=noise, weight=10 * weight)
    torch.testing.assert_close(ones, plain)
    torch.testing.assert_close(scaled, per_sample)
    assert not torch.allclose(per_sample, plain)


@pytest.mark.parametrize("moving_from", ["target", "context"])
def test_the_step_weighs_the_pixels_that_move_in_the_frames_it_is_told(moving_from):
    """With moving_weight the step's loss is fm_loss weighted by loss_weight of two frames: the REAL frame before
    the target and the target ("target"), or the last two context frames the model reads ("context", widened by
    SPREAD), also where the model's own frame took the place of the real one (own_frames)."""
    cfg = preset("world-smoke", batch_size=2, own_frames=1, own_share=0.5, context_noise=0.0, play_noise=0.0,
                 moving_weight=4.0, moving_from=moving_from)
    run = Run.create(cfg, torch.device("cpu"), Budget(steps=10), 10)
    torch.nn.init.normal_(run.model.head[-1].weight, std=0.1)
    run.ema.module.load_state_dict(run.model.state_dict())
    before = copy.deepcopy(run.model)
    h, w, k = cfg.video_height, cfg.video_width, cfg.context_frames + 1
    g = torch.Generator().manual_seed(7)
    frames = [torch.randint(0, 9, (2, 3, h, w), generator=g) / 8 - 1]
    for _ in range(k):  # each frame the one before moved by the camera, under a HUD that stays
        frames.append(torch.cat([frames[-1][:, :, : hud_height(h)], frames[-1][:, :, hud_height(h):].roll(-1, -1)], 2))
    frames = torch.stack(frames, 2)
    context, video = frames[:, :, :k].clone(), frames[:, :, k:].clone()
    for j in range(k):  # and a sprite that moves 5 rows down per frame
        context[:, :, j, 5 * j + 5:5 * j + 9, 5:9] = 1.0
    video[:, :, :, 5 * k + 5:5 * k + 9, 15:19] = 1.0
    batch = {"video": video, "context": context, "actions": (torch.rand(2, k + 1, 8, generator=g) > 0.5).float()}
    from mariofm.own_frames import own_context

    noise_gen = torch.Generator().manual_seed(cfg.seed + 1)
    ctx, bits, _ = own_context(run.ema.module, batch["context"], batch["actions"], 1, 1, noise_gen)
    noise = torch.randn((2, 3, 1, h, w), generator=noise_gen)
    t = sample_t(2, cfg.time_sampling, generator=noise_gen)
    if moving_from == "target":
        weight = loss_weight(torch.cat([context[:, :, -1:], video], 2), 4.0)
        assert torch.equal(weight[:, 0, 0, 5 * k + 5:5 * k + 9, 15:19], torch.full((2, 4, 4), 5.0))  # the sprite
    else:
        weight = loss_weight(ctx, 4.0, spread=SPREAD)
        assert torch.equal(weight[1, 0, 0, 5 * k:5 * k + 4, 5:9], torch.full((4, 4), 5.0))  # the sprite
        assert not torch.equal(weight[0], weight[1])  # sample 0 reads a frame of the model's own
    assert (weight[1] > 1).float().mean() < 0.15  # and little else
    _, per_sample, _ = train_step(run.model, run, batch, Dist(), torch.device("cpu"))
    velocity = functools.partial(before, context=ctx, actions=bits)
    _, expected, _ = fm_loss(velocity, video, t=t, noise=noise, weight=weight)
    _, plain, _ = fm_loss(velocity, video, t=t, noise=noise)
    torch.testing.assert_close(per_sample, expected.detach(), rtol=1e-5, atol=1e-7)
    assert not torch.allclose(per_sample, plain.detach(), rtol=1e-3)
