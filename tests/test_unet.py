"""The 3D UNet: shapes, the zero start, conditioning on t, frames, attention and recomputed activations."""

import re

import pytest
import torch
import torch.nn.functional as F

from mariofm.attention import SpatialAttention, TemporalAttention
from mariofm.config import preset
from mariofm.convs import TemporalConv
from mariofm.embedding import sinusoidal_embedding
from mariofm.unet import VideoUNet, count_parameters, finer_patches


def tiny(**overrides) -> VideoUNet:
    """A smoke-sized UNet whose zero-init output conv is perturbed, so its output depends on everything."""
    torch.manual_seed(0)
    model = VideoUNet(preset("smoke", **overrides))
    torch.nn.init.normal_(model.head[-1].weight, std=0.1)
    return model


def clip(b: int = 2, t: int = 4, h: int = 16, w: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, 3, t, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name, size", [("smoke", None), ("cpu", (2, 60, 64)), ("colab", (2, 32, 32)),
                                        ("seed", (2, 32, 32))])
def test_every_preset_maps_a_clip_to_a_velocity_of_the_same_shape(name, size):
    cfg = preset(name)
    t, h, w = size or (cfg.sequence_length, cfg.video_height, cfg.video_width)
    model = VideoUNet(cfg).eval()
    x = torch.randn(1, cfg.video_channels, t, h, w)
    with torch.no_grad():
        assert model(x, torch.rand(1)).shape == x.shape


def test_seed_preset_has_about_21M_parameters():
    n = count_parameters(VideoUNet(preset("seed")))
    assert 0.9 * 21e6 <= n <= 1.1 * 21e6, n


def test_untrained_model_predicts_zero_velocity():
    model = VideoUNet(preset("smoke"))
    x = clip()
    assert torch.equal(model(x, torch.rand(2)), torch.zeros_like(x))


@pytest.mark.parametrize("conv", ["3d", "2+1d"])
def test_gradient_reaches_every_parameter(conv):
    model = tiny(conv=conv, temporal_attention=True)
    model(clip(), torch.tensor([0.3, 0.8])).square().mean().backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"no gradient reached {dead}"


def test_output_depends_on_t_and_each_clip_uses_its_own_t():
    model, x = tiny(), clip()
    with torch.no_grad():
        both = model(x, torch.tensor([0.2, 0.7]))
        assert not torch.allclose(model(x, 0.2), model(x, 0.7))
        # a float, a 0-d tensor and a (B,) tensor are the same t; a clip's output ignores the other clip's t
        assert torch.equal(model(x, 0.2), model(x, torch.tensor(0.2)))
        torch.testing.assert_close(both[:1], model(x[:1], 0.2))
        torch.testing.assert_close(both[1:], model(x[1:], 0.7))


@pytest.mark.parametrize("conv", ["3d", "2+1d"])
@pytest.mark.parametrize("attention", [False, True])
def test_single_frame_clips_work(conv, attention):
    model, x = tiny(conv=conv, temporal_attention=attention), clip(t=1)
    out = model(x, torch.rand(2))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_conv_kinds_give_the_same_shape_and_2plus1d_has_fewer_weights():
    x = clip()
    full, factorised = tiny(conv="3d"), tiny(conv="2+1d")
    assert full(x, 0.5).shape == factorised(x, 0.5).shape == x.shape
    # per conv: 27·in·out weights against 9·in·out + 3·out·out
    assert count_parameters(factorised) < 0.6 * count_parameters(full)


def test_temporal_conv_is_a_3x1x1_conv3d_that_starts_as_the_identity():
    conv = TemporalConv(4)
    x = torch.randn(2, 4, 5, 3, 6)
    torch.testing.assert_close(conv(x), x)
    torch.nn.init.normal_(conv.weight)
    torch.nn.init.normal_(conv.bias)
    expected = F.conv3d(x, conv.weight[..., None], conv.bias, padding=(1, 0, 0))
    torch.testing.assert_close(conv(x), expected)


def test_temporal_attention_mixes_frames_but_not_pixels():
    torch.manual_seed(0)
    attn, x = TemporalAttention(32), torch.randn(1, 32, 6, 2, 2)
    y = x.clone()
    y[0, :, 0, 0, 0] += torch.randn(32)  # change the first frame at one pixel (not by a constant: LayerNorm)
    dx = (attn(y) - attn(x)).abs().amax(dim=1)  # (1, T, H, W)
    assert (dx[0, 1:, 0, 0] > 1e-4).all()  # every other frame of that pixel sees it
    assert dx[0, :, 1:, :].max() == 0 and dx[0, :, 0, 1].max() == 0  # no other pixel does


