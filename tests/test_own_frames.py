"""Training a world model on its own frames (cfg.own_frames, mariofm.own_frames.own_context) and starting a run from
another model's weights (train --init)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from mariofm.conditioning import widen_context
from mariofm.config import preset
from mariofm.data import collate
from mariofm.own_frames import aligned_target, camera_offset, own_context
from mariofm.rollout import rollout
from mariofm.unet import VideoUNet, finer_patches
from mariofm.world_data import NextFrames

K = preset("world-smoke").context_frames


def tiny(**overrides) -> VideoUNet:
    """A world-smoke net whose zero-init output conv is perturbed, so that its frames depend on its inputs."""
    torch.manual_seed(0)
    model = VideoUNet(preset("world-smoke", **overrides))
    torch.nn.init.normal_(model.head[-1].weight, std=0.1)
    return model


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """(3, T, H, W) in [-1, 1] -> uint8 (T, H, W, 3)."""
    return frames.add(1).mul(127.5).round().to(torch.uint8).permute(1, 2, 3, 0).numpy()


@pytest.mark.parametrize("own_frames", [1, K, K + 2])
def test_own_frames_are_the_frames_the_model_makes_when_it_plays(mario_clips, own_frames):
    data = NextFrames(mario_clips, K, (32, 32), 2, split="all", own_frames=own_frames, progress=False)
    batch = collate([data[i] for i in (3, 40, 77)])
    context, bits = batch["context"], batch["actions"]
    assert context.shape[2] == K + own_frames and bits.shape[1] == K + own_frames + 1
    model = tiny().train()
    window, window_bits, marks = own_context(model, context, bits, 1, own_frames, torch.Generator().manual_seed(5))
    assert window.shape == (3, 3, K, 32, 32) and torch.equal(window_bits, bits[:, own_frames:])
    made_here = min(own_frames, K)  # marks: 1 for each frame the model made, only in sample 0
    assert marks.tolist() == [[0.0] * (K - made_here) + [1.0] * made_here] + [[0.0] * K] * 2
    assert model.training  # its mode is given back
    # sample 0: its last own_frames frames (all K, past K) are a rollout from its first K real frames and buttons
    made = rollout(model, to_uint8(context[0, :, :K]), bits[0, :K + own_frames], seed=5)
    assert np.array_equal(to_uint8(window[0, :, max(K - own_frames, 0):]), made[-K:])
    if own_frames < K:  # the real frames before them
        assert torch.equal(window[0, :, :K - own_frames], context[0, :, own_frames:K])
    assert not torch.equal(window[0], context[0, :, own_frames:])  # made frames are not the recording
    assert torch.equal(window[1:], context[1:, :, own_frames:])  # the other samples keep the recording
    g = torch.Generator().manual_seed(5)
    real, _, none = own_context(model, context, bits, 0, own_frames, g)  # no sample of its own: nothing made or drawn
    assert torch.equal(real, context[:, :, own_frames:]) and not none.any()
    assert torch.equal(g.get_state(), torch.Generator().manual_seed(5).get_state())


def test_own_frames_are_made_on_the_grid_the_model_plays_with(mario_clips):
    """cfg.sample_shift reaches the frames made in training as it reaches a rollout's (mariofm.sample.time_grid)."""
    data = NextFrames(mario_clips, K, (32, 32), 2, split="all", own_frames=1, progress=False)
    batch = collate([data[i] for i in (3, 40)])
    context, bits = batch["context"], batch["actions"]
    model = tiny(sample_shift=0.5).train()
    window, _, _ = own_context(model, context, bits, 1, 1, torch.Generator().manual_seed(5))
    start = to_uint8(context[0, :, :K])
    assert np.array_equal(to_uint8(window[0, :, -1:]), rollout(model, start, bits[0, :K + 1], seed=5))
    assert not np.array_equal(to_uint8(window[0, :, -1:]), rollout(model, start, bits[0, :K + 1], seed=5, shift=1.0))


