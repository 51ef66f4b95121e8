"""The Config dataclass (mariofm.config): round trips, presets, `--set` parsing, and validate()'s messages.

Every error is checked by its whole message: a setting that cannot work must be named with a value that does.
"""

import json
import re

import pytest

from mariofm.config import (
    _POSITIVE,
    CONVS,
    PREDICTIONS,
    PRESETS,
    SOLVERS,
    TIME_SAMPLINGS,
    Config,
    parse_overrides,
    preset,
    validate,
)


def message(text: str) -> str:
    """A pytest.raises(match=...) pattern for exactly `text`."""
    return "^" + re.escape(text) + "$"


# --- round trips and presets ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_round_trips_through_json(name):
    cfg = preset(name)
    d = cfg.to_dict()
    assert isinstance(d["channel_mults"], list) and json.loads(json.dumps(d)) == d
    again = Config.from_dict(json.loads(json.dumps(d)))
    assert again == cfg and isinstance(again.channel_mults, tuple)


def test_a_list_of_channel_mults_becomes_a_tuple():
    cfg = Config(channel_mults=[1, 2], video_height=32, video_width=32)
    assert cfg.channel_mults == (1, 2) and cfg.levels == 2


def test_unknown_fields_are_named_with_the_valid_ones():
    valid = sorted(Config().to_dict())
    with pytest.raises(ValueError, match=message(f"unknown config field(s) ['bogus', 'lr_max']; valid fields: "
                                                 f"{valid}")):
        Config.from_dict({**Config().to_dict(), "lr_max": 1.0, "bogus": 2})


def test_replace_and_diff():
    cpu = preset("cpu")
    lower = cpu.replace(lr=3e-4)
    assert lower.lr == 3e-4 and cpu.lr == 5e-4 and lower.base_ch == cpu.base_ch == 32
    assert lower.diff(cpu) == {"lr": (3e-4, 5e-4)}
    assert cpu.diff(cpu) == {}
    assert preset("smoke").diff(preset("smoke", channel_mults=[1, 3])) == {"channel_mults": ([1, 2], [1, 3])}


def test_preset_overrides_go_on_top_of_the_preset():
    cfg = preset("cpu", lr=3e-4, base_ch=16)
    assert (cfg.lr, cfg.base_ch, cfg.patch_size, cfg.video_height) == (3e-4, 16, 2, 60)


def test_an_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match=message(f"unknown preset 'gpu'; choose one of {sorted(PRESETS)}")):
        preset("gpu")


# --- validate -------------------------------------------------------------------------------------------------
def test_the_smallest_valid_sizes_are_one():
    """1 is a positive integer for every size field (one level, no patches: H and W need no divisor)."""
    cfg = Config(**{name: 1 for name in _POSITIVE}, channel_mults=(1,))
    assert cfg.video_height == cfg.batch_size == cfg.patch_size == 1


@pytest.mark.parametrize("name", _POSITIVE)
@pytest.mark.parametrize("value", [0, -2, 2.0])
def test_sizes_must_be_positive_integers(name, value):
    with pytest.raises(ValueError, match=message(f"config field {name}={value!r} must be a positive integer, "
                                                 f"e.g. {name}=1")):
        Config(**{name: value})


@pytest.mark.parametrize("name, bad, choices", [("prediction", "eps", PREDICTIONS), ("conv", "1d", CONVS),
                                                ("time_sampling", "normal", TIME_SAMPLINGS),
                                                ("solver", "rk4", SOLVERS)])
def test_choices_are_listed(name, bad, choices):
    with pytest.raises(ValueError, match=message(f"config field {name}={bad!r} must be one of {choices}")):
        Config(**{name: bad})
    for good in choices:
        assert getattr(Config(**{name: good}), name) == good


@pytest.mark.parametrize("mults", [(), (1, 0), (2, -1)])
def test_channel_mults_must_be_positive(mults):
    with pytest.raises(ValueError, match=message(f"config field channel_mults={mults!r} must be positive, "
                                                 "e.g. (1, 2, 4)")):
        Config(channel_mults=mults, video_height=64, video_width=64)


