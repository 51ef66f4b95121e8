"""The UNet's exact pieces (mariofm.unet): patches, the time embedding's formula, which blocks
recompute_activations reruns, and the layers against their formulas. Written against the mutants `make mutation`
left alive."""

import math
import zlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mariofm.attention import SpatialAttention, TemporalAttention
from mariofm.config import Config, preset
from mariofm.convs import FrameConv, FrameGroupNorm, TemporalConv, group_norm, make_conv
from mariofm.embedding import sinusoidal_embedding
from mariofm.unet import Conv3DBlock, Down3D, Residual3DBlock, VideoUNet, count_parameters, patchify, unpatchify


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _perturbed(cfg: Config, seed: int = 0) -> VideoUNet:
    """A seeded model whose zero-init output conv is perturbed, so its output depends on every layer."""
    torch.manual_seed(seed)
    model = VideoUNet(cfg)
    nn.init.normal_(model.head[-1].weight, std=0.1)
    return model


@pytest.mark.parametrize("p, shape", [(2, (2, 3, 4, 6, 8)), (3, (1, 2, 2, 9, 6))])
def test_patchify_puts_each_pixel_in_its_documented_channel(p, shape):
    """out[b, c·p² + i·p + j, t, y, x] = in[b, c, t, y·p + i, x·p + j]: pixel (i, j) of each p x p block."""
    x = torch.arange(math.prod(shape), dtype=torch.float64).reshape(shape)
    out = patchify(x, p)
    b, c, t, h, w = shape
    assert out.shape == (b, c * p * p, t, h // p, w // p)
    for ci in range(c):
        for i in range(p):
            for j in range(p):
                assert torch.equal(out[:, ci * p * p + i * p + j], x[:, ci, :, i::p, j::p]), (ci, i, j)
    assert torch.equal(unpatchify(out, p), x)  # exact, not close: nothing but moves


def test_unpatchify_is_the_exact_inverse_both_ways():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(2, 12, 3, 5, 4, generator=g)  # 3 channels of 2x2 patches
    assert unpatchify(y, 2).shape == (2, 3, 3, 10, 8)
    assert torch.equal(patchify(unpatchify(y, 2), 2), y)
    x = torch.randn(2, 3, 3, 10, 8, generator=g)
    assert patchify(x, 1) is x and unpatchify(x, 1) is x


def test_sinusoidal_embedding_is_the_formula_in_its_docstring():
    """[sin(s·t·ω_k), cos(s·t·ω_k)], ω_k = 10000^(-k/(dim/2)): checked entry by entry in float64 maths."""
    t, dim, s = torch.tensor([0.0, 0.3, 0.77]), 6, 1000.0
    e = sinusoidal_embedding(t, dim, s)
    for n, tn in enumerate(t.tolist()):
        for k in range(dim // 2):
            angle = s * tn * 10000.0 ** (-k / (dim // 2))
            assert e[n, k].item() == pytest.approx(math.sin(angle), abs=2e-4)
            assert e[n, dim // 2 + k].item() == pytest.approx(math.cos(angle), abs=2e-4)
    assert torch.equal(sinusoidal_embedding(t, dim), e)  # the default scale is 1000


def test_group_norm_uses_the_most_groups_up_to_32():
    assert [group_norm(ch).num_groups for ch in (8, 96, 3, 64, 48)] == [8, 32, 1, 32, 16]


def _count_block_calls(model: VideoUNet) -> dict[str, int]:
    """Wrap every residual block's forward to count its calls. (A forward hook would not do: torch 2.13's
    non-reentrant checkpoint does not fire hooks while it recomputes.)"""
    calls: dict[str, int] = {}
    for name, module in model.named_modules():
        if isinstance(module, Residual3DBlock):
            calls[name] = 0

            def counted(*args, _name=name, _forward=module.forward, **kwargs):
                calls[_name] += 1
                return _forward(*args, **kwargs)

            module.forward = counted
    return calls


@pytest.mark.parametrize("recompute", [False, True])
def test_recompute_activations_reruns_every_residual_block_in_backward(recompute):
    """With recompute_activations each residual block (down, middle, up) keeps only its input and runs again in
    backward: 2 calls per block for one forward + backward, against 1 without. Under no_grad, 1 call either way."""
    torch.manual_seed(0)
    model = VideoUNet(preset("smoke", recompute_activations=recompute, num_res_blocks=2))
    torch.nn.init.normal_(model.head[-1].weight, std=0.1)
    calls = _count_block_calls(model)
    assert len(calls) == 2 * 2 + 2 + 2 * 2  # 2 levels x 2 blocks down, 2 in the middle, 2 x 2 up
    x = torch.randn(2, 3, 4, 32, 32)
    out = model(x, torch.tensor([0.3, 0.6]))
    assert set(calls.values()) == {1}
    out.square().mean().backward()
    assert set(calls.values()) == {2 if recompute else 1}, calls
    with torch.no_grad():
        model(x, 0.5)
    assert set(calls.values()) == {3 if recompute else 2}, calls


def test_recomputing_model_supports_gradients_with_respect_to_its_input():
    """torch.autograd.grad(v, x) — what the likelihood's divergence needs — works through recomputed blocks
    (the reentrant variant of torch's checkpoint refuses it) and equals the plain model's gradient."""
    x, t = torch.randn(2, 3, 4, 16, 16, generator=torch.Generator().manual_seed(1)), torch.tensor([0.3, 0.6])
    grads = []
    for recompute in (False, True):
        torch.manual_seed(0)
        model = VideoUNet(preset("smoke", recompute_activations=recompute))
        torch.nn.init.normal_(model.head[-1].weight, std=0.1)
        xr = x.clone().requires_grad_(True)
        grads.append(torch.autograd.grad(model(xr, t).square().sum(), xr)[0])
    torch.testing.assert_close(grads[1], grads[0])
    assert grads[0].abs().max() > 0


# --- the layers, against their docstrings' formulas ------------------------------------------------------------
def test_make_conv_weights_are_27_in_out_or_9_in_out_plus_3_out_out():
    assert count_parameters(make_conv(4, 8, "3d")) == 27 * 4 * 8 + 8
    assert count_parameters(make_conv(4, 8, "2+1d")) == 9 * 4 * 8 + 8 + 3 * 8 * 8 + 8
    factorised = make_conv(4, 8, "2+1d")
    assert factorised[0].kernel_size == (1, 3, 3) and isinstance(factorised[1], TemporalConv)


def test_conv_block_is_conv_norm_film_silu():
    torch.manual_seed(0)
    block = Conv3DBlock(4, 8, time_dim=6)
    assert block.conv.kernel_size == (3, 3, 3)  # "3d" is the default
    x, emb = _randn(2, 4, 3, 5, 5), _randn(2, 6, seed=1)
    linear = block.to_scale_shift[-1]
    scale, shift = F.linear(F.silu(emb), linear.weight, linear.bias).chunk(2, dim=1)
    h = block.norm(block.conv(x))
    expected = F.silu(h * (1 + scale[:, :, None, None, None]) + shift[:, :, None, None, None])
    torch.testing.assert_close(block(x, emb), expected)
    plain = Conv3DBlock(4, 8)  # no time_dim: no conditioning
    assert plain.to_scale_shift is None
    torch.testing.assert_close(plain(x), F.silu(plain.norm(plain.conv(x))))


def test_residual_block_adds_its_two_conv_blocks_to_the_skip():
    torch.manual_seed(0)
    x, emb = _randn(2, 4, 3, 5, 5), _randn(2, 6, seed=1)
    wider, same = Residual3DBlock(4, 8, 6), Residual3DBlock(4, 4, 6)
    assert isinstance(wider.skip, nn.Conv3d) and wider.skip.kernel_size == (1, 1, 1)
    assert isinstance(same.skip, nn.Identity) and same.dropout.p == 0.0
    assert wider.block1.conv.kernel_size == (3, 3, 3) and wider.block2.to_scale_shift is None
    for block in (wider, same):
        torch.testing.assert_close(block(x, emb), block.skip(x) + block.block2(block.block1(x, emb)))


def test_down3d_is_a_strided_1x3x3_conv():
    down = Down3D(4)
    assert (down.conv.kernel_size, down.conv.stride, down.conv.padding) == ((1, 3, 3), (1, 2, 2), (0, 1, 1))
    assert down(_randn(1, 4, 3, 10, 6)).shape == (1, 4, 3, 5, 3)


@pytest.mark.parametrize("ch, heads", [(32, 1), (64, 2), (96, 3), (48, 1)])
def test_temporal_attention_uses_heads_of_32_channels_when_they_divide(ch, heads):
    assert TemporalAttention(ch).heads == heads


def test_temporal_attention_is_multi_head_attention_over_each_pixels_frames():
    """Written out pixel by pixel: tokens LN(x_k) + pos_k with pos_k = [sin(k·ω), cos(k·ω)] (scale 1), q|k|v
    from one linear map, softmax(q·kᵀ/√d)·v per head of 32 channels, the output projection, plus x."""
    torch.manual_seed(0)
    attn, (b, c, t, h, w) = TemporalAttention(64), (2, 64, 5, 2, 3)
    nn.init.normal_(attn.norm.weight)
    nn.init.normal_(attn.norm.bias)
    x = _randn(b, c, t, h, w)
    pos = sinusoidal_embedding(torch.arange(t), c, scale=1.0)
    expected = x.clone()
    for n in range(b):
        for y in range(h):
            for xx in range(w):
                tokens = attn.norm(x[n, :, :, y, xx].T) + pos  # (t, c)
                qkv = attn.qkv(tokens)
                heads = []
                for i in range(2):
                    q, k, v = (qkv[:, j * c + 32 * i: j * c + 32 * (i + 1)] for j in range(3))
                    heads.append(torch.softmax(q @ k.T / math.sqrt(32), dim=-1) @ v)
                expected[n, :, :, y, xx] += attn.proj(torch.cat(heads, dim=1)).T
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("head_dim, heads", [(32, 2), (16, 4), (48, 1)])
def test_spatial_attention_has_heads_of_head_dim_channels_when_they_divide(head_dim, heads):
    assert SpatialAttention(64, head_dim).heads == heads


def test_spatial_attention_is_multi_head_attention_over_each_frames_places():
    """Written out frame by frame: the tokens are the H·W places (row-major), LN(x_p) + [row_emb(y) | col_emb(x)]
    (sinusoidal, scale 1, C/2 features each), q|k|v from one linear map, softmax(q·kᵀ/√d)·v per head of 32
    channels, the output projection (it starts at zero: the block adds nothing until trained), plus x."""
    torch.manual_seed(0)
    attn, (b, c, t, h, w) = SpatialAttention(64), (2, 64, 3, 3, 4)
    x = _randn(b, c, t, h, w)
    assert attn.proj.weight.abs().max() == 0 and torch.equal(attn(x), x)
    for p in (attn.norm.weight, attn.norm.bias, attn.proj.weight, attn.proj.bias):
        nn.init.normal_(p)
    rows, cols = (sinusoidal_embedding(torch.arange(n), 32, scale=1.0) for n in (h, w))
    pos = torch.stack([torch.cat([rows[y], cols[xx]]) for y in range(h) for xx in range(w)])  # (h·w, c)
    expected = x.clone()
    for n in range(b):
        for f in range(t):
            tokens = attn.norm(x[n, :, f].reshape(c, h * w).T) + pos  # (h·w, c)
            qkv = attn.qkv(tokens)
            heads = []
            for i in range(2):
                q, k, v = (qkv[:, j * c + 32 * i: j * c + 32 * (i + 1)] for j in range(3))
                heads.append(torch.softmax(q @ k.T / math.sqrt(32), dim=-1) @ v)
            expected[n, :, f] += attn.proj(torch.cat(heads, dim=1)).T.reshape(c, h, w)
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-5)


# --- the whole net ------------------------------------------------------------------------------------------
def test_every_residual_block_is_conditioned_on_t_and_gets_the_dropout():
    model = VideoUNet(preset("smoke", num_res_blocks=2, dropout=0.3))
    blocks = [m for m in model.modules() if isinstance(m, Residual3DBlock)]
    assert len(blocks) == 10 and all(b.block1.to_scale_shift is not None for b in blocks)
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.3] * 10


@pytest.mark.parametrize("conv", ["3d", "2+1d"])
def test_the_conv_kind_reaches_the_stem_and_every_block(conv):
    model = VideoUNet(preset("smoke", conv=conv, num_res_blocks=2))
    full = [m for m in model.modules() if isinstance(m, nn.Conv3d) and m.kernel_size == (3, 3, 3)]
    temporal = [m for m in model.modules() if isinstance(m, TemporalConv)]
    # stem + 2 conv blocks in each of 10 residual blocks
    assert (len(full), len(temporal)) == ((21, 0) if conv == "3d" else (0, 21))


@pytest.mark.parametrize("patch, kernel", [(1, (1, 1, 1)), (2, (1, 3, 3)), (3, (1, 3, 3))])
def test_the_head_sees_neighbours_only_with_patches(patch, kernel):
    cfg = preset("smoke", patch_size=patch, video_height=12 * patch, video_width=12 * patch)
    model = _perturbed(cfg)
    assert model.head[-1].kernel_size == kernel and model.head[-1].out_channels == 3 * patch**2
    assert isinstance(model.head[0], nn.GroupNorm) and isinstance(model.head[1], nn.SiLU)
    x = _randn(1, 3, 2, 12 * patch, 12 * patch)
    assert model(x, 0.5).shape == x.shape


def test_x0_prediction_floors_t_at_the_configured_t_min():
    model = _perturbed(preset("smoke", prediction="x0", t_min=0.2)).eval()
    velocity = _perturbed(preset("smoke")).eval()  # the same weights, read as a velocity: x̂0 itself
    x = _randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        x0_hat = velocity(x, torch.tensor([0.1, 0.5]))
        torch.testing.assert_close(model(x, torch.tensor([0.1, 0.5])),
                                   (x - x0_hat) / torch.tensor([0.2, 0.5]).view(2, 1, 1, 1, 1))


def test_the_model_runs_where_its_input_lives_and_in_its_dtype():
    """On another device (meta: shapes without values) every tensor the forward makes — t, the embedding's
    frequencies, attention's frame positions — must be made there; a bf16 model gets a bf16 embedding."""
    cfg = preset("smoke", conv="3d", temporal_attention=True)
    x = _randn(2, 3, 4, 32, 32)
    assert VideoUNet(cfg).to("meta")(x.to("meta"), 0.5).device.type == "meta"
    assert VideoUNet(cfg).to("meta")(x.to("meta"), torch.tensor([0.2, 0.4])).device.type == "meta"
    assert _perturbed(cfg).bfloat16()(x.bfloat16(), torch.tensor([0.2, 0.4])).dtype == torch.bfloat16


def _filled(cfg: Config) -> VideoUNet:
    """The model in float64 with every parameter drawn from a generator seeded by its name: the numbers do not
    depend on the order layers are built in, only on what each named weight does."""
    model = VideoUNet(cfg).double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.5 / max(1, p[0].numel()) ** 0.5)
    return model.eval()


FINGERPRINTS = {  # measured at 7eb49b1 (torch 2.13, float64): mean, mean square, v[1, :, 2, 5, 3:7]
    "cpu, velocity": (preset("cpu", prediction="velocity"), 0.13296418653247413, 0.15952486830914367, [
        -0.026012514873, 0.606813063972, -0.165143276866, 0.601241426626, 0.315079268188, -0.675414823612,
        0.369719691214, -0.743248627744, -0.039095469058, 0.119588449879, -0.038452698622, 0.153361876928]),
    "3d+attention+x0": (preset("smoke", conv="3d", temporal_attention=True, prediction="x0", base_ch=32),
                        -0.8329248745302263, 7.437267629983441, [
        -1.582040587471, -0.260861428159, -0.546459902624, -1.073025270862, -0.160059466704, 1.163910325656,
        -1.231248916711, 1.421399945888, 0.582411479968, -2.390007685439, 0.148020629193, 0.616578597131]),
}


@pytest.mark.parametrize("name", list(FINGERPRINTS))
def test_the_architecture_computes_what_checkpoints_were_trained_with(name):
    """A checkpoint stores weights by name, not what the layers do with them: a change to the forward pass (an
    activation dropped, a sign flipped, a norm moved) still loads every old checkpoint and silently computes
    another function. These numbers pin the function. Change the architecture on purpose only with a re-trained,
    re-exported model, then update them."""
    cfg, mean, mean_square, values = FINGERPRINTS[name]
    x = torch.randn(2, 3, cfg.sequence_length, cfg.video_height, cfg.video_width, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        v = _filled(cfg)(x, torch.tensor([0.3, 0.8], dtype=torch.float64))
    assert v.mean().item() == pytest.approx(mean, rel=1e-6)
    assert v.square().mean().item() == pytest.approx(mean_square, rel=1e-6)
    assert v[1, :, 2, 5, 3:7].flatten().tolist() == pytest.approx(values, rel=1e-6, abs=1e-9)


# --- per-frame convolutions and the world model's input ------------------------------------------------------
def test_2d_convs_compute_exactly_what_their_conv3d_does():
    torch.manual_seed(0)
    model = _perturbed(preset("smoke", conv="2d")).eval()
    frame_convs = [m for m in model.modules() if type(m) is FrameConv]
    assert frame_convs and not any(isinstance(m, TemporalConv) for m in model.modules())
    assert not any(type(m) is nn.Conv3d for m in model.modules())  # every 1 x k x k conv runs as a 2D conv
    x = _randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        out = model(x, 0.5)
        for m in frame_convs:
            m.__class__ = nn.Conv3d  # the same weights through torch's own 3D convolution
        torch.testing.assert_close(model(x, 0.5), out, rtol=1e-5, atol=1e-6)


def test_a_2d_net_treats_each_frame_on_its_own():
    """conv="2d" promises that frames never mix: changing frame 2 of x_t leaves every other frame's velocity as it
    was (GroupNorm normalises each frame by its own statistics, as the convs see one frame at a time)."""
    model = _perturbed(preset("smoke", conv="2d")).eval()
    x = _randn(2, 3, 4, 32, 32)
    changed = x.clone()
    changed[:, :, 2] = 3 * _randn(2, 3, 32, 32, seed=1)
    with torch.no_grad():
        out, out_changed = model(x, 0.5), model(changed, 0.5)
    for frame in (0, 1, 3):
        torch.testing.assert_close(out_changed[:, :, frame], out[:, :, frame], rtol=1e-6, atol=1e-7)
    assert (out_changed[:, :, 2] - out[:, :, 2]).abs().max() > 0.1  # frame 2 itself did change


def test_frame_group_norm_is_group_norm_on_each_frame():
    """FrameGroupNorm(T frames) = nn.GroupNorm applied to each frame as an image, with the same groups, eps and
    affine weights (a large eps here, so that dropping it would show)."""
    norm = FrameGroupNorm(2, 4, eps=0.5)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
        norm.bias.copy_(torch.tensor([0.5, 0.0, -0.5, 1.0]))
    plain = nn.GroupNorm(2, 4, eps=0.5)
    plain.load_state_dict(norm.state_dict())  # the same parameters under the same names
    x = _randn(2, 4, 3, 5, 6)
    expected = torch.stack([plain(x[:, :, f]) for f in range(3)], dim=2)
    torch.testing.assert_close(norm(x), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("conditions", [dict(context=_randn(1, 3, 2, 32, 32)), dict(actions=torch.zeros(1, 3, 8)),
                                        dict(unknown=torch.tensor([True]))])
def test_an_unconditional_model_refuses_each_condition_alone(conditions):
    with pytest.raises(ValueError, match=r"^this model is unconditional \(context_frames=0\): it takes no context "
                                         r"or actions$"):
        VideoUNet(preset("smoke"))(_randn(1, 3, 4, 32, 32), 0.5, **conditions)


def test_only_the_samples_marked_unknown_get_the_unknown_buttons_embedding():
    """action_dropout > 0 gives the net a learnt "unknown buttons" vector (an entry of its state dict); the
    `unknown` mask replaces the buttons' embedding of exactly the marked samples (guidance's second half)."""
    cfg = preset("world-smoke", action_dropout=0.15)
    model = _perturbed(cfg).eval()
    assert VideoUNet(preset("world-smoke")).world.unknown_actions is None
    assert model.state_dict()["world.unknown_actions"].shape == (cfg.time_dim,)
    nn.init.normal_(model.world.unknown_actions, std=1.0)
    x, context = _randn(2, 3, 1, 32, 32), _randn(2, 3, cfg.context_frames, 32, 32, seed=1)
    actions = torch.ones(2, cfg.context_frames + 1, 8)
    with torch.no_grad():
        given = model(x, 0.5, context=context, actions=actions)
        mixed = model(x, 0.5, context=context, actions=actions, unknown=torch.tensor([False, True]))
    torch.testing.assert_close(mixed[0], given[0], rtol=0, atol=0)
    assert (mixed[1] - given[1]).abs().max() > 1e-3, "the marked sample should see the unknown embedding"


def test_a_world_model_predicts_the_last_context_frame_plus_a_change():
    """frame_residual: x̂0 = last context frame + the head's output, so the untrained world model (zero head)
    returns the velocity towards the last context frame, v = (x_t − last) / max(t, t_min)."""
    cfg = preset("world-smoke")
    model = VideoUNet(cfg).eval()
    assert model.conditions == ("context", "actions") and model.cfg is cfg
    assert VideoUNet(preset("smoke")).conditions == ()
    x, context = _randn(2, 3, 1, 32, 32), _randn(2, 3, cfg.context_frames, 32, 32, seed=1)
    actions = torch.zeros(2, cfg.context_frames + 1, 8)
    t = torch.tensor([0.5, 0.02])
    with torch.no_grad():
        v = model(x, t, context=context, actions=actions)
    last = context[:, :, -1:]
    torch.testing.assert_close(v, (x - last) / torch.tensor([0.5, cfg.t_min]).view(2, 1, 1, 1, 1))


def test_the_world_model_computes_what_checkpoints_were_trained_with():
    """The fingerprint of the world-smoke net (context stacked on x_t, buttons and noise level in the embedding,
    frame residual, x0-prediction), filled by name as above; measured at this commit's parent (torch 2.13)."""
    cfg = preset("world-smoke")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 1, 32, 32, generator=g, dtype=torch.float64)
    context = torch.randn(2, 3, cfg.context_frames, 32, 32, generator=g, dtype=torch.float64)
    actions = (torch.rand(2, cfg.context_frames + 1, 8, generator=g) > 0.5).double()
    with torch.no_grad():
        v = _filled(cfg)(x, torch.tensor([0.3, 0.8], dtype=torch.float64), context=context, actions=actions)
    assert v.mean().item() == pytest.approx(-0.5020069918732397, rel=1e-6)
    assert v.square().mean().item() == pytest.approx(13.663806119044603, rel=1e-6)
    assert v[1, :, 0, 5, 3:7].flatten().tolist() == pytest.approx([
        -0.441354949643, -2.970089909659, 0.097994039186, -1.158941145335, -1.797300120062, 2.180261271993,
        -1.972037719407, 3.197045699112, -0.189542409976, 0.8511843761, -2.355960173911, 0.366483132722],
        rel=1e-6, abs=1e-9)