def test_temporal_attention_on_off_changes_parameters_and_output_not_shape():
    x = clip()
    plain, attended = tiny(), tiny(temporal_attention=True)
    assert count_parameters(attended) > count_parameters(plain)
    a, b = plain(x, 0.5), attended(x, 0.5)
    assert a.shape == b.shape and not torch.allclose(a, b)


def test_spatial_attention_mixes_places_but_not_frames():
    torch.manual_seed(0)
    attn, x = SpatialAttention(32), torch.randn(1, 32, 3, 4, 5)
    torch.nn.init.normal_(attn.proj.weight)  # it starts at zero
    y = x.clone()
    y[0, :, 0, 0, 0] += torch.randn(32)  # change one place of the first frame, in its top-left corner
    dx = (attn(y) - attn(x)).abs().amax(dim=1)  # (1, T, H, W)
    assert (dx[0, 0] > 1e-4).all()  # every place of that frame sees it, the far corner included
    assert dx[0, 1:].max() == 0  # no other frame does


def test_a_net_gains_spatial_attention_without_changing_what_it_computes():
    """train --init from a model without the block: its output projection starts at zero (mariofm.state)."""
    from mariofm.state import ADDED_AT_ZERO

    plain = VideoUNet(preset("world-smoke")).eval()
    torch.nn.init.normal_(plain.head[-1].weight, std=0.1)
    attended = VideoUNet(preset("world-smoke", spatial_attention=True)).eval()
    missing = attended.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert set(missing) == {k for k in attended.state_dict() if k.startswith("space_attn.")}
    assert all(k.startswith(ADDED_AT_ZERO) for k in missing)
    assert count_parameters(attended) > count_parameters(plain)
    x, context = torch.randn(2, 3, 1, 32, 32), torch.randn(2, 3, 2, 32, 32)
    actions = torch.zeros(2, 3, 8)
    same = plain(x, 0.5, context=context, actions=actions), attended(x, 0.5, context=context, actions=actions)
    assert torch.equal(*same)
    torch.nn.init.normal_(attended.space_attn.proj.weight, std=0.1)
    assert not torch.allclose(plain(x, 0.5, context=context, actions=actions),
                              attended(x, 0.5, context=context, actions=actions))
    deeper = VideoUNet(preset("world-smoke", channel_mults=(1, 2, 4), spatial_attention=True))
    assert deeper.space_attn.qkv.in_features == 4 * deeper.cfg.base_ch  # the lowest level's width
    assert deeper(x, 0.5, context=context, actions=actions).shape == x.shape


def test_a_world_model_passes_the_marks_of_its_own_frames_to_its_conditioning():
    """mark_own (mariofm.conditioning): the net hands `own` on; tests/test_own_frames.py checks what it means."""
    model = VideoUNet(preset("world-smoke", mark_own=True)).eval()
    torch.nn.init.normal_(model.head[-1].weight, std=0.1)
    torch.nn.init.normal_(model.world.own_embed.weight)  # it starts at zero
    x, context, actions = torch.randn(2, 3, 1, 32, 32), torch.randn(2, 3, 2, 32, 32), torch.zeros(2, 3, 8)
    mine = model(x, 0.5, context=context, actions=actions, own=torch.ones(2, 2))
    assert not torch.allclose(mine, model(x, 0.5, context=context, actions=actions))


def test_recomputed_activations_give_the_same_gradients():
    x, t = clip(), torch.tensor([0.3, 0.6])
    grads = []
    for recompute in (False, True):
        model = tiny(recompute_activations=recompute, dropout=0.2, temporal_attention=True).train()
        torch.manual_seed(5)  # the same dropout masks; checkpoint replays them in the recomputation
        model(x, t).square().mean().backward()
        grads.append([p.grad for p in model.parameters()])
    for plain, recomputed in zip(*grads):
        torch.testing.assert_close(plain, recomputed)


def test_same_seed_same_model_and_output():
    x = clip()
    assert torch.equal(tiny()(x, 0.4), tiny()(x, 0.4))


def test_groupnorm_accepts_widths_that_are_not_multiples_of_32():
    torch.manual_seed(0)
    model = VideoUNet(preset("smoke", base_ch=24, channel_mults=(1, 3)))  # widths 24, 72, 144
    assert model(clip(), 0.5).shape == (2, 3, 4, 16, 16)


def test_time_embedding_tells_close_times_apart():
    e = sinusoidal_embedding(torch.tensor([0.50, 0.51, 0.0]), 33)
    assert e.shape == (3, 33) and torch.equal(e[:, -1], torch.zeros(3))  # odd width: a zero column
    assert (e[0] - e[1]).norm() > 1.0  # the scale by 1000 makes t = 0.50 and 0.51 far apart


