"""Play a world model in real time: held buttons in, one generated frame out, at a steady rate.

    from mariofm.play import Player, PlayUI
    player = Player.from_recording(model, "data_video/mario", clip=0)   # a real start: K recorded frames
    player.hold("right")               # buttons stay held until released (ToggleButtons in the UI)
    image_bytes = player.tick()        # one frame: World.step with the held buttons, upscaled, encoded
    player.status()                    # 'frame 1 · right · model 45 ms (22 fps) · loop 48 ms (21 fps) · ...'
    player.reset()                     # back to the real start frame, same seed: the same buttons replay the same

    ui = PlayUI(player)                # ipywidgets: ← → A B toggles, play/pause (ipywidgets.Play), fps, reset
    display(ui.box)
    ui.buttons["right"].value = True   # headless (tests, nbval): drive the very callbacks a browser drives
    for _ in range(30):
        ui.play.value += 1

One frame of the loop costs (mariofm.rollout.World.step, then here):

    model   steps × (one net call on the K context frames + the noisy frame, buttons in the time embedding)
    render  nearest-neighbour upscale by `zoom` (every pixel a zoom × zoom block: the NES look, no blur)
    encode  PNG (lossless; cv2, fast compression) or JPEG bytes for ipywidgets.Image

and, outside the kernel, sending the bytes to the browser and painting them. `Player.status()` reports the model
time, the whole kernel-side loop (model + render + encode) and the rate at which frames are actually shown (time
between ticks, which includes the front-end timer's interval).

Why a front-end timer: the kernel handles widget messages (button toggles) only between cell executions, so a
`while` loop in a cell would never see a click. `ipywidgets.Play` is a timer in the browser that sends its value
to the kernel every `interval` ms; each change runs one tick. The browser does not wait for the kernel, so when a
frame takes longer than the interval, ticks queue up: after each frame the interval is raised to the measured loop
time (plus a margin), so that ticks come no faster than frames can be made. Without a browser the timer never
ticks, and a test changes `play.value` itself, which runs the same observer.
"""

from __future__ import annotations

import html
import time
import traceback
from collections import deque
from pathlib import Path

import cv2
import numpy as np
import torch

from mariofm.conditioning import BUTTONS, buttons_byte
from mariofm.rollout import World, as_bits, check_world_model
from mariofm.world_data import recording_start

KEYS = (("left", "←"), ("right", "→"), ("a", "A"), ("b", "B"))  # the buttons the UI offers, as NES names
WINDOW = 30  # frames averaged in the rates status() reports


def upscale(frame: np.ndarray, zoom: int) -> np.ndarray:
    """uint8 (H, W, 3) -> (zoom·H, zoom·W, 3), each pixel a zoom × zoom block (nearest neighbour)."""
    if zoom == 1:
        return frame
    return cv2.resize(frame, (frame.shape[1] * zoom, frame.shape[0] * zoom), interpolation=cv2.INTER_NEAREST)


def encode(frame: np.ndarray, fmt: str = "png") -> bytes:
    """uint8 RGB (H, W, 3) -> PNG (compression level 1: a quarter of level 9's time, a few % larger) or JPEG
    (quality 90) bytes."""
    if fmt not in ("png", "jpeg"):
        raise ValueError(f"fmt={fmt!r}: use 'png' (lossless) or 'jpeg' (smaller, lossy)")
    params = [cv2.IMWRITE_PNG_COMPRESSION, 1] if fmt == "png" else [cv2.IMWRITE_JPEG_QUALITY, 90]
    ok, buf = cv2.imencode("." + ("png" if fmt == "png" else "jpg"), np.ascontiguousarray(frame[..., ::-1]), params)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {frame.shape} frame as {fmt}")
    return buf.tobytes()