@pytest.mark.parametrize("lag", [-3, 2])
def test_the_aligned_target_is_the_real_next_frame_seen_from_the_own_frames_camera(lag):
    """A level wider than the screen, each frame a window of it: the real camera at 10, the own frame's at 10 + lag,
    the game moves 1 pixel into the target. Aligned, the target is the window at 10 + lag + 1, except the |lag|
    columns the real frame has no pixels for (weight 0) and the HUD (8 of 60 rows), which stays where it is. A
    sample whose own frame is the real one keeps its target and weight 1."""
    g = torch.Generator().manual_seed(0)
    level = torch.randint(0, 256, (3, 60, 90), generator=g) / 127.5 - 1
    hud = torch.full((3, 8, 64), 0.5)
    view = lambda c: torch.cat([hud, level[:, 8:, c:c + 64]], dim=1)  # noqa: E731
    real, own, target = torch.stack([view(10)] * 2), torch.stack([view(10 + lag), view(10)]), view(11)
    assert camera_offset(real, own).tolist() == [lag, 0]
    out, weight = aligned_target(torch.stack([target] * 2)[:, :, None], real, own)
    known = slice(0, 64 - lag) if lag > 0 else slice(-lag, 64)
    want = view(11 + lag)
    assert torch.equal(out[0, :, 0, :, known], want[:, :, known]) and torch.equal(out[1, :, 0], target)
    assert weight.shape == (2, 1, 1, 60, 64) and weight[0, 0, 0, 8:].sum() == 52 * (64 - abs(lag))
    assert (weight[0, 0, 0, 8:, known] == 1).all() and (weight[0, 0, 0, :8] == 1).all() and (weight[1] == 1).all()
    assert not torch.equal(want, target)  # the moved target is another picture


def test_validation_data_keeps_real_context_frames(mario_clips):
    from mariofm.world_data import training_data

    cfg = preset("world-smoke", own_frames=1)
    train_set, val_set = (training_data(cfg, mario_clips, split, progress=False) for split in ("train", "val"))
    assert train_set[0]["context"].shape[1] == K + 1 and val_set[0]["context"].shape[1] == K


@pytest.mark.parametrize("count", [1, K, K + 1])
def test_a_drawn_count_plays_only_the_last_frames_and_keeps_the_real_ones_before(mario_clips, count):
    own_frames = K + 1  # cfg.own_draw: each own sample makes `count` of the R = own_frames frames, the last ones
    data = NextFrames(mario_clips, K, (32, 32), 2, split="all", own_frames=own_frames, progress=False)
    batch = collate([data[i] for i in (3, 40, 77)])
    context, bits = batch["context"], batch["actions"]
    model = tiny().train()
    window, _, marks = own_context(model, context, bits, 1, own_frames, torch.Generator().manual_seed(5),
                                   torch.tensor([count]))
    made_here = min(count, K)
    assert marks[0].tolist() == [0.0] * (K - made_here) + [1.0] * made_here and not marks[1:].any()
    # the rollout from the K real frames before its first own frame, as it plays
    first = own_frames - count
    made = rollout(model, to_uint8(context[0, :, first:first + K]), bits[0, first:first + K + count], seed=5)
    assert np.array_equal(to_uint8(window[0, :, K - made_here:]), made[-made_here:])
    assert torch.equal(window[0, :, :K - made_here], context[0, :, own_frames:own_frames + K - made_here])
    assert torch.equal(window[1:], context[1:, :, own_frames:])


def test_drawn_counts_mix_in_one_batch_and_all_r_is_the_fixed_count(mario_clips):
    own_frames = K + 1
    data = NextFrames(mario_clips, K, (32, 32), 2, split="all", own_frames=own_frames, progress=False)
    batch = collate([data[i] for i in (3, 40, 77)])
    context, bits, model = batch["context"], batch["actions"], tiny()
    fixed = own_context(model, context, bits, 3, own_frames, torch.Generator().manual_seed(5))
    drawn = own_context(model, context, bits, 3, own_frames, torch.Generator().manual_seed(5),
                        torch.full((3,), own_frames))
    assert all(torch.equal(a, b) for a, b in zip(fixed, drawn))  # every count R: the same frames and noise
    window, _, marks = own_context(model, context, bits, 3, own_frames, torch.Generator().manual_seed(5),
                                   torch.tensor([1, own_frames, 2]))
    assert marks.tolist() == [[0.0] * (K - 1) + [1.0], [1.0] * K, [0.0] * (K - 2) + [1.0] * 2]
    assert torch.equal(window[0, :, :K - 1], context[0, :, own_frames:-1])  # one own frame: the rest is real
    assert not torch.equal(window[0, :, -1], context[0, :, -1])
    # each sample plays from its own recording: another recording for sample 0 leaves the others' frames as they were
    other = context.clone()
    other[0] = context[0].flip(-1)
    again, _, _ = own_context(model, other, bits, 3, own_frames, torch.Generator().manual_seed(5),
                              torch.tensor([1, own_frames, 2]))
    assert torch.equal(again[1:], window[1:]) and not torch.equal(again[0], window[0])