def test_time_scale_sets_how_fast_the_embedding_moves_with_t():
    """The same weights see t = 0.50 and 0.51 as more alike with a smaller cfg.time_scale (a smoother v in t)."""
    fast, slow = VideoUNet(preset("smoke")), VideoUNet(preset("smoke", time_scale=50.0))
    torch.nn.init.normal_(fast.head[-1].weight, std=0.1)  # the zero-init head would hide every difference
    slow.load_state_dict(fast.state_dict())
    x, t = torch.randn(2, 3, 4, 32, 32), torch.tensor([0.50, 0.51])

    def change(net):
        v = net(x[:1].expand(2, -1, -1, -1, -1), t)
        return ((v[0] - v[1]).norm() / v[0].norm()).item()

    assert change(slow) < change(fast) / 3


@pytest.mark.parametrize("x, t, match", [
    (torch.zeros(2, 3, 16, 16), 0.5, r"shape \(B, 3, T, H, W\)"),
    (torch.zeros(2, 1, 4, 16, 16), 0.5, r"shape \(B, 3, T, H, W\)"),
    (torch.zeros(2, 3, 4, 15, 16), 0.5, "divisible by 2"),
    (torch.zeros(2, 3, 4, 16, 16), torch.zeros(3), r"shape \(B,\)=\(2,\)"),
])
def test_bad_input_is_refused_with_a_clear_message(x, t, match):
    with pytest.raises(ValueError, match=match):
        VideoUNet(preset("smoke"))(x, t)


def test_x0_prediction_returns_the_velocity_its_clean_guess_implies():
    """prediction="x0": forward(x_t, t) = (x_t − x̂0) / max(t, t_min), with x̂0 the head's output; so the exact
    x0 turns into the exact target velocity ε − x0 (checked by planting x̂0 through the head's bias)."""
    cfg = preset("smoke", prediction="x0", t_min=0.05)
    torch.manual_seed(0)
    model = VideoUNet(cfg).eval()
    x0 = torch.full((2, 3, 4, 32, 32), 0.25)  # a constant clip: the head's bias alone can output it
    with torch.no_grad():
        model.head[-1].bias.fill_(0.25)
    noise = torch.randn_like(x0)
    t = torch.tensor([0.5, 0.02])  # the second lies under t_min
    x_t = (1 - t.view(-1, 1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1, 1) * noise
    v = model(x_t, t)
    torch.testing.assert_close(v[0], (noise - x0)[0])
    torch.testing.assert_close(v[1], (x_t[1] - x0[1]) / 0.05)


@pytest.mark.parametrize("old_p, new_p, conv", [(1, 2, "2d"), (2, 4, "2d"), (2, 6, "2d"), (2, 4, "2+1d")])
def test_a_model_given_finer_patches_returns_its_output_enlarged_on_enlarged_frames(old_p, new_p, conv):
    """mariofm.unet.finer_patches: a world net on r-times larger frames with r-times finer patches, started from a
    net on the smaller frames, computes that net's output enlarged wherever the frames come in r x r blocks."""
    r, k = new_p // old_p, preset("world-smoke").context_frames
    torch.manual_seed(0)
    model = VideoUNet(preset("world-smoke", patch_size=old_p, conv=conv, grid_free=old_p > 1)).eval()
    torch.nn.init.normal_(model.head[-1].weight, std=0.1)  # zero-init: make the output depend on the input
    torch.nn.init.normal_(model.head[-1].bias, std=0.1)
    fine = VideoUNet(preset("world-smoke", patch_size=new_p, conv=conv, grid_free=True,
                            video_height=32 * r, video_width=32 * r)).eval()
    fine.load_state_dict(finer_patches(model.state_dict(), old_p, new_p))
    g = torch.Generator().manual_seed(1)
    x, t, context = torch.randn(2, 3, 1, 32, 32, generator=g), torch.rand(2, generator=g), \
        torch.rand(2, 3, k, 32, 32, generator=g) * 2 - 1
    actions = (torch.rand(2, k + 1, 8, generator=g) > 0.5).float()
    enlarge = lambda v: v.repeat_interleave(r, -2).repeat_interleave(r, -1)  # noqa: E731
    with torch.no_grad():
        old = model(x, t, context=context, actions=actions)
        torch.testing.assert_close(fine(enlarge(x), t, context=enlarge(context), actions=actions), enlarge(old),
                                   atol=1e-5, rtol=0)
        # each new place is read on its own: detail inside a block changes the output
        detail = enlarge(context) + 0.5 * torch.randn(2, 3, k, 32 * r, 32 * r, generator=g)
        changed = fine(enlarge(x), t, context=detail, actions=actions)
    assert (changed - enlarge(old)).abs().max() > 1e-3
    with pytest.raises(ValueError, match=re.escape("patch_size=3 is not a multiple of the weights' patch_size=2: a "
                                                   "run can start from a model with patches 1, 2, ... times coarser "
                                                   "in pixels, e.g. patch_size=4")):
        finer_patches(model.state_dict(), 2, 3)