class Player:
    """A World plus the buttons held now, the frame shown now, and timings: the play loop without any widgets.

    `context` uint8 (K, H, W, 3) and `context_actions` (K bytes or (K, 8) bits) are the real start that reset()
    returns to. `steps`/`solver`/`guidance`/`own_mark` default to the model's config (as played: the world presets'
    few Euler steps, its button guidance, mariofm.conditioning, and the mark of the frames it makes); the time
    grid's shift and the sampler's fresh noise are the config's (sample_shift, sample_renoise). `zoom` defaults to
    about the NES screen's 240 rows: x4 for 60x64 frames, x1 for 240x256 (a x4 PNG of those costs as much as the net).
    """

    def __init__(self, model: torch.nn.Module, context: np.ndarray, context_actions, *, steps: int | None = None,
                 solver: str | None = None, seed: int = 0, guidance: float | None = None,
                 own_mark: float | None = None, zoom: int | None = None,
                 fmt: str = "png", keep: int = 900) -> None:
        check_world_model(model)
        if zoom is None:  # PNG time grows as zoom²
            zoom = max(1, round(240 / model.cfg.video_height))
        if not isinstance(zoom, int) or zoom < 1:
            raise ValueError(f"zoom={zoom!r} must be a positive integer (4 shows 60x64 frames at 240x256)")
        encode(np.zeros((1, 1, 3), np.uint8), fmt)  # a bad fmt fails here, not on the first frame
        self.zoom, self.fmt = zoom, fmt
        self.start = (np.array(context), as_bits(context_actions).clone())
        self.world = World(model, self.start[0], self.start[1], steps=steps, solver=solver, seed=seed,
                           guidance=guidance, own_mark=own_mark)
        self.held: set[str] = set()
        self.history: deque[np.ndarray] = deque(maxlen=keep)  # the last `keep` frames shown, start frame first
        self.reset()

    @classmethod
    def from_recording(cls, model: torch.nn.Module, data: str | Path, clip: int = 0, start: int = 0,
                       split: str = "val", **kwargs) -> Player:
        """Start from recording `clip` of `data` at recorded frame `start` (mariofm.world_data.recording_start)."""
        context, actions = recording_start(data, model.cfg, clip, start, split)
        return cls(model, context, actions[:model.cfg.context_frames], **kwargs)

    # ------------------------------------------------------------------------------------------ buttons
    def hold(self, name: str, down: bool = True) -> None:
        """Press (down=True) or release a button by name: 'right', 'left', 'a', 'b', ... (mariofm.conditioning)."""
        name = name.lower()
        if name not in BUTTONS:
            raise ValueError(f"unknown button {name!r}; use one of {BUTTONS}")
        (self.held.add if down else self.held.discard)(name)

    @property
    def buttons(self) -> int:
        """The controller byte of the buttons held now (RIGHT | B = 0x41)."""
        return buttons_byte("+".join(sorted(self.held)))

    # ------------------------------------------------------------------------------------------ the loop
    def reset(self) -> bytes:
        """Back to the real start frame (same seed, so the same buttons give the same frames again); returns the
        start frame, rendered."""
        self.world.reset(*self.start)
        self.frame = self.start[0][-1]
        self.index = 0
        self.history.clear()
        self.history.append(self.frame)
        self.timings: deque[tuple[float, float, float]] = deque(maxlen=WINDOW)  # (tick time, model s, loop s)
        return self.render(self.frame)

    def render(self, frame: np.ndarray) -> bytes:
        """A frame as the image bytes the view shows: upscaled by zoom, then encoded."""
        return encode(upscale(frame, self.zoom), self.fmt)

    def tick(self) -> bytes:
        """Advance one frame with the buttons held now; return it rendered. Times the model and the whole loop."""
        begin = time.perf_counter()
        self.frame = self.world.step(self.buttons)
        model_s = time.perf_counter() - begin
        image = self.render(self.frame)
        end = time.perf_counter()
        self.index += 1
        self.history.append(self.frame)
        self.timings.append((end, model_s, end - begin))
        return image

    # ------------------------------------------------------------------------------------------ rates
    def rates(self) -> dict[str, float]:
        """Over the last WINDOW frames: mean model and loop time (ms), their frames per second, and `shown`, the
        frames per second between ticks (nan until 2 frames)."""
        if not self.timings:
            return {"model_ms": float("nan"), "loop_ms": float("nan"), "model_fps": float("nan"),
                    "loop_fps": float("nan"), "shown_fps": float("nan")}
        ends, model_s, loop_s = (np.array(v) for v in zip(*self.timings))
        shown = (len(ends) - 1) / (ends[-1] - ends[0]) if len(ends) > 1 and ends[-1] > ends[0] else float("nan")
        return {"model_ms": 1e3 * model_s.mean(), "loop_ms": 1e3 * loop_s.mean(), "model_fps": 1 / model_s.mean(),
                "loop_fps": 1 / loop_s.mean(), "shown_fps": shown}

    def status(self) -> str:
        """One line for the fps label."""
        held = "+".join(b for b in BUTTONS if b in self.held) or "no buttons"
        if not self.timings:
            return f"frame {self.index} · {held} · press play"
        r = self.rates()
        shown = f"{r['shown_fps']:.1f}" if np.isfinite(r["shown_fps"]) else "–"
        return (f"frame {self.index} · {held} · model {r['model_ms']:.0f} ms ({r['model_fps']:.1f} fps) · "
                f"loop {r['loop_ms']:.0f} ms ({r['loop_fps']:.1f} fps) · shown {shown} fps")