def test_a_marked_model_makes_its_own_frames_reading_the_marks_a_rollout_gives(mario_clips):
    own_frames = K + 1
    data = NextFrames(mario_clips, K, (32, 32), 2, split="all", own_frames=own_frames, progress=False)
    batch = collate([data[i] for i in (3, 40)])  # two samples: marks (B, K) = (2, K), not one row per colour
    context, bits = batch["context"], batch["actions"]
    model = marked(tiny()).train()
    for p in (model.world.own_embed.weight, model.world.own_embed.bias):
        torch.nn.init.normal_(p, std=1.0)  # the marks change the frames
    window, _, marks = own_context(model, context, bits, 1, own_frames, torch.Generator().manual_seed(5))
    assert marks.tolist() == [[1.0] * K, [0.0] * K]
    made = rollout(model, to_uint8(context[0, :, :K]), bits[0, :K + own_frames], seed=5)  # it marks what it made
    assert np.array_equal(to_uint8(window[0]), made[-K:])
    assert torch.equal(window[1], context[1, :, own_frames:])


@pytest.mark.parametrize("own", [dict(own_frames=1), dict(own_frames=K, own_draw=True)])
def test_training_on_own_frames_uses_them_and_resumes_to_the_same_weights(mario_clips, tmp_path, own):
    from mariofm.train import CHECKPOINT, load_checkpoint, train

    cfg = preset("world-smoke", own_share=1.0, **own)  # drawn counts come from the run's generator: resumed too
    whole = train(cfg, mario_clips, tmp_path / "whole", steps=4, progress=False)
    train(cfg, mario_clips, tmp_path / "split", steps=4, stop_at=2, progress=False)
    split = train(None, mario_clips, tmp_path / "split", resume=True, progress=False)
    half = train(preset("world-smoke", own_share=0.5, **own), mario_clips, tmp_path / "half", steps=4,
                 progress=False)
    a, b, c = (load_checkpoint(run / CHECKPOINT)["model"] for run in (whole, split, half))
    for name, value in a.items():
        assert torch.equal(value, b[name]), f"model.{name} differs after resuming"
    assert any(not torch.equal(value, c[name]) for name, value in a.items())  # which samples are own matters


