"""The world model: next-frame data with buttons, the conditioning path, context noise, rollouts, training, CLI."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from mariofm.conditioning import action_bits, buttons_byte
from mariofm.config import preset
from mariofm.recordings import NoDataError
from mariofm.rollout import World, policy_actions, read_actions, rollout
from mariofm.unet import VideoUNet
from mariofm.world_data import NextFrames, NoActionsError, recording_start

K = preset("world-smoke").context_frames


def tiny(**overrides) -> VideoUNet:
    """A world-smoke net whose zero-init output conv is perturbed, so that its output depends on its inputs."""
    torch.manual_seed(0)
    model = VideoUNet(preset("world-smoke", **overrides))
    torch.nn.init.normal_(model.head[-1].weight, std=0.1)
    return model.eval()


def inputs(b: int = 2, seed: int = 1, h: int = 32, w: int = 32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, 1, h, w, generator=g), torch.rand(b, generator=g), \
        torch.rand(b, 3, K, h, w, generator=g) * 2 - 1


def bits(byte: int, b: int = 2) -> torch.Tensor:
    return action_bits(np.full((b, K + 1), byte, np.uint8))


@pytest.fixture(scope="module")
def data(mario_clips):
    return NextFrames.from_config(preset("world-smoke"), mario_clips, split="all", progress=False)


# ------------------------------------------------------------------------------------------------ data
def test_items_are_next_frame_context_and_the_buttons_of_the_recording(data):
    item = data[5]
    assert item["video"].shape == (3, 1, 32, 32) and item["context"].shape == (3, K, 32, 32)
    assert item["actions"].shape == (K + 1, 8) and item.keys() == {"video", "context", "actions"}
    index, start = data.clips.windows[5]
    frames = data.clips.frames(index)
    stride = data.clips.frame_stride
    window = data.clips[5]["video"]  # the K + 1 frames, every stride-th
    assert torch.equal(item["context"], window[:, :K]) and torch.equal(item["video"], window[:, K:])
    assert torch.equal(window[:, 0], torch.from_numpy(np.array(frames[start])).permute(2, 0, 1).float() / 127.5 - 1)
    # the last row: the share of the stride recorded frames before the next frame that held each button
    raw = data.clips.actions[index][start + K * stride - stride + 1:start + K * stride + 1]
    torch.testing.assert_close(item["actions"][-1], action_bits(raw).mean(0))
    assert len(data) == sum(len(data.clips.frames(i)) - K * stride for i in range(len(data.clips.files)))


def test_a_folder_without_button_files_is_refused_naming_the_files(mario_clips, tmp_path):
    for avi in sorted(mario_clips.glob("*.avi"))[:2]:
        shutil.copy(avi, tmp_path / avi.name)
    with pytest.raises(NoActionsError, match=sorted(mario_clips.glob("*.avi"))[0].name):
        NextFrames(tmp_path, 2, (32, 32), 2, split="all", cache_dir=tmp_path / "cache", progress=False)


def test_more_context_frames_than_a_clip_holds_is_a_clear_error(mario_clips, tmp_path):
    with pytest.raises(NoDataError, match="context_frames=30 .* at least 61 recorded"), pytest.warns(UserWarning):
        NextFrames(mario_clips, 30, (32, 32), 2, split="all", cache_dir=tmp_path, progress=False)  # 61 > 48


def a_wall_at_frame_20(mario_clips, folder, end: dict | None = None, buttons: int = 0x41, at: dict | None = None):
    """One real recording whose RAM log says a wall holds Mario from recorded frame 20 on (x = 10·min(f, 20)),
    with `buttons` held throughout except the {frame: byte} of `at`, and the events {"death" or "flagpole": frame}."""
    import json

    folder.mkdir()
    avi = sorted(mario_clips.glob("*.avi"))[0]
    shutil.copy(avi, folder / avi.name)
    meta = json.loads(avi.with_suffix(".json").read_text())
    n = meta["frames"]
    meta["mario_x"] = (10 * np.minimum(np.arange(n), 20)).tolist()
    meta["events"] = [{"frame": f, "event": e} for e, f in (end or {}).items()]
    (folder / avi.name).with_suffix(".json").write_text(json.dumps(meta))
    actions = np.full(n, buttons, np.uint8)
    for frame, byte in (at or {}).items():
        actions[frame] = byte
    np.save(folder / (avi.stem + ".actions.npy"), actions)
    return folder


def walled(folder, tmp_path, k: int = 2) -> list[int]:
    """The start frames of the windows (K = k, stride 2) whose next frame is the moment a wall holds Mario."""
    from mariofm.world_data import wall_windows

    clips = NextFrames(folder, k, (32, 32), 2, split="all", cache_dir=tmp_path / "c", progress=False).clips
    return [clips.windows[i][1] for i in wall_windows(clips, k)]


def test_wall_windows_are_where_mario_moved_over_the_context_and_a_wall_holds_him_in_the_next_frame(mario_clips,
                                                                                                    tmp_path):
    folder = a_wall_at_frame_20(mario_clips, tmp_path / "wall")
    # K = 2, stride 2: the next frame t = start + 4 moves no further (t - 2 >= 20) after a move (start < 20)
    assert walled(folder, tmp_path) == [18, 19]
    assert walled(folder, tmp_path, k=3) == [16, 17, 18, 19]  # the context reaches back further
    ends = [({"death": 23}, [18]), ({"flagpole": 22}, []), ({"flagpole": 40, "death": 23}, [18])]
    for n, (end, starts) in enumerate(ends):  # the next frame (22, 23) must come before he dies or slides down
        assert walled(a_wall_at_frame_20(mario_clips, tmp_path / f"end{n}", end=end), tmp_path) == starts
    for n, byte in enumerate((0x40, 0x43)):  # right released, or left pressed too, on the next frame's second half
        assert walled(a_wall_at_frame_20(mario_clips, tmp_path / f"at{n}", at={23: byte}), tmp_path) == [18]
    assert walled(a_wall_at_frame_20(mario_clips, tmp_path / "at21", at={21: 0x40}), tmp_path) == [19]  # its first half


def test_wall_share_adds_the_walled_windows_spread_evenly_and_only_where_the_model_learns(mario_clips, tmp_path):
    from mariofm.world_data import training_data

    folder = a_wall_at_frame_20(mario_clips, tmp_path / "wall")
    ds = NextFrames(folder, 2, (32, 32), 2, split="all", wall_share=0.5, cache_dir=tmp_path / "c", progress=False)
    n, walled_at = len(ds.clips), ds.walled.tolist()
    assert [ds.clips.windows[i][1] for i in walled_at] == [18, 19]
    assert len(ds) == 2 * n and ds.extra == n  # wall_share 0.5: as many added as there are windows

    def repeats(j: int) -> int:  # which walled window added item j shows again
        return [torch.equal(ds[j]["context"], ds[w]["context"]) for w in walled_at].index(True)

    added = [repeats(j) for j in range(n, 2 * n)]
    assert added == sorted(added) and abs(added.count(0) - added.count(1)) <= 1  # spread evenly, in order
    for key in ("video", "context", "actions"):
        assert torch.equal(ds[-1][key], ds[walled_at[-1]][key])
    with pytest.raises(IndexError, match="out of range"):
        ds[len(ds)]
    cfg = preset("world-smoke", wall_share=0.5)  # K = 2, stride 2, 32 x 32: the windows above
    assert len(training_data(cfg, folder, cache_dir=tmp_path / "c", progress=False)) == 2 * n  # one file: all train
    assert len(training_data(cfg, folder, split="all", cache_dir=tmp_path / "c", progress=False)) == n  # not trained
    for share in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"wall_share=.* must lie in \[0, 1\)"):
            NextFrames(folder, 2, (32, 32), 2, split="all", wall_share=share, cache_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="context_frames \\+ own_frames >= 2"):
        NextFrames(folder, 1, (32, 32), 2, split="all", wall_share=0.25, cache_dir=tmp_path / "c")


def test_wall_share_refuses_recordings_without_mario_or_without_a_wall(mario_clips, tmp_path):
    import json

    kw = dict(split="all", wall_share=0.25, cache_dir=tmp_path / "c", progress=False)
    standing = a_wall_at_frame_20(mario_clips, tmp_path / "standing", buttons=0)  # a wall, but no button held
    with pytest.raises(NoDataError, match="wall_share=0.25 .* have none"):
        NextFrames(standing, 2, (32, 32), 2, **kw)
    folder = a_wall_at_frame_20(mario_clips, tmp_path / "old")
    sidecar = next(folder.glob("*.json"))
    meta = json.loads(sidecar.read_text())
    del meta["mario_x"]
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(NoDataError, match=f"Mario's x from {sidecar.name}"):
        NextFrames(folder, 2, (32, 32), 2, **kw)


# ------------------------------------------------------------------------------------------------ model
def test_world_model_maps_frame_and_condition_to_a_velocity_of_the_frame():
    model = tiny()
    x, t, context = inputs()
    assert model.conditions == ("context", "actions") and VideoUNet(preset("smoke")).conditions == ()
    with torch.no_grad():
        assert model(x, t, context=context, actions=bits(0x41)).shape == x.shape


def test_buttons_change_the_output_unless_their_embedding_is_zeroed():
    x, t, context = inputs()

    def buttons_matter(model) -> bool:
        with torch.no_grad():
            run, stand = model(x, t, context=context, actions=bits(0x41)), model(x, t, context=context,
                                                                                  actions=bits(0))
        return (run - stand).abs().max().item() > 1e-4

    assert buttons_matter(tiny())
    deaf = tiny()
    torch.nn.init.zeros_(deaf.world.action_embed[-1].weight)
    torch.nn.init.zeros_(deaf.world.action_embed[-1].bias)
    assert not buttons_matter(deaf)


@pytest.mark.parametrize("patch, conv", [(1, "2d"), (2, "2d"), (2, "2+1d")])
def test_a_model_widened_to_a_longer_context_computes_what_it_did_whatever_the_older_frames_hold(patch, conv):
    from mariofm.conditioning import widen_context

    model = tiny(mark_own=True, patch_size=patch, conv=conv)
    torch.nn.init.normal_(model.world.own_embed.weight, std=0.5)  # zero-init: make the marks matter
    wide = VideoUNet(preset("world-smoke", mark_own=True, patch_size=patch, conv=conv, context_frames=K + 3)).eval()
    wide.load_state_dict(widen_context(model.state_dict(), K, K + 3, 3, patch))
    x, t, _ = inputs()
    g = torch.Generator().manual_seed(2)
    context = torch.rand(2, 3, K + 3, 32, 32, generator=g) * 2 - 1
    actions = (torch.rand(2, K + 4, 8, generator=g) > 0.5).float()
    own = (torch.rand(2, K + 3, generator=g) > 0.5).float()
    with torch.no_grad():
        old = model(x, t, context=context[:, :, 3:], actions=actions[:, 3:], own=own[:, 3:])
        for older in (context[:, :, :3], -context[:, :, :3]):  # the older frames, the buttons and marks over them
            new = wide(x, t, context=torch.cat([older, context[:, :, 3:]], 2), actions=actions, own=own)
            torch.testing.assert_close(new, old, atol=1e-5, rtol=0)
            actions[:, :3], own[:, :3] = 1 - actions[:, :3], 1 - own[:, :3]
        # the newest frame is read where it was: moving it changes the output
        moved = wide(x, t, context=context.roll(1, dims=2), actions=actions, own=own)
    assert (moved - old).abs().max() > 1e-3
    with pytest.raises(ValueError, match="context_frames=1 is shorter than the 2 frames the weights read"):
        widen_context(model.state_dict(), K, 1)


def test_context_noise_is_drawn_in_training_only():
    x, t, context = inputs()
    a = bits(0x41)
    model = tiny(context_noise=0.5, play_noise=0.0)
    with torch.no_grad():
        quiet = model.eval()(x, t, context=context, actions=a)
        assert torch.equal(quiet, model(x, t, context=context, actions=a))  # eval: nothing random
        model.train()
        torch.manual_seed(3)
        noisy = model(x, t, context=context, actions=a)
        torch.manual_seed(3)
        assert torch.equal(noisy, model(x, t, context=context, actions=a))  # the global RNG decides
        assert (noisy - quiet).abs().max() > 1e-3
        model.world.context_noise = 0.0  # no noise to draw: training and eval agree
        torch.testing.assert_close(model(x, t, context=context, actions=a), quiet)


def test_guidance_one_is_the_conditional_model_and_w_multiplies_the_buttons_effect():
    """v_w = v_unknown + w·(v_buttons − v_unknown): w = 1 is the model itself (bit for bit), w = 0 the "unknown
    buttons" model, and for two button sets the difference is w times the conditional one (v_unknown cancels)."""
    from mariofm.conditioning import guided_velocity

    model = tiny(action_dropout=0.5)
    torch.nn.init.normal_(model.world.unknown_actions, std=0.5)  # a trained vector is not zero either
    x, t, context = inputs()
    run, stand = bits(0x41), bits(0)
    with torch.no_grad():
        cond = {a: model(x, t, context=context, actions=bits(a)) for a in (0x41, 0)}
        unknown = model(x, t, context=context, actions=run, unknown=torch.ones(2, dtype=torch.bool))
        assert torch.equal(guided_velocity(model, context, run, 1.0)(x, t), cond[0x41])
        torch.testing.assert_close(guided_velocity(model, context, run, 0.0)(x, t), unknown)
        assert (unknown - cond[0x41]).abs().max() > 1e-3  # "unknown" is a different condition
        v3 = {a: guided_velocity(model, context, bits(a), 3.0)(x, t) for a in (0x41, 0)}
        torch.testing.assert_close(v3[0x41] - v3[0], 3 * (cond[0x41] - cond[0]), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(v3[0x41], unknown + 3 * (cond[0x41] - unknown), atol=1e-5, rtol=1e-4)
        assert (cond[0x41] - cond[0]).abs().max() > 1e-3  # the buttons matter: the check above can fail
    with pytest.raises(ValueError, match="finite number >= 0"):
        guided_velocity(model, context, stand, -1.0)


def test_action_dropout_replaces_the_buttons_in_training_only():
    """Training mode: about action_dropout of the samples get the "unknown buttons" output, the rest the buttons'
    (drawn from the global RNG); eval mode: every sample keeps its buttons and nothing random is drawn."""
    model = tiny(action_dropout=0.3, context_noise=0.0, play_noise=0.0)  # no context noise: only the buttons vary
    torch.nn.init.normal_(model.world.unknown_actions, std=0.5)
    x, t, context = inputs(b=1)
    n = 200
    x, t, context, a = x.expand(n, -1, -1, -1, -1), t.expand(n), context.expand(n, -1, -1, -1, -1), bits(0x41, n)
    with torch.no_grad():
        cond = model(x[:1], t[:1], context=context[:1], actions=a[:1])
        unknown = model(x[:1], t[:1], context=context[:1], actions=a[:1], unknown=torch.ones(1, dtype=torch.bool))
        state = torch.get_rng_state()
        assert torch.allclose(model(x, t, context=context, actions=a), cond, atol=1e-5)  # eval: all conditional
        assert torch.equal(torch.get_rng_state(), state)
        model.train()
        torch.manual_seed(0)
        out = model(x, t, context=context, actions=a)
    is_cond = (out - cond).flatten(1).abs().amax(1) < 1e-5
    is_unknown = (out - unknown).flatten(1).abs().amax(1) < 1e-5
    assert bool((is_cond ^ is_unknown).all())  # each sample is one or the other
    assert 0.2 < is_unknown.float().mean().item() < 0.4


def test_a_model_trained_without_action_dropout_has_no_unknown_buttons_and_cannot_be_guided():
    from mariofm.config import Config

    model = tiny()
    assert model.world.unknown_actions is None and not any("unknown" in k for k in model.state_dict())
    x, t, context = inputs()
    with pytest.raises(ValueError, match="action_dropout"):
        rollout(model, np.zeros((K, 32, 32, 3), np.uint8), np.zeros(K + 1, np.uint8), guidance=2.0)
    with pytest.raises(ValueError, match="action_dropout"):
        preset("world-smoke", action_guidance=2.0)
    old = preset("world-smoke").to_dict()
    del old["action_dropout"], old["action_guidance"]  # a config saved before these fields existed
    assert Config.from_dict(old) == preset("world-smoke")


@pytest.mark.parametrize("change, message", [
    (dict(context=None), "world model"),
    (dict(actions=torch.zeros(2, K, 8)), "actions must be"),
    (dict(context=torch.zeros(2, 3, K + 1, 32, 32)), "context must be"),
    (dict(x=torch.zeros(2, 3, 2, 32, 32)), "one frame at a time"),
])
def test_wrong_condition_shapes_are_refused(change, message):
    x, t, context = inputs()
    args = dict(x=x, context=context, actions=bits(0)) | change
    with pytest.raises(ValueError, match=message):
        tiny()(args.pop("x"), t, **args)
    with pytest.raises(ValueError, match="unconditional"):
        VideoUNet(preset("smoke"))(torch.zeros(1, 3, 4, 32, 32), 0.5, context=context[:1])


@pytest.mark.parametrize("fields, message", [(dict(sequence_length=4), "sequence_length"),
                                             (dict(play_noise=0.5, context_noise=0.1), "play_noise"),
                                             (dict(context_frames=-1), "context_frames"),
                                             (dict(prediction="velocity"), "frame_residual"),
                                             (dict(own_frames=-1), "own_frames"),
                                             (dict(own_frames=1, own_share=0.0), "own_share"),
                                             (dict(wall_share=1.0), "wall_share"),
                                             (dict(wall_share=-0.1), "wall_share"),
                                             (dict(context_frames=0, wall_share=0.2), "wall_share")])
def test_config_refuses_world_settings_that_cannot_work(fields, message):
    with pytest.raises(ValueError, match=message):
        preset("world-smoke", **fields)


def test_an_untrained_residual_world_model_repeats_the_last_frame():
    model = VideoUNet(preset("world-smoke", play_noise=0.0))  # zero-init head: the change is 0
    context = np.random.default_rng(0).integers(0, 256, (K, 32, 32, 3), dtype=np.uint8)
    frames = rollout(model, context, np.zeros(K + 3, np.uint8))
    assert all(np.array_equal(f, context[-1]) for f in frames)


# ------------------------------------------------------------------------------------------------ rollout
def test_rollout_has_the_asked_length_and_the_same_seed_gives_the_same_frames(data):
    model = tiny()
    context, real = recording_start(data.clips.root, model.cfg, clip=0, split="all")
    assert context.shape == (K, 32, 32, 3) and context.dtype == np.uint8
    actions = torch.cat([real[:K], action_bits(policy_actions("right+b", 7))])
    frames = rollout(model, context, actions, seed=1)
    assert frames.shape == (7, 32, 32, 3) and frames.dtype == np.uint8
    assert np.array_equal(frames, rollout(model, context, actions, seed=1))
    assert not np.array_equal(frames, rollout(model, context, actions, seed=2))
    # stepping a World by hand makes the same frames as rollout
    world = World(model, context, real[:K], seed=1)
    assert np.array_equal(np.stack([world.step(0x41) for _ in range(7)]), frames)
    assert np.array_equal(world.frames, frames[-K:])
    world.reset(context, real[:K])  # the same buttons as a name, as bits (8,), as a byte array
    held = [world.step(b) for b in ("right+b", action_bits(np.uint8(0x41)).numpy(), np.uint8(0x41))]
    assert np.array_equal(np.stack(held), frames[:3])
    batched = rollout(model, np.stack([context, context]), torch.stack([actions, actions]), seed=1)
    assert batched.shape == (2, 7, 32, 32, 3)


def test_each_start_of_a_batch_plays_with_its_own_noise(data):
    """Start j of a batch draws from a generator seeded seed + j: it plays as it does alone with seed + j, and as
    it does in a batch without the starts before it, so a moment of the evaluation plays the same whatever else is
    played beside it (up to the float rounding of batched convolutions)."""
    model = tiny()
    context, real = recording_start(data.clips.root, model.cfg, clip=0, split="all")
    other, _ = recording_start(data.clips.root, model.cfg, clip=1, split="all")
    actions = torch.cat([real[:K], action_bits(policy_actions("right+b", 5))])
    starts, held = np.stack([context, other, context]), torch.stack([actions] * 3)
    frames = rollout(model, starts, held, seed=3)
    alone = np.stack([rollout(model, starts[j], actions, seed=3 + j) for j in range(3)])
    assert np.abs(frames.astype(int) - alone).mean() < 0.1
    assert np.abs(rollout(model, starts[1:], held[1:], seed=4).astype(int) - frames[1:]).mean() < 0.1
    assert np.abs(frames[0].astype(int) - frames[2]).mean() > 1  # the same start with the next seed differs


def test_the_models_sample_shift_sets_the_grid_of_every_frame_it_plays(data):
    """cfg.sample_shift is the rollout's default grid (mariofm.sample.time_grid): a model that carries 0.5 plays
    what rollout(..., shift=0.5) and World(..., shift=0.5) play, and not what the uniform grid does."""
    model, shifted = tiny(), tiny(sample_shift=0.5)
    context, real = recording_start(data.clips.root, model.cfg, clip=0, split="all")
    actions = torch.cat([real[:K], action_bits(policy_actions("right+b", 3))])
    frames = rollout(shifted, context, actions, seed=1)
    assert np.array_equal(frames, rollout(model, context, actions, seed=1, shift=0.5))
    assert not np.array_equal(frames, rollout(model, context, actions, seed=1))
    assert np.array_equal(np.stack([World(shifted, context, real[:K], seed=1).step(0x41)]), frames[:1])
    assert np.array_equal(np.stack([World(model, context, real[:K], seed=1, shift=0.5).step(0x41)]), frames[:1])
    with pytest.raises(ValueError, match="sample_shift=0.0 must be a positive number"):
        World(model, context, real[:K], shift=0.0)  # when the World is made, not at its first step
    with pytest.raises(ValueError, match="sample_shift=0.5 .* context_frames > 0"):
        preset("smoke", sample_shift=0.5)  # a video model's sampler has no such setting


def test_the_models_sample_renoise_puts_fresh_noise_in_every_frame_it_plays(data):
    """cfg.sample_renoise η > 0: each frame's Euler steps put back fresh noise (mariofm.sample.sample_renoised),
    drawn from the start's own generator: the same seed plays the same frames, the config's η is what rollout and
    World play by default, η = 0 is the ODE the model played before, and a Heun solver is refused."""
    model, renoised = tiny(), tiny(sample_renoise=1.0)
    context, real = recording_start(data.clips.root, model.cfg, clip=0, split="all")
    actions = torch.cat([real[:K], action_bits(policy_actions("right+b", 3))])
    frames = rollout(renoised, context, actions, seed=1)
    assert np.array_equal(frames, rollout(model, context, actions, seed=1, renoise=1.0))
    assert np.array_equal(frames, rollout(renoised, context, actions, seed=1))  # the same seed, the same frames
    assert not np.array_equal(frames, rollout(renoised, context, actions, seed=2))
    assert not np.array_equal(frames, rollout(model, context, actions, seed=1, renoise=0.5))
    assert np.array_equal(rollout(renoised, context, actions, seed=1, renoise=0.0), rollout(model, context, actions,
                                                                                             seed=1))
    assert np.array_equal(np.stack([World(renoised, context, real[:K], seed=1).step(0x41)]), frames[:1])
    assert np.array_equal(np.stack([World(model, context, real[:K], seed=1, renoise=1.0).step(0x41)]), frames[:1])
    with pytest.raises(ValueError, match="renoise=1.0 runs Euler steps; got solver='heun'"):
        rollout(model, context, actions, solver="heun", renoise=1.0)
    for bad, why in ((dict(solver="heun", renoise=1.0), "solver='euler'"), (dict(renoise=1.5), "\\[0, 1\\]")):
        with pytest.raises(ValueError, match=why):  # when the World is made, not at its first step
            World(model, context, real[:K], **bad)
    for fields, why in ((dict(sample_renoise=1.5), "must lie in \\[0, 1\\]"), (dict(solver="heun", sample_renoise=0.5),
                        "solver='euler'")):
        with pytest.raises(ValueError, match=why):
            preset("world-smoke", **fields)
    with pytest.raises(ValueError, match="context_frames > 0"):
        preset("smoke", solver="euler", sample_renoise=0.5)  # a video model's sampler has no such setting


def test_rollout_refuses_bad_inputs():
    model, context = tiny(), np.zeros((K, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="context must be"):
        rollout(model, context[:1], np.zeros(K + 3, np.uint8))
    with pytest.raises(ValueError, match="at least one frame"):
        rollout(model, context, np.zeros(K, np.uint8))
    with pytest.raises(ValueError, match="not a world model"):
        rollout(VideoUNet(preset("smoke")), context, np.zeros(K + 3, np.uint8))
    with pytest.raises(ValueError, match="unknown button"):
        policy_actions("right+jump", 3)


def test_policies_and_button_files(tmp_path):
    assert buttons_byte("right+B") == 0x41 and buttons_byte("none") == 0
    assert set(policy_actions("right+b", 5)) == {0x41}
    random = policy_actions("random", 200, seed=4)
    assert np.array_equal(random, policy_actions("random", 200, seed=4)) and len(set(random)) > 2
    (tmp_path / "b.txt").write_text("right+b\n65  # a comment\n\nnone\n")
    assert read_actions(tmp_path / "b.txt").tolist() == [0x41, 0x41, 0]


# ------------------------------------------------------------------------------------------------ training, CLI
def test_train_a_world_model_resume_and_roll_it_out_from_the_cli(mario_clips, tmp_path):
    from mariofm.cli import main
    from mariofm.train import CHECKPOINT, load_checkpoint, train

    cfg = preset("world-smoke")
    whole = train(cfg, mario_clips, tmp_path / "whole", steps=4, progress=False)
    train(cfg, mario_clips, tmp_path / "split", steps=4, stop_at=2, progress=False)
    split = train(None, mario_clips, tmp_path / "split", resume=True, progress=False)
    a, b = load_checkpoint(whole / CHECKPOINT), load_checkpoint(split / CHECKPOINT)
    for key in ("model", "ema"):
        for name, value in a[key].items():
            assert torch.equal(value, b[key][name]), f"{key}.{name} differs after resuming"
    assert (whole / "rollout_epoch1.gif").is_file()
    for bad in ("r", "r.png"):  # refused before any frame is made, nothing written
        assert main(["rollout", "--checkpoint", str(whole), "--data", str(mario_clips), "--out", str(tmp_path / bad),
                     "--frames", "5"]) == 2
        assert not (tmp_path / bad).exists()
    out = tmp_path / "r.gif"
    assert main(["rollout", "--checkpoint", str(whole), "--data", str(mario_clips), "--split", "all",
                 "--out", str(out), "--frames", "5", "--policy", "random", "--shift", "0.5"]) == 0
    import imageio.v3 as iio
    shifted = iio.imread(out, index=None)
    assert len(shifted) == K + 5
    assert main(["rollout", "--checkpoint", str(whole), "--data", str(mario_clips), "--split", "all",
                 "--out", str(out), "--frames", "5", "--policy", "random"]) == 0
    uniform = iio.imread(out, index=None)  # the model's own grid (s = 1): the same real start, other frames
    assert np.array_equal(shifted[:K], uniform[:K]) and not np.array_equal(shifted[K:], uniform[K:])
    assert main(["rollout", "--checkpoint", str(whole), "--data", str(mario_clips), "--split", "all",
                 "--out", str(out), "--frames", "5", "--policy", "random", "--renoise", "1"]) == 0
    renoised = iio.imread(out, index=None)  # fresh noise in every step: other frames again
    assert np.array_equal(renoised[:K], uniform[:K]) and not np.array_equal(renoised[K:], uniform[K:])


def test_a_model_trained_with_action_dropout_learns_its_unknown_buttons_and_plays_guided(mario_clips, tmp_path):
    from mariofm.checkpoint import load_model
    from mariofm.train import train

    run = train(preset("world-smoke", action_dropout=0.5), mario_clips, tmp_path / "cfg", steps=6, progress=False)
    model, cfg = load_model(run)
    assert cfg.action_dropout == 0.5 and model.world.unknown_actions.abs().max() > 0  # it moved from its zero init
    context, real = recording_start(mario_clips, cfg, clip=0, split="all")
    actions = torch.cat([real[:K], action_bits(policy_actions("right+b", 4))])
    guided = rollout(model, context, actions, seed=0, guidance=3.0)
    assert np.array_equal(guided, rollout(model, context, actions, seed=0, guidance=3.0))  # same seed, same frames
    assert not np.array_equal(guided, rollout(model, context, actions, seed=0))  # w = 3 is not w = 1
    world = World(model, context, real[:K], seed=0, guidance=3.0)
    assert np.array_equal(np.stack([world.step(0x41) for _ in range(4)]), guided)


# ------------------------------------------------------------------------------------------------ evaluation
def test_the_real_game_branches_from_one_saved_moment_for_each_button_set():
    from mariofm.metrics import scroll_stats
    from mariofm.world_truth import game_branches

    kwargs = dict(context_frames=2, size=(60, 64), frame_stride=2, horizon=12, buttons=("right+b", "none", "left"))
    b = game_branches(1, seed=3, **kwargs)
    assert b.context.shape == (1, 2, 60, 64, 3) and b.context_actions.shape == (1, 2, 8)
    assert b.frames.shape == (1, 3, 12, 60, 64, 3) and b.camera.shape == (1, 3, 13)
    assert np.array_equal(b.frames, game_branches(1, seed=3, **kwargs).frames)  # deterministic
    assert (np.diff(b.camera, axis=-1) >= 0).all()  # the SMB camera never goes left
    assert b.mario.shape == (1, 3, 13) and b.dies.shape == (1, 3) and b.dies.dtype == bool
    on_screen = b.mario - b.camera  # Mario's x on the screen, from RAM: inside its 256 pixels while he lives
    assert ((on_screen >= 0) & (on_screen <= 256 - 16))[~b.dies].all()
    further = b.mario[0, :, -1] - b.mario[0, :, 0]
    assert further[0] > further[1] >= further[2] and further[2] < 0  # right+B, nothing, left (seed 3: no wall)
    assert not np.array_equal(b.frames[0, 0], b.frames[0, 1])  # the buttons made a difference
    # the frame-based scroll estimate agrees with the camera in RAM (64 of 256 pixels wide: a quarter)
    for s in range(3):
        est = scroll_stats(np.concatenate([b.context[:, -1:], b.frames[:, s]], axis=1))["shift"].sum()
        assert abs(est - (b.camera[0, s, -1] - b.camera[0, s, 0]) / 4) <= 3


def test_button_scores_put_the_model_beside_the_real_game_frame_by_frame(tmp_path):
    from mariofm.world_eval import button_scores, frame_scroll, stopped_below
    from mariofm.world_truth import cached_branches, load_branches, save_branches

    model, cache, horizon = tiny(), tmp_path / "branches.npz", 10
    out = button_scores(model, pairs=2, horizon=horizon, seed=0, cache=cache)
    branches = load_branches(cache)
    totals = []
    for s, name in enumerate(("right+b", "none")):
        game = frame_scroll(branches.context[:, -1], branches.frames[:, s])  # the game's own frames, set s
        totals.append(game.sum(1))
        assert out[name]["game_px_by_frame"] == pytest.approx(game.mean(0).tolist())
        assert out[name]["game_px_per_frame"] == pytest.approx(game.sum(1).mean() / horizon)
        assert len(out[name]["model_px_by_frame"]) == horizon
        assert np.mean(out[name]["model_px_by_frame"]) == pytest.approx(out[name]["model_px_per_frame"])
    assert out["game_right_b_scrolls_more"] == np.mean(totals[0] > totals[1])
    runs = totals[0] / horizon >= stopped_below(model.cfg.video_width)  # 32 pixels wide: 0.25 px/frame
    assert out["right+b"]["game_runs"] == runs.sum()
    model_px = np.array(out["right+b"]["model_scroll"]) / horizon
    if runs.any():
        assert out["right+b"]["model_px_where_game_runs"] == pytest.approx(model_px[runs].mean())
    else:
        assert out["right+b"]["model_px_where_game_stops"] == pytest.approx(model_px.mean())
    stamp = cache.stat().st_mtime_ns
    assert button_scores(model, pairs=2, horizon=horizon, seed=0, cache=cache) == out  # the cache is reused ...
    assert cache.stat().st_mtime_ns == stamp
    # a model with a shorter context is scored from the same moments: it reads their last frames (buttons made to
    # differ frame by frame, so that the first frames' would not pass)
    branches = branches._replace(context_actions=torch.rand(branches.context_actions.shape))
    save_branches(branches, cache)
    stamp = cache.stat().st_mtime_ns
    cfg, sets = model.cfg, ("right+b", "none")
    shorter = cached_branches(cache, 2, K - 1, (cfg.video_height, cfg.video_width), cfg.frame_stride, horizon, sets, 0)
    assert np.array_equal(shorter.context, branches.context[:, 1:]) and shorter.context.shape[1] == K - 1
    assert torch.equal(shorter.context_actions, branches.context_actions[:, 1:])
    assert not np.array_equal(branches.context[:, 0], branches.context[:, 1])
    assert np.array_equal(shorter.frames, branches.frames) and cache.stat().st_mtime_ns == stamp
    longer = cached_branches(cache, 2, K + 1, (cfg.video_height, cfg.video_width), cfg.frame_stride, horizon, sets, 0)
    assert longer.context.shape[1] == K + 1 and load_branches(cache).context.shape[1] == K + 1  # played again
    button_scores(model, pairs=1, horizon=horizon, seed=0, cache=cache)  # ... unless it holds other branches
    assert load_branches(cache).frames.shape[:3] == (1, 2, horizon)
    with np.load(cache) as f:  # a file from before Mario's x was kept is played again
        older = {k: f[k] for k in f.files if k not in ("mario", "dies")}
    np.savez(cache, **older)
    assert load_branches(cache) is None
    assert cached_branches(cache, 1, K, (cfg.video_height, cfg.video_width), cfg.frame_stride, horizon, sets,
                           0).mario.shape == (1, 2, horizon + 1) and load_branches(cache) is not None


def test_speed_split_finds_a_model_that_runs_on_where_the_game_stops():
    from mariofm.world_eval import speed_split

    game = np.array([0.0, 2.0, 32.0, 48.0])  # scrolls over 16 frames: two moments stop (< 0.5 px/frame), two run
    same = speed_split(game, game, 16)
    assert same["game_runs"] == 2 and same["scroll_correlation"] == pytest.approx(1.0)
    assert same["model_px_where_game_stops"] == same["game_px_where_game_stops"] == pytest.approx(1 / 16)
    blind = speed_split(np.full(4, 20.0), game, 16)  # the game's mean speed, everywhere
    assert blind["model_px_where_game_runs"] == 1.25 < blind["game_px_where_game_runs"] == 2.5
    assert blind["model_px_where_game_stops"] == 1.25 and blind["scroll_correlation"] is None  # nothing to follow
    assert speed_split(game[2:], game[2:], 16)["model_px_where_game_stops"] is None  # no moment stops
    assert speed_split(game[:2], np.array([7.9, 8.0]), 16)["game_runs"] == 1  # 0.5 px/frame runs, just under stops
    # in frames twice as wide the same camera move is twice the pixels: 1 px/frame runs there, just under stops
    assert speed_split(game[:2], np.array([15.9, 16.0]), 16, width=128)["game_runs"] == 1


def test_the_speed_ratios_interval_holds_a_constant_ratio_exactly_and_narrows_as_the_moments_grow():
    from mariofm.world_eval import ratio_interval

    game = np.array([0.0, 4.0, 30.0, 12.0, 45.0, 2.0, 20.0, 9.0])
    assert ratio_interval(2 * game, game) == pytest.approx([2.0, 2.0])  # every draw of moments gives 2
    assert ratio_interval(game + 3, np.zeros(8)) is None  # the game never scrolls: no ratio
    rng = np.random.default_rng(0)
    game = rng.integers(0, 50, 32).astype(float)  # 32 moments, as the report's
    model = 0.5 * game + rng.integers(8, 30, 32)  # runs on where the game stops
    low, high = ratio_interval(model, game)
    assert low < model.sum() / game.sum() < high and ratio_interval(model, game) == [low, high]  # same seed
    low4, high4 = ratio_interval(np.tile(model, 4), np.tile(game, 4))  # the same moments, four times as many
    assert (high4 - low4) / (high - low) == pytest.approx(0.5, abs=0.1)  # 1 / sqrt(4)
    low50, high50 = ratio_interval(model, game, level=0.5)
    assert low < low50 < high50 < high


def test_frame_stats_keep_each_items_palette_share_and_their_mean_is_the_share_of_all_pixels():
    from mariofm.metrics import palette_usage
    from mariofm.world_eval import frame_stats

    palette = np.array([[0, 0, 0], [255, 255, 255]], np.uint8)
    frames = np.zeros((3, 2, 4, 4, 3), np.uint8)  # item 0 all on the palette
    frames[1, :, :2] = 128  # item 1: half its pixels far from both colours
    frames[2, 0] = 200  # item 2: half its frames (one of two) off the palette
    frames[2, 1, :1, :1] = 250  # and one pixel near white: on it (within 12 RGB units)
    stats = frame_stats(frames, palette, period=2)
    assert stats["in_palette_by_item"] == pytest.approx([1.0, 0.5, 0.5])
    assert stats["in_palette"] == pytest.approx(2 / 3)
    assert stats["in_palette"] == pytest.approx(1 - palette_usage(frames, palette)[-1])  # the share of all pixels


def test_stop_causes_tell_a_wall_from_a_death_and_from_mario_walking_left_of_the_middle():
    from mariofm.world_eval import STAY, speed_by_cause, stop_causes

    start = np.array([100, 100, 100, 100, 100])
    middle = start + np.array([0, 90, 10, 200, 0])  # Mario's x in the level at the first, middle and last frame
    mario = np.stack([start, start + 1, middle, middle + np.array([0, STAY, STAY + 1, 30, 0])], axis=1)
    dies = np.array([False, False, False, False, True])
    assert stop_causes(mario, dies).tolist() == ["stays", "stays", "walks", "walks", "dies"]
    assert stop_causes(mario[:, :3], dies).tolist() == ["stays", "walks", "stays", "walks", "dies"]  # frames 1-2
    game, model = np.array([0.0, 3.0, 2.0, 40.0, 2.0]), np.array([16.0, 8.0, 0.0, 32.0, 24.0])  # over 8 frames
    split = speed_by_cause(model, game, 8, stop_causes(mario, dies))
    assert split["stays"] == dict(moments=2, model_px=1.5, game_px=pytest.approx(0.1875))
    assert split["walks"] == dict(moments=1, model_px=0.0, game_px=0.25)  # 40 px in 8 frames runs: not a stop
    assert split["dies"] == dict(moments=1, model_px=3.0, game_px=0.25)
    assert speed_by_cause(model[3:4], game[3:4], 8, np.array(["walks"]))["walks"]["model_px"] is None


def test_horizon_scores_put_the_model_beside_the_repeat_last_frame_baseline(mario_clips):
    from mariofm.world_eval import held_out_starts, horizon_scores, psnr

    model = tiny()
    scores = horizon_scores(model, mario_clips, num=3, horizons=(1, 4), seed=0)
    context, _, real = held_out_starts(model.cfg, mario_clips, 4, 3, seed=0)
    assert scores["starts"] == 3
    assert scores["h4"]["baseline_psnr_mean"] == pytest.approx(psnr(context[:, -1], real[:, 3]).mean())
    assert psnr(real[:, 0], real[:, 0]).tolist() == [60.0] * 3  # identical frames: the cap, not infinity
    assert scores["h1"]["psnr_mean"] < scores["h1"]["baseline_psnr_mean"]  # an untrained model is worse


def test_evaluate_world_from_the_cli_prints_every_row_and_writes_the_report(tmp_path, capsys):
    """End to end on two real 132-frame recordings (one held out): 64 frames ahead and 300-frame rollouts fit."""
    import json

    from mariofm.cli import main
    from mariofm.record import record_clips
    from mariofm.train import train
    from mariofm.world_report import print_world_table

    data, out = tmp_path / "long", tmp_path / "world.json"
    record_clips(data, clips=2, frames=132, seed=2, levels="1-1", frame_skip=2, progress=False)
    run = train(preset("world-smoke"), data, tmp_path / "run", steps=1, progress=False)
    assert main(["evaluate", "--world", "--checkpoint", str(run), "--data", str(data), "--num", "2", "--pairs", "1",
                 "--long", "1", "--guidance", "1", "--branches", str(tmp_path / "b.npz"), "--out", str(out)]) == 0
    printed, report = capsys.readouterr().out, json.loads(out.read_text())
    assert report["horizons"]["starts"] == 2 and report["guidance"] == 1.0 and report["steps"] == 2
    assert report["shift"] == 1.0 and "(grid shift 1)" in printed
    assert report["own_mark"] == 1.0 and "marked" not in printed  # the model's own_mark: as trained
    assert report["renoise"] == 0.0 and "afresh" not in printed  # the model's sample_renoise: the ODE
    for h in (1, 4, 16, 64):
        row = report["horizons"][f"h{h}"]
        assert f"{h:>3} frames ahead   {row['psnr_median']:5.1f} / {row['psnr_mean']:5.1f} dB" in printed
    assert report["buttons"]["pairs"] == 1 and len(report["buttons"]["none"]["model_px_by_frame"]) == 32
    assert "frames 1-8: model" in printed and "frames 9-32: model" in printed and "moment by moment r =" in printed
    causes = report["buttons"]["right+b"]["where_game_stops_by_cause"]
    assert sum(v["moments"] for v in causes.values()) == 1 - report["buttons"]["right+b"]["game_runs"]
    assert "where it stops, by why: Mario stays (" in printed
    for name in ("right+b", "none"):  # one moment: every bootstrap draw is that moment
        row = report["buttons"][name]
        ci = row["speed_ratio_ci95"]
        assert ci is None if row["speed_ratio"] is None else ci == pytest.approx([row["speed_ratio"]] * 2)
        assert f"ratio {row['speed_ratio']:.2f}, 95% interval over the moments {ci[0]:.2f}-{ci[1]:.2f})" in printed \
            if ci else "95% interval over the moments n/a" in printed
    stability = report["stability"]
    assert stability["rollouts"] == 1 and stability["frames"] == 300
    assert stability["in_palette_ratio"] == stability["last_50"]["in_palette"] / stability["first_50"]["in_palette"]
    assert f"frames 250-300 over 1-50: {stability['in_palette_ratio']:.3f}" in printed and "nan" not in printed
    shares = stability["in_palette_by_rollout"]  # one rollout: its share is the pooled one, the interval the ratio
    assert shares["first_50"] == pytest.approx([stability["first_50"]["in_palette"]])
    assert stability["in_palette_ratio_ci95"] == pytest.approx([stability["in_palette_ratio"]] * 2)
    assert "(95% interval over the rollouts " in printed
    assert stability["grain_period"] == 2 and f"grid grain {stability['last_50']['grid_grain']:.1f}" in printed
    buttons = report["buttons"]  # the same report as button_scores(horizon=8) would write it: no frames 9+
    buttons["horizon_frames"] = 8
    for name, key in ((n, k) for n in ("right+b", "none") for k in ("model_px_by_frame", "game_px_by_frame")):
        buttons[name][key] = buttons[name][key][:8]
    del buttons["none"]["speed_ratio_ci95"]  # and from before the interval was kept
    report["own_mark"], report["renoise"] = 0.9, 0.5  # as if played with --own-mark 0.9 --renoise 0.5
    print_world_table(report)
    printed = capsys.readouterr().out
    assert "button guidance 1, its own frames marked 0.9, 0.5 of the noise drawn afresh each step" in printed
    assert "95% interval over the moments n/a" in printed
    assert "8 frames held" in printed and "frames 1-8" not in printed and "frames 9-" not in printed
    assert "moment by moment r =" in printed and "nan" not in printed
    # the same settings again, set beside the first report: the same moments and noise, so no difference
    args = ["evaluate", "--world", "--checkpoint", str(run), "--data", str(data), "--num", "2", "--long", "1",
            "--guidance", "1", "--branches", str(tmp_path / "b.npz"), "--against", str(out)]
    assert main(args + ["--pairs", "1", "--out", str(tmp_path / "again.json")]) == 0
    printed, again = capsys.readouterr().out, json.loads((tmp_path / "again.json").read_text())
    assert again["against"]["base"] == str(out) and f"against {out} (the same moments, starts and noise)" in printed
    for name in ("right+b", "none"):
        row = again["against"][name]
        assert row["speed_ratio"] == row["base_speed_ratio"] == again["buttons"][name]["speed_ratio"]
        assert (row["difference"], row["difference_ci95"]) == ((None, None) if row["speed_ratio"] is None
                                                               else (0.0, [0.0, 0.0]))
    assert again["against"]["stability"]["difference"] == 0 and "300-frame palette ratio" in printed
    assert main(args + ["--pairs", "2"]) == 2  # other moments: refused before any rollout
    assert "was scored with --seed 0 --pairs 1: evaluate with those" in capsys.readouterr().err
    for name in ("right+b", "none"):  # same seed and pairs, other moments: found after the rollouts ...
        again["buttons"][name]["game_scroll"] = [g + 1 for g in again["buttons"][name]["game_scroll"]]
    (tmp_path / "other.json").write_text(json.dumps(again))
    args[-1] = str(tmp_path / "other.json")
    assert main(args + ["--pairs", "1", "--out", str(tmp_path / "kept.json")]) == 2
    assert "scored on other moments of the game" in capsys.readouterr().err
    assert json.loads((tmp_path / "kept.json").read_text())["buttons"]["pairs"] == 1  # ... and the report is kept


# ------------------------------------------------------------------------------------------------ the shipped model
def test_the_shipped_world_model_matches_its_card_and_plays():
    import hashlib
    import json

    from safetensors import safe_open

    from mariofm.checkpoint import WORLD_SHIPPED, load_model
    from mariofm.config import Config

    card = json.loads(WORLD_SHIPPED.with_suffix(".json").read_text())
    assert card["sha256"] == hashlib.sha256(WORLD_SHIPPED.read_bytes()).hexdigest()
    assert WORLD_SHIPPED.stat().st_size < 20 * 2**20
    assert {"horizons", "buttons", "stability"} <= card["evaluate"].keys() and "button_share_of_recorded_frames" in \
        card["data"]
    with safe_open(WORLD_SHIPPED, "pt") as f:
        assert json.loads(f.metadata()["config"]) == card["config"]
    model, cfg = load_model(WORLD_SHIPPED)
    assert model.conditions == ("context", "actions")
    assert cfg == Config.from_dict(card["config"])  # fields added since it was trained keep their defaults
    context = np.zeros((cfg.context_frames, cfg.video_height, cfg.video_width, 3), np.uint8)
    frames = rollout(model, context, policy_actions("right+b", cfg.context_frames + 2), seed=0)
    assert frames.shape == (2, cfg.video_height, cfg.video_width, 3)

