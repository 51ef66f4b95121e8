"""The network: a 3D UNet that reads a noisy clip x_t and its time t and predicts the velocity v_θ(x_t, t).

    model = VideoUNet(preset("cpu"))
    v = model(x_t, t)  # x_t: (B, C, T, H, W), t: (B,) in [0, 1]  ->  v: (B, C, T, H, W)

Shapes for the `cpu` preset (patch_size=2, base_ch=32, channel_mults=(1, 2), T=8 frames of 60x64):

    patchify             (B,  3, 8, 60, 64) -> (B, 12, 8, 30, 32)  2x2 pixels folded into channels
    stem                 (B, 12, 8, 30, 32) -> (B, 32, 8, 30, 32)
    level 0, then Down3D (B, 32, 8, 30, 32) -> (B, 32, 8, 15, 16)  skip 0 kept at 30x32
    level 1 + middle     (B, 64, 8, 15, 16)                          skip 1; attention here (mariofm.attention)
    up path: concatenate the skip of the same level, residual blocks, Up3D; mirror image back to 30x32
    head (zero-init)     (B, 32, 8, 30, 32) -> (B, 12, 8, 30, 32), then unpatchify -> (B, 3, 8, 60, 64)

Down- and upsampling only touch H and W: every level sees all T frames, so any T >= 1 works.

With cfg.context_frames = K > 0 the same net is a world model, the velocity of the NEXT frame given the K frames
before it and the buttons (mariofm.conditioning explains each choice):

    model = VideoUNet(preset("world-cpu"));  model.conditions == ("context", "actions")
    v = model(x_t, t, context=context, actions=actions)
    # x_t (B, 3, 1, H, W), context (B, 3, K, H, W), actions (B, K + 1, 8) button bits -> v (B, 3, 1, H, W)

Only the stem's input width changes (3·(K+1) channels: x_t stacked with the context) and the time embedding gets
the buttons' and the context-noise level's embeddings added. `conditions` names the keyword arguments the model
needs, so a trainer can call `functools.partial(model, **{k: batch[k] for k in model.conditions})`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from mariofm.attention import SpatialAttention, TemporalAttention
from mariofm.conditioning import WorldConditioning
from mariofm.config import Config
from mariofm.convs import FrameConv, FrameGroupNorm, group_norm, make_conv
from mariofm.embedding import sinusoidal_embedding
from mariofm.flow import velocity_from_x0


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """Fold each p x p block of pixels into channels: (B, C, T, H, W) -> (B, C·p·p, T, H/p, W/p).

    Nothing is lost (`unpatchify` undoes it exactly), but every conv after it runs on p² fewer positions: the
    full-resolution layers, where a UNet spends most of its FLOPs, become p² cheaper (DiT's patches, the
    pixel-unshuffle stem of "simple diffusion")."""
    if p == 1:
        return x
    b, c, t, h, w = x.shape
    x = x.view(b, c, t, h // p, p, w // p, p).permute(0, 1, 4, 6, 2, 3, 5)
    return x.reshape(b, c * p * p, t, h // p, w // p)


def grid_free(change: torch.Tensor, p: int) -> torch.Tensor:
    """Take the patch grid's own pattern out of a patchified change (B, C·p·p, T, h, w) (cfg.grid_free).

    Each channel of a patchified frame is one place of the p×p patch. A world model adds its change to the last
    frame (frame_residual) every frame, so an offset the head gives one place more than another (a fraction of an
    8-bit unit is enough) piles up into a chequer over hundreds of frames (metrics.grid_grain). Here the
    frame-wide mean of each place becomes the mean over the p² places of its colour: the change keeps its detail
    and its colour shift but carries no offset per place. Real frame-to-frame changes have such offsets too
    (scrolling textures whose period is the patch), about 2 units; they come and go, the model's stay.
    """
    b, cpp, t, h, w = change.shape
    x = change.view(b, cpp // (p * p), p * p, t, h, w)
    place_mean = x.mean((4, 5), keepdim=True)
    return (x - place_mean + place_mean.mean(2, keepdim=True)).view_as(change)


def finer_patches(weights: dict[str, torch.Tensor], old_p: int, new_p: int) -> dict[str, torch.Tensor]:
    """A patched model's weights for patches r = new_p / old_p times finer in pixels (`train --init <model> --set
    video_height=120 video_width=128 patch_size=4` from a 60x64 model with patch_size=2): the net behind the stem
    keeps its grid of places, and each place now reads r² times as many pixels.

    The stem reads each old place (a, b) of a patch as the mean of the r x r new places (A, B) with A // r = a and
    B // r = b: its weight is spread over them divided by r². The head writes each old place's output to its r x r
    new places. On a frame whose pixels come in r x r blocks (a coarse frame enlarged) the new net therefore returns
    the old net's output enlarged (grid_free commutes with that); on finer frames it starts from their block means
    and learns to use the detail. The noise of x_t is not enlarged: its block means are r times quieter, one thing
    the fine-tuning has to learn."""
    if new_p % old_p:
        raise ValueError(f"patch_size={new_p} is not a multiple of the weights' patch_size={old_p}: a run can start "
                         f"from a model with patches 1, 2, ... times coarser in pixels, e.g. patch_size={2 * old_p}")
    r, out = new_p // old_p, dict(weights)
    # new place A·new_p + B (patchify's order) reads old place (A // r)·old_p + B // r
    old_place = ((torch.arange(new_p) // r)[:, None] * old_p + torch.arange(new_p) // r).flatten()

    def spread(w: torch.Tensor) -> torch.Tensor:  # dim 0 of w: channel-major places c·old_p² + place
        return w.reshape(-1, old_p**2, *w.shape[1:])[:, old_place].reshape(-1, *w.shape[1:])

    stem = "stem.weight" if "stem.weight" in weights else "stem.0.weight"  # "2+1d": its 1x3x3 conv comes first
    out[stem] = spread(weights[stem].transpose(0, 1)).transpose(0, 1) / r**2
    head = weights["head.2.weight"]
    if old_p == 1:  # an unpatched head is 1x1x1; a patched one 1x3x3 (VideoUNet): the old kernel is its centre
        head = torch.nn.functional.pad(head, (1, 1, 1, 1))
    out["head.2.weight"], out["head.2.bias"] = spread(head), spread(weights["head.2.bias"])
    return out


def unpatchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """The inverse of `patchify`: (B, C·p·p, T, H, W) -> (B, C, T, H·p, W·p)."""
    if p == 1:
        return x
    b, cpp, t, h, w = x.shape
    x = x.view(b, cpp // (p * p), p, p, t, h, w).permute(0, 1, 4, 5, 2, 6, 3)
    return x.reshape(b, cpp // (p * p), t, h * p, w * p)


class Conv3DBlock(nn.Module):
    """conv -> GroupNorm -> h·(1 + scale) + shift -> SiLU, with (scale, shift) = Linear(SiLU(emb)) per channel.

    (B, in_ch, T, H, W), emb (B, time_dim) -> (B, out_ch, T, H, W). With time_dim=None there is no conditioning.
    Scale-and-shift after the norm lets t set how strongly each channel fires (FiLM, as in improved DDPM).
    """

    def __init__(self, in_ch: int, out_ch: int, time_dim: int | None = None, conv: str = "3d"):
        super().__init__()
        self.conv = make_conv(in_ch, out_ch, conv)
        self.norm = group_norm(out_ch)
        self.to_scale_shift = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, 2 * out_ch)) if time_dim else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm(self.conv(x))
        if self.to_scale_shift is not None:
            scale, shift = self.to_scale_shift(emb)[:, :, None, None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        return F.silu(h)


class Residual3DBlock(nn.Module):
    """x -> skip(x) + Conv3DBlock(Dropout(Conv3DBlock(x, emb))); skip is a 1x1x1 conv when widths differ.

    (B, in_ch, T, H, W), emb (B, time_dim) -> (B, out_ch, T, H, W).
    """

    def __init__(self, in_ch: int, out_ch: int, time_dim: int, conv: str = "3d", dropout: float = 0.0):
        super().__init__()
        self.block1 = Conv3DBlock(in_ch, out_ch, time_dim, conv)
        self.dropout = nn.Dropout(dropout)
        self.block2 = Conv3DBlock(out_ch, out_ch, None, conv)
        self.skip = nn.Conv3d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.block2(self.dropout(self.block1(x, emb)))


class Down3D(nn.Module):
    """Halve H and W, keep T: a 1x3x3 conv with stride (1, 2, 2). (B, C, T, H, W) -> (B, C, T, H/2, W/2)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv3d(ch, ch, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Up3D(nn.Module):
    """Double H and W, keep T: nearest upsampling then a 1x3x3 conv (no checkerboard of a transposed conv).

    (B, in_ch, T, H, W) -> (B, out_ch, T, 2H, 2W).
    """

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = nn.Conv3d(in_ch, out_ch, (1, 3, 3), padding=(0, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest"))


class VideoUNet(nn.Module):
    """v_θ(x_t, t): (B, C, T, H, W) and t (B,) in [0, 1] (or one float for all) -> velocity (B, C, T, H, W).

    Level i has width base_ch·channel_mults[i] and num_res_blocks residual blocks on the way down and up;
    every level but the last halves H and W. The output conv starts at zero, so the untrained model predicts
    v = 0 and the first loss is E‖ε - x0‖², a known value to check training against. With
    cfg.prediction="x0" the head's output is read as the clean clip x̂0 and forward returns the velocity it
    implies, (x_t − x̂0) / max(t, t_min): to the loss and the samplers the model is a velocity model either way.
    """

    conditions: tuple[str, ...] = ()  # batch entries forward() takes as keyword arguments: none, it is unconditional

    def __init__(self, cfg: Config):
        super().__init__()
        chs = [cfg.base_ch * m for m in cfg.channel_mults]
        td, kind, drop, n = cfg.time_dim, cfg.conv, cfg.dropout, cfg.num_res_blocks
        self.cfg = cfg  # for callers such as mariofm.rollout (its sample_steps and solver)
        self.channels, self.time_dim = cfg.video_channels, td
        self.recompute_activations = cfg.recompute_activations
        self.time_scale, self.prediction, self.t_min = cfg.time_scale, cfg.prediction, cfg.t_min
        self.frame_residual, self.grid_free = cfg.frame_residual, cfg.grid_free
        self.time_mlp = nn.Sequential(nn.Linear(td, td), nn.SiLU(), nn.Linear(td, td))
        self.patch = cfg.patch_size
        # a world model reads the noisy next frame stacked with K context frames (mariofm.conditioning)
        self.world = WorldConditioning(cfg.context_frames, cfg.video_channels, td, cfg.context_noise,
                                       cfg.play_noise, cfg.action_dropout, cfg.mark_own) if cfg.context_frames else None
        self.conditions: tuple[str, ...] = ("context", "actions") if self.world else ()
        in_ch = cfg.video_channels * (cfg.context_frames + 1)
        self.stem = make_conv(in_ch * self.patch**2, chs[0], kind)
        self.down_blocks, self.downs = nn.ModuleList(), nn.ModuleList()
        for i, ch in enumerate(chs):
            prev = chs[max(i - 1, 0)]
            self.down_blocks.append(nn.ModuleList(
                Residual3DBlock(prev if j == 0 else ch, ch, td, kind, drop) for j in range(n)))
            self.downs.append(Down3D(ch) if i < len(chs) - 1 else nn.Identity())
        self.mid = nn.ModuleList([Residual3DBlock(chs[-1], chs[-1], td, kind, drop) for _ in range(2)])
        self.attn = TemporalAttention(chs[-1]) if cfg.temporal_attention else nn.Identity()
        self.space_attn = SpatialAttention(chs[-1]) if cfg.spatial_attention else nn.Identity()
        self.up_blocks, self.ups = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(chs))):  # the input of each level's first block is [h, skip]: 2·ch wide
            ch = chs[i]
            self.up_blocks.append(nn.ModuleList(
                Residual3DBlock(2 * ch if j == 0 else ch, ch, td, kind, drop) for j in range(n)))
            self.ups.append(Up3D(ch, chs[i - 1]) if i > 0 else nn.Identity())
        # with patches, a 1x3x3 head lets each output pixel see its neighbours across patch borders
        head = nn.Conv3d(chs[0], cfg.video_channels * self.patch**2, 1) if self.patch == 1 else \
            nn.Conv3d(chs[0], cfg.video_channels * self.patch**2, (1, 3, 3), padding=(0, 1, 1))
        self.head = nn.Sequential(group_norm(chs[0]), nn.SiLU(), head)
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)
        if kind == "2d":  # frames never mix: every conv is 1 x k x k, computed as a 2D conv, and every GroupNorm
            for m in self.modules():  # normalises each frame alone (same parameters, same state dict)
                if type(m) is nn.Conv3d and m.kernel_size[0] == 1:
                    m.__class__ = FrameConv
                elif type(m) is nn.GroupNorm:
                    m.__class__ = FrameGroupNorm
        self.factor = self.patch * 2 ** (len(chs) - 1)

    def _block(self, block: nn.Module, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.recompute_activations and torch.is_grad_enabled():  # keep only the block's input; redo it in backward
            return checkpoint(block, h, emb, use_reentrant=False)
        return block(h, emb)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, context: torch.Tensor | None = None,
                actions: torch.Tensor | None = None, unknown: torch.Tensor | None = None,
                own: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != self.channels or x.shape[3] % self.factor or x.shape[4] % self.factor:
            raise ValueError(f"expected x of shape (B, {self.channels}, T, H, W) with H and W divisible by "
                             f"{self.factor}; got {tuple(x.shape)}. Resize the clips or change channel_mults")
        t = torch.as_tensor(t, dtype=torch.float32, device=x.device)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must be a float or a tensor of shape (B,)=({x.shape[0]},); got {tuple(t.shape)}")
        # .to(x.dtype): a .half() model gets a half embedding
        emb = self.time_mlp(sinusoidal_embedding(t, self.time_dim, self.time_scale).to(x.dtype))
        inputs = x
        if self.world is not None:
            inputs, cond, last = self.world(x, context, actions, unknown, own)
            emb = emb + cond  # buttons and context-noise level reach every block's scale-and-shift
        elif context is not None or actions is not None or unknown is not None or own is not None:
            raise ValueError("this model is unconditional (context_frames=0): it takes no context or actions")
        h, skips = self.stem(patchify(inputs, self.patch)), []
        for blocks, down in zip(self.down_blocks, self.downs):
            for block in blocks:
                h = self._block(block, h, emb)
            skips.append(h)
            h = down(h)
        h = self.space_attn(self.attn(self._block(self.mid[0], h, emb)))
        h = self._block(self.mid[1], h, emb)
        for blocks, up in zip(self.up_blocks, self.ups):
            h = torch.cat([h, skips.pop()], dim=1)  # U-Net skip: the fine detail the down path had
            for block in blocks:
                h = self._block(block, h, emb)
            h = up(h)
        out = self.head(h)
        out = unpatchify(grid_free(out, self.patch) if self.grid_free else out, self.patch)
        if self.frame_residual:  # x̂0 = last context frame + a change (mariofm.conditioning)
            out = out + last
        return velocity_from_x0(x, out, t, self.t_min) if self.prediction == "x0" else out


def count_parameters(model: nn.Module) -> int:
    """Number of trainable weights."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# the attention blocks and the embedding live in their own modules; they are named here too, as parts of the net
__all__ = ["VideoUNet", "Conv3DBlock", "Residual3DBlock", "Down3D", "Up3D", "TemporalAttention", "SpatialAttention",
           "patchify", "unpatchify", "grid_free", "finer_patches", "sinusoidal_embedding", "count_parameters"]