def test_a_new_run_starts_from_another_models_weights(mario_clips, tmp_path):
    from mariofm.checkpoint import load_model
    from mariofm.cli import main
    from mariofm.train import train

    # another seed: its weights are not the ones a new run (seed 0) would start from anyway
    first = train(preset("world-smoke", seed=7), mario_clips, tmp_path / "first", steps=3, progress=False)
    # without --preset the new run takes the model's config, with --set on top
    assert main(["train", "--set", "own_frames=1", "--data", str(mario_clips), "--out", str(tmp_path / "tuned"),
                 "--steps", "1", "--init", str(first)]) == 0
    assert json.loads((tmp_path / "tuned" / "run.json").read_text())["init"] == str(first.resolve())
    assert load_model(tmp_path / "tuned")[1] == preset("world-smoke", seed=7, own_frames=1)
    start, tuned = load_model(first)[0].state_dict(), load_model(tmp_path / "tuned", ema=False)[0].state_dict()
    # one small step away from the weights it started from, far closer to them than a seed-0 net is
    torch.manual_seed(0)
    fresh = VideoUNet(preset("world-smoke")).state_dict()
    moved = sum((tuned[n] - w).abs().sum() for n, w in start.items())
    assert 0 < moved < 0.1 * sum((fresh[n] - w).abs().sum() for n, w in start.items())
    # a part whose output starts at zero may be added (mariofm.state.ADDED_AT_ZERO): the run starts from it too
    assert main(["train", "--set", "spatial_attention=true", "--data", str(mario_clips), "--out",
                 str(tmp_path / "attended"), "--steps", "1", "--init", str(first)]) == 0
    attended = load_model(tmp_path / "attended", ema=False)[0]
    assert attended.cfg.spatial_attention and attended.space_attn.proj.weight.abs().max() > 0  # it trained
    # a longer context: the weights read the newest K frames (mariofm.conditioning.widen_context), a step away
    assert main(["train", "--set", f"context_frames={K + 1}", "--data", str(mario_clips), "--out",
                 str(tmp_path / "longer"), "--steps", "1", "--init", str(first)]) == 0
    longer, widened = load_model(tmp_path / "longer", ema=False)[0].state_dict(), widen_context(start, K, K + 1)
    torch.manual_seed(0)
    fresh_longer = VideoUNet(preset("world-smoke", context_frames=K + 1)).state_dict()
    assert sum((longer[n] - w).abs().sum() for n, w in widened.items()) < \
        0.1 * sum((fresh_longer[n] - w).abs().sum() for n, w in widened.items())
    for name in ("stem.weight", "world.action_embed.0.weight"):  # the widened parts: one AdamW step (lr 1e-4) away
        assert (longer[name] - widened[name]).abs().max() < 10 * preset("world-smoke").lr
    with pytest.raises(ValueError, match=re.escape(f"--init {first}: context_frames=1 is shorter than the {K} frames")):
        train(preset("world-smoke", context_frames=1), mario_clips, tmp_path / "shorter", steps=1, init=first,
              progress=False)
    wider = preset("world-smoke", base_ch=16)
    with pytest.raises(RuntimeError) as torch_error:  # torch's words for the misfit: the message names its last line
        VideoUNet(wider).load_state_dict(start)
    misfit = str(torch_error.value).splitlines()[-1].strip()
    with pytest.raises(ValueError, match=re.escape(f"--init {first}: its weights do not fit the net this run's config "
                                                   f"builds ({misfit}); give the architecture fields")):
        train(wider, mario_clips, tmp_path / "wider", steps=1, init=first, progress=False)
    with pytest.raises(ValueError, match="--init .* with --resume"):
        train(None, mario_clips, first, resume=True, init=first, progress=False)


@pytest.mark.parametrize("cfg", [preset("smoke"), preset("world-smoke", mark_own=True, patch_size=2)])
def test_a_run_started_from_a_model_takes_every_one_of_its_weights(cfg, tmp_path):
    from mariofm.checkpoint import load_model
    from mariofm.schedule import Budget
    from mariofm.state import Run

    def started(config):
        run = Run.create(config, torch.device("cpu"), Budget(steps=1), 1)
        run.start_from(tmp_path)
        return run.model.state_dict()

    source = Run.create(cfg, torch.device("cpu"), Budget(steps=1), 1)
    torch.manual_seed(3)
    for p in source.ema.module.parameters():  # the mark embedding too, which a new net starts at zero
        torch.nn.init.normal_(p, std=0.1)
    source.save(tmp_path)
    weights = load_model(tmp_path)[0].state_dict()
    assert all(torch.equal(value, weights[name]) for name, value in started(cfg).items())
    if cfg.context_frames:  # a longer context: the stem's channels are patch² each (widen_context's `patch`)
        widened = widen_context(weights, K, K + 1, 3, cfg.patch_size)
        longer = started(cfg.replace(context_frames=K + 1))
        assert all(torch.equal(value, widened[name]) for name, value in longer.items())
        # larger frames with finer patches: the stem and head spread out (mariofm.unet.finer_patches)
        finer = finer_patches(weights, 2, 4)
        fine = started(cfg.replace(patch_size=4, video_height=64, video_width=64))
        assert all(torch.equal(value, finer[name]) for name, value in fine.items())
        with pytest.raises(ValueError, match=re.escape(f"--init {tmp_path}: patch_size=3 is not a multiple")):
            started(cfg.replace(patch_size=3, video_height=48, video_width=48))
    else:  # a world model from a video model: the clear error, not a widened context
        with pytest.raises(ValueError, match=re.escape(f"--init {tmp_path}: its weights do not fit the net")):
            started(preset("world-smoke"))