@pytest.mark.parametrize("changes, name, value, factor, ok", [
    (dict(video_height=30, patch_size=2, channel_mults=(1, 2)), "video_height", 30, 4, 32),
    (dict(video_width=66, patch_size=2, channel_mults=(1, 2)), "video_width", 66, 4, 64),
    (dict(video_height=2, patch_size=2, channel_mults=(1, 2)), "video_height", 2, 4, 4),
    (dict(video_height=240, patch_size=1, channel_mults=(1, 2, 2, 2, 2, 2)), "video_height", 240, 32, 256),
])
def test_frame_sizes_must_divide_by_the_patch_and_levels(changes, name, value, factor, ok):
    cfg = dict(video_height=64, video_width=64) | changes
    mults = cfg["channel_mults"]
    with pytest.raises(ValueError, match=message(
            f"config field {name}={value} must be divisible by patch_size·2^(levels-1)={factor} for "
            f"patch_size={cfg['patch_size']}, channel_mults={mults}; e.g. {name}={ok}")):
        Config(**cfg)
    Config(**(cfg | {name: ok}))  # the suggested value works


@pytest.mark.parametrize("name", ["lr", "ema_decay", "time_scale", "t_min", "grad_clip"])
@pytest.mark.parametrize("value", [0.0, -0.1, float("inf"), float("nan")])
def test_rates_and_scales_must_be_finite_and_positive(name, value):
    with pytest.raises(ValueError, match=message(f"config field {name}={value!r} must be a finite number > 0")):
        Config(**{name: value})
    assert getattr(Config(**{name: 1e-6}), name) == 1e-6


@pytest.mark.parametrize("decay", [1.0, 1.5])
def test_ema_decay_must_be_below_one(decay):
    with pytest.raises(ValueError, match=message(f"config field ema_decay={decay!r} must lie in (0, 1), "
                                                 "e.g. 0.999")):
        Config(ema_decay=decay)
    assert Config(ema_decay=0.9999).ema_decay == 0.9999


def test_a_2d_net_refuses_attention_across_frames():
    with pytest.raises(ValueError, match=message("config fields conv='2d' and temporal_attention=True contradict each "
                                                 "other: a 2d net keeps frames apart, the attention mixes them; use "
                                                 "conv='2+1d' for frames that interact, or temporal_attention=False")):
        Config(conv="2d", temporal_attention=True)
    assert Config(conv="2+1d", temporal_attention=True).temporal_attention


def test_grad_accum_must_divide_the_batch():
    with pytest.raises(ValueError, match=message("config field grad_accum=3 must divide batch_size=4 (each "
                                                 "micro-batch holds batch_size/grad_accum clips), e.g. grad_accum=1")):
        Config(batch_size=4, grad_accum=3)
    assert Config(batch_size=4, grad_accum=4).grad_accum == 4


def test_old_field_names_still_load():
    """The shipped model's metadata has grad_checkpoint (now recompute_activations) and video_duration (gone)."""
    old = {**Config().to_dict(), "video_duration": 5}
    del old["recompute_activations"]
    old["grad_checkpoint"] = True
    assert Config.from_dict(old) == Config(recompute_activations=True)


@pytest.mark.parametrize("changes, text", [
    (dict(context_frames=-1), "config field context_frames=-1 must be an integer >= 0 (0: unconditional video model; "
                              "e.g. 4 for a world model)"),
    (dict(context_frames=2.0), "config field context_frames=2.0 must be an integer >= 0 (0: unconditional video "
                               "model; e.g. 4 for a world model)"),
    (dict(play_noise=0.2, context_noise=0.1), "config fields play_noise=0.2 and context_noise=0.1 must satisfy "
     "0 <= play_noise <= context_noise: the model only knows the noise levels it saw in training (e.g. "
     "context_noise=0.1, play_noise=0.02)"),
    (dict(play_noise=-0.01), "config fields play_noise=-0.01 and context_noise=0.1 must satisfy 0 <= play_noise <= "
     "context_noise: the model only knows the noise levels it saw in training (e.g. context_noise=0.1, "
     "play_noise=0.02)"),
    (dict(frame_residual=True, prediction="x0"), "config field frame_residual=True needs a world model with "
     "x0-prediction: set context_frames > 0 and prediction='x0' (or frame_residual=False)"),
    (dict(frame_residual=True, context_frames=2, sequence_length=1), "config field frame_residual=True needs a "
     "world model with x0-prediction: set context_frames > 0 and prediction='x0' (or frame_residual=False)"),
    (dict(context_frames=2, sequence_length=4), "config field sequence_length=4 must be 1 when context_frames=2: a "
     "world model predicts one frame at a time"),
])
def test_world_model_settings_that_cannot_work(changes, text):
    with pytest.raises(ValueError, match=message(text)):
        Config(**changes)


