"""One dataclass holds every setting of a run; named presets size it for a machine.

    cfg = preset("cpu", lr=3e-4)     # a preset with one field changed
    cfg.diff(preset("cpu"))          # {"lr": (0.0003, 0.0005)}
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields

# the allowed values of the string settings, stated once (mariofm.flow and mariofm.sample use them; the CLI too)
SOLVERS = ("euler", "heun")  # ODE solvers of mariofm.sample
TIME_SAMPLINGS = ("uniform", "logit_normal")  # training-time distributions of mariofm.flow.sample_t
CONVS = ("3d", "2+1d", "2d")  # convolutions of mariofm.unet ("2d": frames never mix, the world model)
PREDICTIONS = ("velocity", "x0")  # what the net outputs (mariofm.unet); the loss and samplers always see v
MOVING_FROM = ("context", "target")  # which two frames mariofm.moving compares for a world model's loss weight


@dataclass
class Config:
    # --- data: clips of (C, T, H, W) in [-1, 1] ---------------------------------------------------
    video_height: int = 240  # the NES screen is 240x256
    video_width: int = 256
    video_channels: int = 3
    sequence_length: int = 60  # frames per training clip
    frame_stride: int = 1  # keep every k-th recorded frame (recordings are 30 fps by default)
    # --- model: the 3D UNet -----------------------------------------------------------------------
    base_ch: int = 64
    channel_mults: tuple[int, ...] = (1, 2, 4)  # one entry per resolution level
    num_res_blocks: int = 1  # residual blocks per level
    time_dim: int = 256  # width of the time embedding
    time_scale: float = 1000.0  # t in [0, 1] enters the sinusoidal embedding as time_scale·t (mariofm.embedding)
    conv: str = "3d"  # "3d" (3x3x3), "2+1d" (1x3x3 then 3x1x1) or "2d" (1x3x3 only: frames never mix)
    patch_size: int = 1  # fold p x p pixels into channels first: the net runs at (H/p, W/p), ~p² fewer FLOPs
    temporal_attention: bool = False  # self-attention over frames at the lowest resolution
    spatial_attention: bool = False  # self-attention over each frame's places at the lowest resolution
    dropout: float = 0.0
    prediction: str = "velocity"  # what the net outputs: "velocity" v, or "x0" (a clean clip; v derived, flow.py)
    t_min: float = 0.05  # with prediction="x0": v = (x_t − x̂0) / max(t, t_min)
    recompute_activations: bool = False  # keep only each block's input, redo the block in backward: less memory
    # --- world model: predict the next frame from K earlier ones and the buttons (mariofm/conditioning.py) ---
    context_frames: int = 0  # K; 0 = the unconditional video model, > 0 = a next-frame model (sequence_length 1)
    context_noise: float = 0.1  # training: context frames get N(0, σ²) noise, σ ~ U(0, context_noise)
    play_noise: float = 0.02  # playing: the σ the rollout adds to its context frames (<= context_noise)
    frame_residual: bool = False  # world model, x0-prediction: x̂0 = last context frame + the net's output
    grid_free: bool = False  # ... with patch_size > 1: that output has the same frame-wide mean at each patch place
    action_dropout: float = 0.0  # training: share of samples whose buttons become "unknown" (> 0: guidance works)
    action_guidance: float = 1.0  # playing: w of v_unknown + w·(v_buttons − v_unknown); 1 = the buttons as given
    own_frames: int = 0  # training: the model makes R frames as it plays, the last min(R, K) are its context
    own_share: float = 0.5  # ... for this share of each batch; the rest keeps real context frames
    own_draw: bool = False  # ... each of them makes a number of frames drawn from 1..R (False: always R)
    own_align: bool = False  # ... their target: the real next frame seen from the own last frame's camera
    mark_own: bool = False  # the model is told which context frames are its own (1) and which are real (0)
    own_mark: float = 1.0  # playing (mark_own): the mark a frame it made gets; 1 as in training, 0 read as real
    moving_weight: float = 0.0  # training: α, the loss weighs 1 + α the pixels the camera does not explain (moving.py)
    moving_from: str = "context"  # ... between the last two context frames, or the frame before and the target
    wall_share: float = 0.0  # training: this share of the windows is drawn again from those where a wall holds Mario
    # --- training ---------------------------------------------------------------------------------
    batch_size: int = 2
    grad_accum: int = 1  # split each batch into this many micro-batches whose gradients add up: less memory
    epochs: int = 50
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    time_sampling: str = "uniform"  # "uniform" or "logit_normal"
    amp: bool = True  # bf16/fp16 autocast on CUDA
    seed: int = 0
    # --- sampling and output ----------------------------------------------------------------------
    sample_steps: int = 50
    solver: str = "heun"  # "heun" or "euler"
    sample_shift: float = 1.0  # world model playing: the time grid's shift s (sample.time_grid; < 1: steps near data)
    sample_renoise: float = 0.0  # world model playing: η, fresh noise put back per Euler step (sample.sample_renoised)
    fps: int = 30

    def __post_init__(self) -> None:
        self.channel_mults = tuple(self.channel_mults)
        validate(self)

    @property
    def levels(self) -> int:
        return len(self.channel_mults)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["channel_mults"] = list(self.channel_mults)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        """The Config saved as `d` (by to_dict). Old field names are read under their new ones (the shipped
        model's metadata holds them); a field no config knows is an error."""
        d = {_RENAMED.get(k, k): v for k, v in d.items() if k not in _REMOVED}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config field(s) {unknown}; valid fields: {sorted(known)}")
        return cls(**d)

    def replace(self, **changes) -> Config:
        return dataclasses.replace(self, **changes)

    def diff(self, other: Config) -> dict[str, tuple]:
        """Fields whose values differ, as {name: (self's, other's)}."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


_RENAMED = {"grad_checkpoint": "recompute_activations"}  # old name -> new name
_REMOVED = ("video_duration",)  # fields of older versions that nothing reads any more

_POSITIVE = ("video_height", "video_width", "video_channels", "sequence_length", "frame_stride", "base_ch",
             "num_res_blocks", "patch_size", "time_dim", "batch_size", "grad_accum", "epochs", "sample_steps", "fps")
_CHOICES = {"prediction": PREDICTIONS, "conv": CONVS, "time_sampling": TIME_SAMPLINGS, "solver": SOLVERS,
            "moving_from": MOVING_FROM}


def validate(cfg: Config) -> None:
    """Raise ValueError naming the field and a valid value when a setting cannot work."""
    for name in _POSITIVE:
        value = getattr(cfg, name)
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"config field {name}={value!r} must be a positive integer, e.g. {name}=1")
    for name, choices in _CHOICES.items():
        if getattr(cfg, name) not in choices:
            raise ValueError(f"config field {name}={getattr(cfg, name)!r} must be one of {choices}")
    if not cfg.channel_mults or any(int(m) <= 0 for m in cfg.channel_mults):
        raise ValueError(f"config field channel_mults={cfg.channel_mults!r} must be positive, e.g. (1, 2, 4)")
    factor = cfg.patch_size * 2 ** (cfg.levels - 1)  # patchify, then halve H and W at every level but the last
    for name in ("video_height", "video_width"):
        value = getattr(cfg, name)
        if value % factor:
            ok = max(factor, round(value / factor) * factor)
            raise ValueError(f"config field {name}={value} must be divisible by patch_size·2^(levels-1)={factor} "
                             f"for patch_size={cfg.patch_size}, channel_mults={cfg.channel_mults}; e.g. {name}={ok}")
    for name in ("lr", "ema_decay", "time_scale", "t_min", "grad_clip"):
        if not 0 < getattr(cfg, name) < math.inf:  # NaN fails too
            raise ValueError(f"config field {name}={getattr(cfg, name)!r} must be a finite number > 0")
    if cfg.batch_size % cfg.grad_accum:
        raise ValueError(f"config field grad_accum={cfg.grad_accum} must divide batch_size={cfg.batch_size} "
                         f"(each micro-batch holds batch_size/grad_accum clips), e.g. grad_accum=1")
    if cfg.conv == "2d" and cfg.temporal_attention:
        raise ValueError("config fields conv='2d' and temporal_attention=True contradict each other: a 2d net keeps "
                         "frames apart, the attention mixes them; use conv='2+1d' for frames that interact, or "
                         "temporal_attention=False")
    if not 0 < cfg.ema_decay < 1:
        raise ValueError(f"config field ema_decay={cfg.ema_decay!r} must lie in (0, 1), e.g. 0.999")
    if not isinstance(cfg.context_frames, int) or cfg.context_frames < 0:
        raise ValueError(f"config field context_frames={cfg.context_frames!r} must be an integer >= 0 "
                         "(0: unconditional video model; e.g. 4 for a world model)")
    if not 0 <= cfg.play_noise <= cfg.context_noise:
        raise ValueError(f"config fields play_noise={cfg.play_noise!r} and context_noise={cfg.context_noise!r} "
                         "must satisfy 0 <= play_noise <= context_noise: the model only knows the noise levels "
                         "it saw in training (e.g. context_noise=0.1, play_noise=0.02)")
    if not 0 <= cfg.action_dropout < 1:
        raise ValueError(f"config field action_dropout={cfg.action_dropout!r} must lie in [0, 1): the share of "
                         "training samples whose buttons are replaced by 'unknown' (e.g. 0.15; 0 = off)")
    if not 0 <= cfg.action_guidance < math.inf:
        raise ValueError(f"config field action_guidance={cfg.action_guidance!r} must be a finite number >= 0 "
                         "(1 = no guidance, e.g. 2 doubles the buttons' effect)")
    if cfg.action_guidance != 1 and not (cfg.context_frames and cfg.action_dropout > 0):
        raise ValueError(f"config field action_guidance={cfg.action_guidance!r} needs a world model trained with "
                         "action_dropout > 0 (it has the 'unknown buttons' embedding guidance compares with); "
                         "set action_guidance=1, or train with e.g. action_dropout=0.15")
    if not 0 < cfg.sample_shift < math.inf or (cfg.sample_shift != 1 and not cfg.context_frames):
        raise ValueError(f"config field sample_shift={cfg.sample_shift!r} must be a positive number, and 1 unless "
                         f"context_frames > 0 (it is {cfg.context_frames}): the shift of a world model's sampling "
                         "grid (mariofm.sample.time_grid; 1 = uniform, e.g. 0.5 puts more steps near the data)")
    if not 0 <= cfg.sample_renoise <= 1 or (cfg.sample_renoise and (not cfg.context_frames or cfg.solver != "euler")):
        raise ValueError(f"config field sample_renoise={cfg.sample_renoise!r} must lie in [0, 1], and be 0 unless "
                         f"context_frames > 0 (it is {cfg.context_frames}) and solver='euler' (it is {cfg.solver!r}): "
                         "the share of fresh noise each Euler step of a world model's sampler puts back "
                         "(mariofm.sample.sample_renoised; 0 = the ODE)")
    if not isinstance(cfg.own_frames, int) or cfg.own_frames < 0 or (cfg.own_frames and not cfg.context_frames):
        raise ValueError(f"config field own_frames={cfg.own_frames!r} must be an integer >= 0, and 0 unless "
                         f"context_frames > 0 (it is {cfg.context_frames}): how many frames a world model makes "
                         "itself in training before the target (e.g. 2; more than K: a chain whose last K frames are "
                         "the context; 0 = off)")
    if cfg.own_draw and not cfg.own_frames:
        raise ValueError("config field own_draw=True draws how many of the own_frames each sample makes: it needs "
                         "own_frames > 0 (e.g. own_frames=8), or own_draw=False")
    if cfg.own_align and not cfg.own_frames:
        raise ValueError("config field own_align=True moves the target to the camera of the model's own frames: it "
                         "needs own_frames > 0 (e.g. own_frames=4), or own_align=False")
    if cfg.mark_own and not cfg.context_frames:
        raise ValueError("config field mark_own=True tells a world model which context frames it made itself: it "
                         "needs context_frames > 0 (or mark_own=False)")
    if not 0 <= cfg.own_mark <= 1 or (cfg.own_mark != 1 and not cfg.mark_own):
        raise ValueError(f"config field own_mark={cfg.own_mark!r} is the mark a marked world model's own frames get "
                         "when it plays: a number in [0, 1] (1 as in training, 0 read as real), and 1 unless "
                         "mark_own=True")
    if not 0 <= cfg.moving_weight < math.inf or (cfg.moving_weight and not cfg.context_frames):
        raise ValueError(f"config field moving_weight={cfg.moving_weight!r} must be a finite number >= 0, and 0 unless "
                         "context_frames > 0: how much more a world model's loss weighs the pixels the camera does "
                         "not explain (e.g. 4; 0 = every pixel alike)")
    if cfg.moving_weight and cfg.moving_from == "context" and cfg.context_frames < 2:
        raise ValueError("config field moving_from='context' compares the last two context frames: it needs "
                         f"context_frames >= 2 (it is {cfg.context_frames}), or moving_from='target'")
    if not 0 <= cfg.wall_share < 1 or (cfg.wall_share and cfg.context_frames + cfg.own_frames < 2):
        raise ValueError(f"config field wall_share={cfg.wall_share!r} must lie in [0, 1), and be 0 unless a world "
                         "model's windows hold two frames before the next one (context_frames + own_frames >= 2) to "
                         "see Mario move: the share of its training windows drawn again from those where a wall "
                         "holds Mario (e.g. 0.25; 0 = every window once)")
    if not 0 < cfg.own_share <= 1:
        raise ValueError(f"config field own_share={cfg.own_share!r} must lie in (0, 1]: the share of each batch "
                         "whose context frames the model makes itself (own_frames; e.g. 0.5)")
    if cfg.frame_residual and not (cfg.context_frames and cfg.prediction == "x0"):
        raise ValueError("config field frame_residual=True needs a world model with x0-prediction: set "
                         "context_frames > 0 and prediction='x0' (or frame_residual=False)")
    if cfg.grid_free and not (cfg.frame_residual and cfg.patch_size > 1):
        raise ValueError("config field grid_free=True evens out the change that frame_residual adds, place by place "
                         "of the patch grid: it needs frame_residual=True and patch_size > 1 (or grid_free=False)")
    if cfg.context_frames and cfg.sequence_length != 1:
        raise ValueError(f"config field sequence_length={cfg.sequence_length} must be 1 when context_frames="
                         f"{cfg.context_frames}: a world model predicts one frame at a time")


PRESETS: dict[str, dict] = {
    # a train step in well under a second on 2 CPU cores: tests, CI, notebook smoke runs
    "smoke": dict(video_height=32, video_width=32, sequence_length=4, frame_stride=2, base_ch=8,
                  channel_mults=(1, 2), time_dim=32, conv="2+1d", batch_size=2, epochs=1, warmup_steps=2,
                  sample_steps=4, fps=15),
    # a learner without a GPU: small frames, few of them, a factorised net that trains in minutes. It predicts
    # the clean clip (v derived): predicting v itself left per-pixel grain at this size (docs/quality.md)
    "cpu": dict(video_height=60, video_width=64, sequence_length=8, frame_stride=2, patch_size=2, base_ch=32,
                channel_mults=(1, 2), time_dim=128, conv="2+1d", batch_size=4, lr=5e-4, warmup_steps=100,
                ema_decay=0.995, sample_steps=20, fps=15, prediction="x0"),
    # one 16 GB GPU (Colab's T4) with mixed precision
    "colab": dict(video_height=120, video_width=128, sequence_length=16, frame_stride=2, base_ch=64,
                  channel_mults=(1, 2, 4, 4), conv="2+1d", temporal_attention=True, batch_size=4, lr=2e-4,
                  fps=15),
    # the seed design: full 3x3x3 convolutions on 60 full-size frames, 21.9M parameters
    "seed": dict(conv="3d", channel_mults=(1, 2, 2, 4), num_res_blocks=1, recompute_activations=True),
    # world models (next frame from K = context_frames earlier ones + buttons; per-frame 2D nets, x0-prediction,
    # few Euler steps): tests; a 2-core CPU; one GPU
    "world-smoke": dict(video_height=32, video_width=32, sequence_length=1, frame_stride=2, context_frames=2,
                        base_ch=8, channel_mults=(1, 2), time_dim=32, conv="2d", prediction="x0", batch_size=2,
                        frame_residual=True, epochs=1, warmup_steps=2, sample_steps=2, solver="euler", fps=15),
    "world-cpu": dict(video_height=60, video_width=64, sequence_length=1, frame_stride=2, context_frames=4,
                      context_noise=0.2, play_noise=0.05, frame_residual=True,
                      patch_size=2, base_ch=32, channel_mults=(1, 2), time_dim=128, conv="2d", prediction="x0",
                      batch_size=16, lr=5e-4, warmup_steps=200, ema_decay=0.995, sample_steps=4, solver="euler",
                      fps=15),
    "world-gpu": dict(video_height=240, video_width=256, sequence_length=1, frame_stride=2, context_frames=4,
                      patch_size=4, base_ch=96, channel_mults=(1, 2, 4), num_res_blocks=2, time_dim=256,
                      conv="2d", prediction="x0", frame_residual=True, batch_size=32, lr=2e-4, warmup_steps=500,
                      ema_decay=0.999,
                      sample_steps=4, solver="euler", fps=15),
}


def preset(name: str, **overrides) -> Config:
    """The named preset's Config, with `overrides` applied on top."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return Config(**{**PRESETS[name], **overrides})


TRUE_WORDS, FALSE_WORDS = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def parse_overrides(pairs: list[str]) -> dict:
    """Turn CLI `key=value` strings into typed overrides using the dataclass field types. A value that does
    not parse as its field's type is an error naming the key (never a silent default: amp=maybe is refused)."""
    defaults = Config()
    out: dict = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not hasattr(defaults, key):
            raise ValueError(f"bad --set {pair!r}: expected key=value with key one of "
                             f"{[f.name for f in fields(Config)]}")
        current, word = getattr(defaults, key), raw.strip().lower()
        if isinstance(current, bool):
            if word not in TRUE_WORDS + FALSE_WORDS:
                raise ValueError(f"--set {pair}: {key} is true or false; write one of "
                                 f"{'/'.join(TRUE_WORDS)} or {'/'.join(FALSE_WORDS)}")
            out[key] = word in TRUE_WORDS
            continue
        kind = "a tuple of integers, e.g. 1,2,4" if isinstance(current, tuple) else \
            f"{'an' if type(current) is int else 'a'} {type(current).__name__}, e.g. {key}={current}"
        try:
            if isinstance(current, tuple):
                out[key] = tuple(int(v) for v in raw.strip("()[] ").split(",") if v.strip())
            else:
                out[key] = type(current)(raw)
        except ValueError:
            raise ValueError(f"--set {pair}: {key} takes {kind}, not {raw!r}") from None
    return out


__all__ = ["SOLVERS", "TIME_SAMPLINGS", "CONVS", "MOVING_FROM", "Config", "PRESETS", "preset", "parse_overrides",
           "validate"]