def test_a_single_recording_trains_on_own_frames_and_is_validated_on_real_ones(mario_clips, tmp_path):
    import shutil

    from mariofm.train import train

    stem = sorted(mario_clips.glob("*.avi"))[0].stem
    for path in mario_clips.glob(f"{stem}.*"):  # the video, its buttons and its notes: no validation file
        shutil.copy(path, tmp_path / path.name)
    run = train(preset("world-smoke", own_frames=1), tmp_path, tmp_path / "run", steps=2, progress=False)
    assert (run / "rollout_epoch1.gif").is_file()  # the epoch's rollout and validation loss ran on K real frames


def marked(model: VideoUNet, **overrides) -> VideoUNet:
    """The same net with cfg.mark_own (and `overrides`), its weights copied; what it adds starts as built."""
    copy = VideoUNet(model.cfg.replace(mark_own=True, **overrides))
    missing = copy.load_state_dict(model.state_dict(), strict=False).missing_keys
    assert {"world.own_embed.weight", "world.own_embed.bias"} <= set(missing)
    return copy


def test_a_model_told_which_context_frames_are_its_own_reads_the_marks_a_rollout_gives(mario_clips):
    from mariofm.conditioning import guided_velocity
    from mariofm.rollout import World, made_by_model, next_frame

    data = NextFrames(mario_clips, K, (32, 32), 2, split="all", progress=False)
    batch = collate([data[i] for i in (3, 40)])
    context, bits = batch["context"], batch["actions"]
    x, t = torch.randn(2, 3, 1, 32, 32, generator=torch.Generator().manual_seed(1)), torch.tensor([0.3, 0.7])
    plain = tiny().eval()
    model = marked(plain, action_dropout=0.15).eval()  # guided, as the shipped model plays (w != 1)
    mine, real = torch.ones(2, K), torch.zeros(2, K)
    # its embedding starts at zero: the marks change nothing yet, so a run started from a model without them
    # (train --init) begins with the model it started from
    assert torch.equal(model(x, t, context=context, actions=bits, own=mine),
                       plain(x, t, context=context, actions=bits))
    for p in (model.world.own_embed.weight, model.world.own_embed.bias, model.world.unknown_actions):
        torch.nn.init.normal_(p, std=1.0)
    v_mine, v_real = (model(x, t, context=context, actions=bits, own=own) for own in (mine, real))
    assert not torch.allclose(v_mine, v_real)  # now they do
    assert torch.equal(model(x, t, context=context, actions=bits), v_real)  # none given: all real
    assert torch.equal(plain(x, t, context=context, actions=bits, own=mine), plain(x, t, context=context, actions=bits))
    with pytest.raises(ValueError, match=re.escape(f"own must be (B, K) = (2, {K}): 1 for each context frame")):
        model(x, t, context=context, actions=bits, own=torch.ones(2, K + 1))
    # guidance (one call on a doubled batch) gives both halves the marks: v_unknown + w·(v_buttons − v_unknown)
    unknown = torch.ones(2, dtype=torch.bool)
    v_b, v_u = (model(x, t, context=context, actions=bits, own=mine, unknown=u) for u in (None, unknown))
    guided = guided_velocity(model, context, bits, 2.0, mine)(x, t)
    torch.testing.assert_close(guided, v_u + 2.0 * (v_b - v_u))
    assert not torch.allclose(guided, guided_velocity(model, context, bits, 2.0)(x, t))
    # a rollout marks each frame it makes: the first frame reads K real frames, the K-th and later only its own
    assert made_by_model(torch.tensor([[0.0, 0, 1, 1]])).tolist() == [[0, 1, 1, 1]]
    start, buttons = to_uint8(context[0]), bits[0, :K].repeat(3, 1)  # K real frames, then 2K of its own
    played = rollout(model, start, buttons, seed=2, guidance=2.0)
    ctx, own, g = context[:1], torch.zeros(1, K), torch.Generator().manual_seed(2)
    for i, frame in enumerate(played):
        assert own.tolist() == [[0.0] * (K - min(i, K)) + [1.0] * min(i, K)]  # i of its frames in the context
        step = next_frame(model, ctx, buttons[None, i:i + K + 1], model.cfg.sample_steps, model.cfg.solver, g,
                          guidance=2.0, own=own)
        assert np.array_equal(to_uint8(step[0]), frame[None]), f"frame {i} is not the one its marks give"
        ctx, own = torch.cat([ctx[:, :, 1:], step], dim=2), made_by_model(own)
    all_real = np.stack([to_uint8(next_frame(model, context[:1], buttons[None, :K + 1], model.cfg.sample_steps,
                                             model.cfg.solver, torch.Generator().manual_seed(2), 2.0)[0])[0]])
    assert np.array_equal(all_real, played[:1])  # the first frame's context is real: marks all 0
    # a World played step by step marks its frames the same way, and starts real again after reset
    world = World(model, start, buttons[:K], seed=2, guidance=2.0)
    for _ in range(2):
        assert np.array_equal(np.stack([world.step(b.numpy()) for b in buttons[K:]]), played)
        world.reset(start, buttons[:K])