def test_world_model_settings_at_their_limits_work():
    Config(play_noise=0.0, context_noise=0.0)  # no context noise at all
    Config(play_noise=0.1, context_noise=0.1)  # play with the most noise training saw
    Config(context_frames=2, sequence_length=1, prediction="x0", frame_residual=True)


def test_validate_checks_a_config_changed_after_construction():
    cfg = preset("smoke")
    cfg.base_ch = 0
    with pytest.raises(ValueError, match="base_ch=0"):
        validate(cfg)


# --- parse_overrides (--set key=value) ------------------------------------------------------------------------
def test_overrides_take_the_type_of_the_field():
    out = parse_overrides(["lr=3e-4", "base_ch=16", "conv=2+1d", "time_scale=50", "channel_mults=(1, 2, 4)"])
    assert out == {"lr": 3e-4, "base_ch": 16, "conv": "2+1d", "time_scale": 50.0, "channel_mults": (1, 2, 4)}
    assert type(out["base_ch"]) is int and type(out["time_scale"]) is float
    assert parse_overrides(["channel_mults=[1,2]"]) == {"channel_mults": (1, 2)}
    assert parse_overrides(["channel_mults=1,2,"]) == {"channel_mults": (1, 2)}
    assert parse_overrides(["conv=a=b"]) == {"conv": "a=b"}  # the first "=" ends the key (validate refuses it)


@pytest.mark.parametrize("raw, value", [("1", True), ("true", True), ("True", True), ("YES", True), ("on", True),
                                        (" yes ", True), ("0", False), ("false", False), ("no", False),
                                        ("OFF", False)])
def test_boolean_overrides(raw, value):
    assert parse_overrides([f"amp={raw}"]) == {"amp": value}


def test_a_later_override_wins_and_overrides_feed_preset():
    out = parse_overrides(["lr=1e-3", "lr=2e-3", "recompute_activations=yes"])
    assert out == {"lr": 2e-3, "recompute_activations": True}
    assert parse_overrides(["amp=off", "base_ch=16"]) == {"amp": False, "base_ch": 16}  # a switch, then more
    assert preset("smoke", **out).lr == 2e-3


@pytest.mark.parametrize("pair, text", [
    ("amp=maybe", "--set amp=maybe: amp is true or false; write one of true/1/yes/on or false/0/no/off"),
    ("base_ch=wide", "--set base_ch=wide: base_ch takes an int, e.g. base_ch=64, not 'wide'"),
    ("lr=fast", "--set lr=fast: lr takes a float, e.g. lr=0.0001, not 'fast'"),
    ("channel_mults=1,x", "--set channel_mults=1,x: channel_mults takes a tuple of integers, e.g. 1,2,4, not '1,x'"),
])
def test_values_of_the_wrong_type_name_the_key_and_the_type(pair, text):
    with pytest.raises(ValueError, match=message(text)):
        parse_overrides([pair])


@pytest.mark.parametrize("pair", ["lr", "learning_rate=1e-3", "=3"])
def test_bad_overrides_name_the_valid_keys(pair):
    keys = list(Config().to_dict())
    with pytest.raises(ValueError, match=message(f"bad --set {pair!r}: expected key=value with key one of {keys}")):
        parse_overrides([pair])


# --- button guidance (mariofm/conditioning.py) ----------------------------------------------------------------
WORLD = dict(context_frames=4, sequence_length=1)


@pytest.mark.parametrize("p", [1.0, 1.5, -0.1])
def test_action_dropout_is_a_share_below_one(p):
    with pytest.raises(ValueError, match=message(f"config field action_dropout={p!r} must lie in [0, 1): the share "
                                                 "of training samples whose buttons are replaced by 'unknown' (e.g. "
                                                 "0.15; 0 = off)")):
        Config(**WORLD, action_dropout=p)
    assert Config(**WORLD, action_dropout=0.99).action_dropout == 0.99


@pytest.mark.parametrize("w", [-0.5, float("inf")])
def test_action_guidance_is_finite_and_not_negative(w):
    with pytest.raises(ValueError, match=message(f"config field action_guidance={w!r} must be a finite number >= 0 "
                                                 "(1 = no guidance, e.g. 2 doubles the buttons' effect)")):
        Config(**WORLD, action_dropout=0.15, action_guidance=w)
    for ok in (0.0, 0.5, 3.0):  # 0 = the "unknown buttons" model alone; below 1 weakens the buttons
        assert Config(**WORLD, action_dropout=0.15, action_guidance=ok).action_guidance == ok


