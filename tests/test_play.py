"""The play loop of notebook 06 (mariofm.play), driven headless through the callbacks a browser drives: toggle a
button, tick the timer, press reset, with the shipped world model on real recorded frames. Holding right should
scroll the view more than holding nothing (the shipped model: 14 px against 10 px over 30 frames from the first
of these recordings; the model shipped before it 40 against 6)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from mariofm.checkpoint import WORLD_SHIPPED, load_model
from mariofm.config import preset
from mariofm.metrics import scroll_stats
from mariofm.play import Player, PlayUI, encode, upscale
from mariofm.unet import VideoUNet
from mariofm.world_data import NextFrames


@pytest.fixture(scope="module")
def model():
    if not WORLD_SHIPPED.is_file():
        pytest.skip(f"no shipped world model at {WORLD_SHIPPED} (python -m mariofm export --run <world run> --out "
                    f"{WORLD_SHIPPED})")
    return load_model(WORLD_SHIPPED)[0]


def play(ui: PlayUI, frames: int) -> np.ndarray:
    """Tick the timer `frames` times, as the browser's ipywidgets.Play does; the frames shown, start included."""
    for _ in range(frames):
        ui.play.value += 1
    return np.stack(ui.player.history)


def scroll(frames: np.ndarray) -> int:
    """Pixels the camera moved right over the frames (mariofm.metrics' per-pair shift estimate, summed)."""
    return int(scroll_stats(frames[None])["shift"].sum())


def test_hold_right_scrolls_the_view_and_reset_returns_to_the_start(model, mario_clips):
    clips = NextFrames.from_config(model.cfg, mario_clips, split="all", progress=False).clips
    start_frame = np.array(clips.frames(0)[(model.cfg.context_frames - 1) * model.cfg.frame_stride])
    ui = PlayUI(Player.from_recording(model, mario_clips, clip=0, split="all"))
    assert np.array_equal(ui.player.frame, start_frame)  # the view starts on the last real context frame
    labels = [ui.label.value]

    ui.buttons["right"].value = True  # the ToggleButton's observer holds the button
    assert ui.player.buttons == 0x01
    for _ in range(30):
        ui.play.value += 1
        labels.append(ui.label.value)
    right = np.stack(ui.player.history)
    assert right.shape == (31, *start_frame.shape) and ui.player.index == 30
    assert "frame 30 · right · model" in labels[-1] and len(set(labels)) == 31  # the fps label updates every frame
    rates = ui.player.rates()
    assert 0 < rates["model_ms"] <= rates["loop_ms"] and np.isfinite(rates["shown_fps"])

    ui.buttons["right"].value = False
    ui.reset_button.click()
    assert ui.player.index == 0 and np.array_equal(ui.player.frame, start_frame)
    assert bytes(ui.image.value) == encode(upscale(start_frame, 4), "png")  # the view shows the start again
    none = play(ui, 30)
    assert not np.array_equal(none, right)

    ui.reset_button.click()  # same start, same seed, same buttons: the same frames
    ui.buttons["right"].value = True
    assert np.array_equal(play(ui, 30), right)


def test_holding_right_scrolls_the_view(model, mario_clips):
    """What a player expects: the view scrolls by 1/8 of the screen at least (8 px of 64, 32 NES pixels in 2 s),
    and further than with no buttons (a model that ignores the buttons makes the same frames for both)."""
    ui = PlayUI(Player.from_recording(model, mario_clips, clip=0, split="all"))
    ui.buttons["right"].value = True
    right = play(ui, 30)
    ui.buttons["right"].value = False
    ui.reset_button.click()
    none = play(ui, 30)
    assert scroll(right) >= 8 and scroll(right) > scroll(none), (scroll(right), scroll(none))


def test_the_timer_stop_button_and_bad_settings(model, mario_clips):
    player = Player.from_recording(model, mario_clips, clip=1, split="all", fmt="jpeg", zoom=2)
    ui = PlayUI(player)
    ui.play.value = 3
    ui.play.value = 0  # the Play widget's stop button rewinds its value: no frame is made
    assert player.index == 1 and bytes(ui.image.value)[:2] == b"\xff\xd8"  # a JPEG
    assert ui.image.format == "jpeg"
    with pytest.raises(ValueError, match="unknown button 'jump'"):
        player.hold("jump")
    with pytest.raises(ValueError, match="fmt='gif'"):
        Player(model, player.start[0], player.start[1], fmt="gif")
    with pytest.raises(ValueError, match="not a world model"):
        Player(load_model()[0], player.start[0], player.start[1])


@pytest.mark.parametrize("size, zoom", [((60, 64), 4), ((120, 128), 2), ((240, 256), 1)])
def test_the_default_zoom_shows_about_the_nes_screen(size, zoom):
    """Without `zoom`, a frame is shown near the NES screen's 240 rows: a x4 PNG of a 240x256 frame would take as
    long to encode as the net's four calls on a GPU (docs/benchmarks.md section 7)."""
    torch.manual_seed(0)
    cfg = preset("world-smoke", video_height=size[0], video_width=size[1])
    context = np.zeros((cfg.context_frames, *size, 3), np.uint8)
    player = Player(VideoUNet(cfg).eval(), context, [0] * cfg.context_frames)
    shown = cv2.imdecode(np.frombuffer(player.render(player.frame), np.uint8), cv2.IMREAD_COLOR)
    assert player.zoom == zoom and shown.shape == (zoom * size[0], zoom * size[1], 3)