def test_own_mark_plays_its_frames_with_a_smaller_mark_as_the_mark_weights_scaled_would(mario_clips):
    from mariofm.rollout import World, made_by_model

    data = NextFrames(mario_clips, K, (32, 32), 2, split="all", progress=False)
    batch = collate([data[i] for i in (3, 40)])
    start, buttons = to_uint8(batch["context"][0]), batch["actions"][0, :K].repeat(3, 1)
    model = marked(tiny()).eval()
    for p in (model.world.own_embed.weight, model.world.own_embed.bias):
        torch.nn.init.normal_(p, std=1.0)
    assert made_by_model(torch.tensor([[0.0, 0, 1, 1]]), 0.5).tolist() == [[0, 1, 1, 0.5]]
    played = {m: rollout(model, start, buttons, seed=2, own_mark=m) for m in (1.0, 0.5, 0.0)}
    assert np.array_equal(played[1.0], rollout(model, start, buttons, seed=2))  # cfg.own_mark = 1: as trained
    assert not np.array_equal(played[0.5], played[1.0]) and not np.array_equal(played[0.0], played[0.5])
    assert np.array_equal(played[0.0][:1], played[1.0][:1])  # the first frame reads K real frames: marks 0
    # own_mark 0: its frames read as real, exactly as with the mark weights zeroed (W·0 + b = 0·1 + b)
    told_real = marked(tiny()).eval()
    told_real.load_state_dict(model.state_dict())
    told_real.world.own_embed.weight.data.zero_()
    assert np.array_equal(rollout(told_real, start, buttons, seed=2), played[0.0])
    # the play loop reads the config's field, or the mark it is given
    half = marked(tiny(), own_mark=0.5).eval()
    half.load_state_dict(model.state_dict())
    for world in (World(half, start, buttons[:K], seed=2), World(model, start, buttons[:K], seed=2, own_mark=0.5)):
        assert np.array_equal(np.stack([world.step(b.numpy()) for b in buttons[K:]]), played[0.5])
    assert np.array_equal(rollout(half, start, buttons, seed=2), played[0.5])
    for bad, why in ((1.5, "own_mark=1.5 is the mark"), (-0.1, "own_mark=-0.1 is the mark")):
        with pytest.raises(ValueError, match=re.escape(why)):
            model.cfg.replace(own_mark=bad)
        with pytest.raises(ValueError, match=re.escape(why)):  # played with it: checked the same way
            rollout(model, start, buttons, own_mark=bad)
    unmarked = tiny().eval()
    with pytest.raises(ValueError, match="and 1 unless mark_own=True"):
        unmarked.cfg.replace(own_mark=0.5)
    with pytest.raises(ValueError, match="and 1 unless mark_own=True"):
        World(unmarked, start, buttons[:K], own_mark=0.5)