@pytest.mark.parametrize("changes", [dict(action_guidance=2.0), dict(WORLD, action_guidance=2.0),
                                     dict(action_dropout=0.15, action_guidance=2.0)])
def test_guidance_needs_a_world_model_trained_with_action_dropout(changes):
    with pytest.raises(ValueError, match=message("config field action_guidance=2.0 needs a world model trained with "
                                                 "action_dropout > 0 (it has the 'unknown buttons' embedding "
                                                 "guidance compares with); set action_guidance=1, or train with e.g. "
                                                 "action_dropout=0.15")):
        Config(**changes)
    assert Config(**WORLD, action_dropout=0.15, action_guidance=2.0).action_guidance == 2.0
    assert Config(**WORLD, action_dropout=0.9, action_guidance=2.0).action_dropout == 0.9


@pytest.mark.parametrize("shift, k", [(0.0, 4), (-0.5, 4), (float("inf"), 4), (float("nan"), 4), (0.5, 0)])
def test_the_sampling_grids_shift_is_positive_and_for_a_world_model(shift, k):
    with pytest.raises(ValueError, match=message(f"config field sample_shift={shift!r} must be a positive number, "
                                                 f"and 1 unless context_frames > 0 (it is {k}): the shift of a world "
                                                 "model's sampling grid (mariofm.sample.time_grid; 1 = uniform, e.g. "
                                                 "0.5 puts more steps near the data)")):
        Config(context_frames=k, sequence_length=1 if k else 8, sample_shift=shift)
    for ok in (0.01, 1.0, 4.0):
        assert Config(**WORLD, sample_shift=ok).sample_shift == ok
    assert Config(sample_shift=1.0).sample_shift == 1.0  # a video model keeps the uniform grid


@pytest.mark.parametrize("eta, changes", [(-0.1, {}), (1.01, {}), (float("nan"), {}), (0.5, dict(solver="heun")),
                                          (0.5, dict(context_frames=0, sequence_length=8))])
def test_fresh_noise_in_the_sampler_is_a_share_for_a_world_models_euler_steps(eta, changes):
    fields = {**WORLD, "solver": "euler", **changes}
    with pytest.raises(ValueError, match=message(f"config field sample_renoise={eta!r} must lie in [0, 1], and be 0 "
                                                 f"unless context_frames > 0 (it is {fields['context_frames']}) and "
                                                 f"solver='euler' (it is {fields['solver']!r}): the share of fresh "
                                                 "noise each Euler step of a world model's sampler puts back "
                                                 "(mariofm.sample.sample_renoised; 0 = the ODE)")):
        Config(**fields, sample_renoise=eta)
    for ok in (0.0, 0.01, 1.0):
        assert Config(**WORLD, solver="euler", sample_renoise=ok).sample_renoise == ok
    assert Config(**WORLD, solver="heun").sample_renoise == 0.0  # the ODE needs no Euler steps


# --- training on the model's own frames (mariofm/own_frames.py) -------------------------------------------
@pytest.mark.parametrize("r, k", [(-1, 4), (1, 0), (1.0, 4)])
def test_own_frames_are_a_whole_number_for_a_world_model(r, k):
    with pytest.raises(ValueError, match=message(f"config field own_frames={r!r} must be an integer >= 0, and 0 "
                                                 f"unless context_frames > 0 (it is {k}): how many frames a world "
                                                 "model makes itself in training before the target (e.g. 2; more "
                                                 "than K: a chain whose last K frames are the context; 0 = off)")):
        Config(context_frames=k, sequence_length=1 if k else 8, own_frames=r)
    assert Config(**WORLD, own_frames=8).own_frames == 8 and Config(**WORLD, own_frames=0).own_frames == 0


@pytest.mark.parametrize("share", [0.0, -0.5, 1.01, float("nan")])
def test_own_share_is_a_share_above_zero(share):
    with pytest.raises(ValueError, match=message(f"config field own_share={share!r} must lie in (0, 1]: the share "
                                                 "of each batch whose context frames the model makes itself "
                                                 "(own_frames; e.g. 0.5)")):
        Config(**WORLD, own_frames=2, own_share=share)
    assert Config(**WORLD, own_frames=2, own_share=1.0).own_share == 1.0
    assert Config(**WORLD, own_frames=2, own_share=0.01).own_share == 0.01