class PlayUI:
    """ipywidgets around a Player: ToggleButtons ← → A B (held while toggled on), a play/pause timer
    (ipywidgets.Play: every tick advances one frame), the frame view (ipywidgets.Image), an fps label, a reset
    button and a red error box. `box` is the widget to display; every callback can be driven without a browser.
    """

    def __init__(self, player: Player, fps: float | None = None) -> None:
        import ipywidgets as widgets

        self.player = player
        self.fps = fps or player.world.model.cfg.fps  # the frame rate the model was trained at (15 for world-cpu)
        self.buttons = {name: widgets.ToggleButton(description=label, tooltip=f"hold {name}",
                                                   layout=widgets.Layout(width="48px")) for name, label in KEYS}
        for name, toggle in self.buttons.items():
            toggle.observe(lambda change, name=name: self.on_button(name, change["new"]), "value")
        self.play = widgets.Play(value=0, min=0, max=2**31 - 1, step=1, interval=self.min_interval,
                                 description="play", show_repeat=False)
        self.play.observe(self.on_tick, "value")
        self.reset_button = widgets.Button(description="reset", icon="undo", tooltip="back to the real start frame")
        self.reset_button.on_click(self.on_reset)
        h, w = (player.zoom * n for n in player.frame.shape[:2])  # a fixed size: a VBox would stretch it
        self.image = widgets.Image(value=player.render(player.frame), format=player.fmt,
                                   layout=widgets.Layout(width=f"{w}px", height=f"{h}px"))
        self.label = widgets.Label(player.status())
        self.error = widgets.HTML()  # a failure shows here, in the widget, and stops the timer
        self.box = widgets.VBox([self.image, widgets.HBox([self.play, *self.buttons.values(), self.reset_button]),
                                 self.label, self.error])

    @property
    def min_interval(self) -> int:
        """The timer's interval at the model's frame rate, in ms."""
        return max(1, round(1000 / self.fps))

    def on_button(self, name: str, down: bool) -> None:
        self.player.hold(name, down)
        self.label.value = self.player.status()

    def on_tick(self, change: dict) -> None:
        """The timer's value went up: one frame. (It goes down to 0 on the timer's stop button: not a tick.)"""
        if change["new"] <= change["old"]:
            return
        try:
            self.image.value = self.player.tick()
            self.label.value = self.player.status()
            # ticks must not come faster than frames are made (the browser does not wait): interval >= loop time
            wanted = max(self.min_interval, round(1.2 * self.player.rates()["loop_ms"]))
            if abs(wanted - self.play.interval) > 0.1 * self.play.interval:
                self.play.interval = wanted
        except Exception:  # show it to the player and stop the timer, instead of failing on every tick
            self.pause()
            self.error.value = (f"<pre style='color:#b00020; white-space:pre-wrap'>"
                                f"{html.escape(traceback.format_exc(limit=-3))}</pre>")

    def on_reset(self, _=None) -> None:
        self.error.value = ""
        self.image.value = self.player.reset()
        self.play.interval = self.min_interval
        self.label.value = self.player.status()

    def pause(self) -> None:
        """Stop the timer (ipywidgets 8: `playing`; 7.x: `_playing`)."""
        self.play.set_trait("playing" if self.play.has_trait("playing") else "_playing", False)


__all__ = ["Player", "PlayUI", "KEYS", "upscale", "encode"]