def test_export_sets_the_play_fields_only_with_a_world_report_that_played_them(mario_clips, tmp_path, capsys):
    from mariofm.cli import main
    from mariofm.train import train

    run = train(preset("world-smoke", mark_own=True), mario_clips, tmp_path / "run", steps=1, progress=False)
    out = tmp_path / "w.safetensors"
    assert main(["export", "--run", str(run), "--out", str(out)]) == 0
    cfg = json.loads(out.with_suffix(".json").read_text())["config"]
    played = {"steps": cfg["sample_steps"], "solver": cfg["solver"], "guidance": cfg["action_guidance"],
              "shift": cfg["sample_shift"], "horizons": {}, "buttons": {}, "stability": {}}
    (tmp_path / "before.json").write_text(json.dumps(played))  # a world report from before own_mark was recorded
    (tmp_path / "marked.json").write_text(json.dumps({**played, "own_mark": 0.9}))
    args = ["export", "--file", str(out), "--set", "own_mark=0.9", "--metrics"]
    assert main(args + [str(tmp_path / "before.json")]) == 2  # it cannot show what the mark does
    assert "does not record ['own_mark']" in capsys.readouterr().err
    assert main(args + [str(tmp_path / "marked.json")]) == 0
    assert main(["export", "--file", str(out), "--set", "action_guidance=1", "--metrics",
                 str(tmp_path / "before.json")]) == 2  # its rollouts marked their frames 1, the file plays 0.9
    assert "was measured with own_mark=1.0, the file would play with own_mark=0.9" in capsys.readouterr().err
    older = {key: value for key, value in played.items() if key != "shift"}  # from before shift was recorded
    (tmp_path / "older.json").write_text(json.dumps({**older, "own_mark": 0.9}))
    assert main(["export", "--file", str(out), "--set", "sample_shift=0.5", "--metrics",
                 str(tmp_path / "older.json")]) == 2  # it cannot show what the grid does
    assert "does not record ['sample_shift']" in capsys.readouterr().err
    (tmp_path / "shifted.json").write_text(json.dumps({**played, "own_mark": 0.9, "shift": 0.5}))
    assert main(["export", "--file", str(out), "--set", "sample_shift=0.5", "--metrics",
                 str(tmp_path / "shifted.json")]) == 0
    assert main(["export", "--file", str(out), "--set", "action_guidance=1", "--metrics",
                 str(tmp_path / "older.json")]) == 2  # its rollouts ran the even grid, the file plays 0.5
    assert "was measured with shift=1.0, the file would play with sample_shift=0.5" in capsys.readouterr().err
    assert main(["export", "--file", str(out), "--set", "sample_renoise=1", "--metrics",
                 str(tmp_path / "shifted.json")]) == 2  # a report from before renoise was recorded: the ODE
    assert "does not record ['sample_renoise']" in capsys.readouterr().err
    (tmp_path / "renoised.json").write_text(json.dumps({**played, "own_mark": 0.9, "shift": 0.5, "renoise": 1.0}))
    assert main(["export", "--file", str(out), "--set", "sample_renoise=1", "--metrics",
                 str(tmp_path / "renoised.json")]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["config"]["sample_renoise"] == 1.0


def test_training_marks_only_the_frames_the_model_made(mario_clips, tmp_path):
    from mariofm.checkpoint import load_model
    from mariofm.train import train

    first = train(preset("world-smoke"), mario_clips, tmp_path / "first", steps=1, progress=False)
    runs = {own: train(preset("world-smoke", mark_own=True, own_frames=own, own_share=1.0), mario_clips,
                       tmp_path / f"own{own}", steps=1, init=first, progress=False) for own in (0, 1)}
    weights = {own: load_model(run, ema=False)[0].world.own_embed.weight for own, run in runs.items()}
    assert not weights[0].any()  # real contexts only: every mark 0, nothing to learn from
    assert weights[1].any() and not weights[1][:, :K - 1].any()  # one own frame: only the last column moves
    # K own frames: every mark is 1 together, so the columns move alike (one switch); drawn counts 1..K part them
    runs = {draw: train(preset("world-smoke", mark_own=True, own_frames=K, own_draw=draw, own_share=1.0), mario_clips,
                        tmp_path / f"draw{draw}", steps=4, init=first, progress=False) for draw in (False, True)}
    weights = {draw: load_model(run, ema=False)[0].world.own_embed.weight for draw, run in runs.items()}
    assert weights[False][:, 0].any() and torch.equal(weights[False][:, 0], weights[False][:, 1])
    assert weights[True][:, 0].any() and not torch.equal(weights[True][:, 0], weights[True][:, 1])