def test_only_a_world_model_is_told_which_context_frames_are_its_own():
    with pytest.raises(ValueError, match=message("config field mark_own=True tells a world model which context "
                                                 "frames it made itself: it needs context_frames > 0 (or "
                                                 "mark_own=False)")):
        Config(mark_own=True)
    assert Config(**WORLD, mark_own=True).mark_own


@pytest.mark.parametrize("mark, mark_own", [(-0.1, True), (1.01, True), (float("nan"), True), (0.9, False)])
def test_the_play_mark_is_a_number_in_0_1_and_1_unless_the_model_reads_marks(mark, mark_own):
    with pytest.raises(ValueError, match=message(f"config field own_mark={mark!r} is the mark a marked world model's "
                                                 "own frames get when it plays: a number in [0, 1] (1 as in "
                                                 "training, 0 read as real), and 1 unless mark_own=True")):
        Config(**WORLD, mark_own=mark_own, own_mark=mark)
    for ok in (0.0, 0.5, 1.0):
        assert Config(**WORLD, mark_own=True, own_mark=ok).own_mark == ok
    assert Config(**WORLD).own_mark == 1.0


@pytest.mark.parametrize("field, text", [
    ("own_draw", "config field own_draw=True draws how many of the own_frames each sample makes: it needs "
                 "own_frames > 0 (e.g. own_frames=8), or own_draw=False"),
    ("own_align", "config field own_align=True moves the target to the camera of the model's own frames: it needs "
                  "own_frames > 0 (e.g. own_frames=4), or own_align=False")])
def test_drawn_own_counts_and_aligned_targets_need_own_frames(field, text):
    with pytest.raises(ValueError, match=message(text)):
        Config(**WORLD, **{field: True})
    assert getattr(Config(**WORLD, own_frames=8, **{field: True}), field)


@pytest.mark.parametrize("changes", [dict(moving_weight=-1.0), dict(moving_weight=float("inf")),
                                     dict(moving_weight=4.0, context_frames=0, sequence_length=8)])
def test_moving_weight_is_a_finite_weight_of_a_world_model(changes):
    value = changes["moving_weight"]
    with pytest.raises(ValueError, match=message(f"config field moving_weight={value!r} must be a finite number >= "
                                                 "0, and 0 unless context_frames > 0: how much more a world "
                                                 "model's loss weighs the pixels the camera does not explain (e.g. "
                                                 "4; 0 = every pixel alike)")):
        Config(**{**WORLD, **changes})
    assert Config(**WORLD, moving_weight=4.0).moving_weight == 4.0 and Config().moving_weight == 0


def test_moving_pixels_from_the_context_need_two_context_frames():
    with pytest.raises(ValueError, match=message("config field moving_from='context' compares the last two context "
                                                 "frames: it needs context_frames >= 2 (it is 1), or "
                                                 "moving_from='target'")):
        Config(context_frames=1, sequence_length=1, moving_weight=4.0)
    assert Config(context_frames=1, sequence_length=1, moving_weight=4.0, moving_from="target").moving_weight == 4
    assert Config(context_frames=1, sequence_length=1, moving_from="context").moving_weight == 0  # off: no need
    assert Config(context_frames=2, sequence_length=1, moving_weight=4.0).context_frames == 2  # two are enough
    with pytest.raises(ValueError, match="moving_from"):
        Config(**WORLD, moving_from="sprites")


@pytest.mark.parametrize("changes", [dict(wall_share=-0.1), dict(wall_share=1.0), dict(wall_share=float("nan")),
                                     dict(wall_share=0.25, context_frames=0, sequence_length=8),
                                     dict(wall_share=0.25, context_frames=1)])
def test_wall_share_is_a_share_below_one_of_a_world_model_that_sees_mario_move(changes):
    value = changes["wall_share"]
    with pytest.raises(ValueError, match=message(f"config field wall_share={value!r} must lie in [0, 1), and be 0 "
                                                 "unless a world model's windows hold two frames before the next one "
                                                 "(context_frames + own_frames >= 2) to see Mario move: the share of "
                                                 "its training windows drawn again from those where a wall holds "
                                                 "Mario (e.g. 0.25; 0 = every window once)")):
        Config(**{**WORLD, **changes})
    assert Config(**WORLD, wall_share=0.99).wall_share == 0.99 and Config().wall_share == 0
    assert Config(**{**WORLD, "context_frames": 1}, own_frames=1, wall_share=0.25).wall_share == 0.25  # 1 + 1 frames
