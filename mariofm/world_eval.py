"""`python -m mariofm evaluate --world`: a world model against held-out recordings and against the real game.

    python -m mariofm evaluate --world --checkpoint runs/world --data data_video/mario --out world_eval.json

Three measurements, each beside a reference that needs no model:

1. Horizons. From `num` random starts in the held-out recordings (validation split): the real K frames, then the
   real buttons for 64 frames. PSNR (8-bit RGB, capped at 60 dB: identical frames would be infinite) and palette
   fidelity (mariofm.metrics) of the generated frame h = 1, 4, 16, 64 frames ahead against the real one, beside
   the baseline that repeats the last context frame. h = 1 is the one-step, teacher-forced score (a real context).
2. Buttons. The real game is asked what holding "right + B" and what holding nothing does from `pairs` moments of
   play (mariofm.world_truth: same K context frames for both); the model rolls out from the same contexts with the
   same buttons. Scroll = the camera's move summed over the horizon, by the library's estimate
   (metrics.scroll_stats) on model and game frames alike. Reported: how often right + B scrolls further than no
   buttons (model, and the real game itself), each set's mean scroll speed, model over game (with a 95% interval
   over the moments: `ratio_interval`), and its mean speed
   frame by frame (the game's Mario keeps his momentum for a few frames, then walls, pits and deaths stop some),
   and split by moment: the speeds where the game runs and where it stops, and how well the model's speed follows
   the game's moment by moment (`speed_split`: a right mean speed can hide a model that never stops), and where
   it stops, by why (`stop_causes`, from Mario's x and state in RAM: he stays (a wall holds him, or he stands), he
   dies, or he walks left of the screen's middle, where the camera does not follow him).
3. Stability. `long` rollouts of 300 frames with the "random" button policy from held-out starts: palette fidelity
   and frame statistics (brightness, contrast, motion between frames, colours per frame, and the chequered grain
   that sits on the model's patch grid: metrics.grid_grain) of frames 250-300 against frames 1-50, and the same
   statistics of real frames; the in-palette ratio with a 95% interval over the rollouts (`ratio_interval`).

Every rollout here draws its noise per start (mariofm.rollout), so a moment plays the same whatever is played
beside it. The printed table, and two reports of the same moments set side by side: mariofm.world_report.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from mariofm.conditioning import action_bits, buttons_byte
from mariofm.metrics import grid_grain, palette_fidelity, palette_usage, real_palette, scroll_stats
from mariofm.rollout import check_world_model, play_mark, policy_actions, rollout
from mariofm.world_data import NextFrames, held_bits

HORIZONS = (1, 4, 16, 64)
EARLY = 8  # the button table also prints the speeds of the first EARLY frames held, before walls stop the game
# px/frame in a frame 64 pixels wide (world-cpu; stopped_below scales it): where the real game scrolls less over the
# horizon, its camera stops (wall, pit, Mario left)
STOPPED = 0.5
STAY = 16  # level pixels (one block): a living Mario no further than this over the horizon's second half stays
CAUSES = {"stays": "Mario stays", "dies": "Mario dies", "walks": "Mario walks left of the middle"}  # why it stops
PSNR_CAP = 60.0
SETS = ("right+b", "none")  # the buttons held from each moment, in the model and in the real game


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame PSNR in dB of uint8 frames (N, H, W, 3), capped at PSNR_CAP."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(1)
    return np.minimum(PSNR_CAP, 10 * np.log10(255.0**2 / np.maximum(mse, 1e-12)))


def held_out_starts(cfg, data, length: int, num: int, seed: int) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
    """`num` random starts in the validation recordings: K real frames uint8 (N, K, H, W, 3), the real buttons of
    K + length kept frames (N, K + length, 8), and the `length` real frames after the context."""
    clips = NextFrames.from_config(cfg, data, split="val", progress=False).clips
    k, stride = cfg.context_frames, cfg.frame_stride
    span = (k + length - 1) * stride + 1
    places = [(i, s) for i in range(len(clips.files)) for s in range(len(clips.frames(i)) - span + 1)]
    if not places:
        raise ValueError(f"no held-out recording in {data} has {span} frames for K={k} + {length} frames")
    rng = np.random.default_rng(seed)
    picks = [places[j] for j in np.sort(rng.choice(len(places), size=min(num, len(places)), replace=False))]
    context, actions, real = [], [], []
    for i, s in picks:
        kept = s + stride * np.arange(k + length)
        frames = np.array(clips.frames(i)[kept])
        context.append(frames[:k])
        real.append(frames[k:])
        actions.append(held_bits(clips.actions[i], kept, stride))
    return np.stack(context), torch.stack(actions), np.stack(real)


def horizon_scores(model, data, num: int = 32, seed: int = 0, horizons=HORIZONS, **sampling) -> dict:
    cfg = model.cfg
    context, actions, real = held_out_starts(cfg, data, max(horizons), num, seed)
    made = rollout(model, context, actions, seed=seed, **sampling)
    out = {"starts": len(context)}
    for h in horizons:
        fake, truth, last = made[:, h - 1], real[:, h - 1], context[:, -1]
        model_db, base_db = psnr(fake, truth), psnr(last, truth)
        pal = palette_fidelity(fake[None], truth[None], real_ref=last[None])  # N frames as one "video"
        out[f"h{h}"] = dict(psnr_median=float(np.median(model_db)), psnr_mean=float(model_db.mean()),
                            baseline_psnr_median=float(np.median(base_db)), baseline_psnr_mean=float(base_db.mean()),
                            in_palette=pal["in_palette"], baseline_in_palette=pal["in_palette_floor"],
                            palette_tv=pal["palette_tv"], baseline_palette_tv=pal["palette_tv_floor"])
    return out


def frame_scroll(last: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """The camera's move into each frame of each rollout (N, T), in pixels (positive: right), from the last
    context frame (N, H, W, 3) on."""
    return scroll_stats(np.concatenate([last[:, None], frames], axis=1))["shift"]


def total_scroll(last: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """The camera's move over each rollout (N,), in pixels (positive: right), last context frame included."""
    return frame_scroll(last, frames).sum(1)


def _mean_where(v: np.ndarray, keep: np.ndarray) -> float | None:
    return float(v[keep].mean()) if keep.any() else None


def stopped_below(width: int) -> float:
    """STOPPED for frames `width` pixels wide: the same camera move is twice as many pixels in a frame twice as wide."""
    return STOPPED * width / 64


def ratio_interval(model: np.ndarray, game: np.ndarray, level: float = 0.95, draws: int = 4000, seed: int = 0,
                   minus: tuple[np.ndarray, np.ndarray] | None = None) -> list[float] | None:
    """How sure is a ratio sum(model) / sum(game) over N items (a speed ratio over moments; the 300-frame palette
    ratio over rollouts)? A percentile bootstrap: draw N of the items with replacement (each drawn item brings its
    numerator and its denominator), `draws` times, and keep the central `level` of the ratios. Over 32 moments it
    is wide, as a few walls more or less move the game's sum; it narrows as 1/sqrt(N). `minus` (numerator,
    denominator) of another ratio over the SAME N items: the interval of the difference of the two, each draw
    taking the same items for both (paired). Draws whose denominators sum to 0 have no ratio and are left out;
    None if all are."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(model), (draws, len(model)))
    pairs = [(model, game)] + ([minus] if minus is not None else [])
    sums = [(a[picks].sum(1), b[picks].sum(1)) for a, b in pairs]
    kept = np.logical_and.reduce([b > 0 for _, b in sums])
    ratios = [a[kept] / b[kept] for a, b in sums]
    if not kept.any():
        return None
    tail = (1 - level) / 2 * 100
    return np.percentile(ratios[0] - ratios[1] if minus is not None else ratios[0], [tail, 100 - tail]).tolist()


def speed_split(model: np.ndarray, game: np.ndarray, horizon: int, width: int = 64) -> dict:
    """Does the model stop where the game does? Scrolls (N,) over `horizon` frames of the same N moments, model and
    game, in frames `width` pixels wide: mean speeds (px/frame) where the game runs (>= stopped_below(width)) and
    where it stops, and the correlation of model and game speed moment by moment (None when either is constant). A
    mean speed close to the game's can hide a model that is slow where the game runs and runs on where the game's
    camera stops (a wall or a pit ahead, or Mario still left of the screen's middle)."""
    model, game = model / horizon, game / horizon
    runs = game >= stopped_below(width)
    mean = _mean_where
    r = float(np.corrcoef(model, game)[0, 1]) if model.std() > 0 and game.std() > 0 else None
    return dict(game_runs=int(runs.sum()), model_px_where_game_runs=mean(model, runs),
                game_px_where_game_runs=mean(game, runs), model_px_where_game_stops=mean(model, ~runs),
                game_px_where_game_stops=mean(game, ~runs), scroll_correlation=r)


def stop_causes(mario: np.ndarray, dies: np.ndarray) -> np.ndarray:
    """Why Mario does not take the camera along, from RAM (mariofm.world_truth): Mario's x in the level over the
    horizon (N, horizon + 1) and whether he died (N,) -> (N,) of CAUSES: "dies"; "stays" when he gets no further than
    STAY level pixels over the horizon's second half (a wall or a pipe holds him, or he stands); else "walks" (he
    still gets further, left of the screen's middle, where the camera does not follow). Meant for the moments where
    the camera stops."""
    half = mario.shape[1] // 2
    further = mario[:, -1] - mario[:, half]
    return np.where(dies, "dies", np.where(further <= STAY, "stays", "walks"))


def speed_by_cause(model: np.ndarray, game: np.ndarray, horizon: int, causes: np.ndarray, width: int = 64) -> dict:
    """Mean speeds (px/frame) of model and game where the game's camera stops, by stop_causes' answer."""
    model, game = model / horizon, game / horizon
    stops = game < stopped_below(width)
    out = {}
    for cause in CAUSES:
        keep = stops & (causes == cause)
        out[cause] = dict(moments=int(keep.sum()), model_px=_mean_where(model, keep), game_px=_mean_where(game, keep))
    return out


def button_scores(model, pairs: int = 32, horizon: int = 32, seed: int = 0, cache: str | Path | None = None,
                  **sampling) -> dict:
    """`cache`: an .npz to keep the real game's branches in (playing them takes minutes); reused when it matches."""
    from mariofm.world_truth import cached_branches

    cfg = model.cfg
    branches = cached_branches(cache, pairs, cfg.context_frames, (cfg.video_height, cfg.video_width),
                               cfg.frame_stride, horizon, SETS, seed)
    last = branches.context[:, -1]
    out: dict = {"pairs": pairs, "horizon_frames": horizon, "levels": branches.levels}
    scroll = {}
    for s, name in enumerate(SETS):
        causes = stop_causes(branches.mario[:, s], branches.dies[:, s])
        held = action_bits(np.full((pairs, horizon), buttons_byte(name), np.uint8))
        made = rollout(model, branches.context, torch.cat([branches.context_actions, held], dim=1), seed=seed,
                       **sampling)
        by_frame = frame_scroll(last, made), frame_scroll(last, branches.frames[:, s])
        scroll[name] = tuple(v.sum(1) for v in by_frame)
        model_px, game_px = (float(v.mean()) / horizon for v in scroll[name])
        out[name] = dict(model_px_per_frame=model_px, game_px_per_frame=game_px,
                         speed_ratio=model_px / game_px if game_px else None,
                         speed_ratio_ci95=ratio_interval(*scroll[name], seed=seed),
                         model_scroll=scroll[name][0].tolist(), game_scroll=scroll[name][1].tolist(),
                         model_px_by_frame=by_frame[0].mean(0).tolist(), game_px_by_frame=by_frame[1].mean(0).tolist(),
                         **speed_split(*scroll[name], horizon, cfg.video_width),
                         where_game_stops_by_cause=speed_by_cause(*scroll[name], horizon, causes, cfg.video_width))
    (run_m, run_g), (stand_m, stand_g) = scroll["right+b"], scroll["none"]
    out["model_right_b_scrolls_more"] = float((run_m > stand_m).mean())
    out["game_right_b_scrolls_more"] = float((run_g > stand_g).mean())
    game_more = run_g > stand_g
    out["model_right_b_scrolls_more_where_game_does"] = float((run_m > stand_m)[game_more].mean()) \
        if game_more.any() else None
    return out


def frame_stats(frames: np.ndarray, palette: np.ndarray, period: int) -> dict:
    """Statistics of uint8 frames (N, T, H, W, 3): in-palette share, brightness, contrast, motion, colours, and
    the grain locked to a period×period grid (mariofm.metrics.grid_grain). in_palette_by_item: each item's share,
    counted on all its pixels up to a million (mariofm.metrics.colour_counts samples above that); in_palette:
    their mean, the share of all pixels (the items have the same number each) without sampling the whole batch."""
    x = frames.astype(np.float32)
    packed = frames.reshape(-1, frames.shape[2] * frames.shape[3], 3).astype(np.int64) @ np.array([65536, 256, 1])
    colours = [len(np.unique(f)) for f in packed]
    shares = [1 - float(palette_usage(item[None], palette)[-1]) for item in frames]
    return dict(in_palette=float(np.mean(shares)), in_palette_by_item=shares, brightness=float(x.mean()),
                contrast=float(x.std(axis=(2, 3, 4)).mean()), motion=float(np.abs(np.diff(x, axis=1)).mean()),
                colours_per_frame=float(np.mean(colours)), grid_grain=grid_grain(frames, period))


def stability_scores(model, data, num: int = 8, frames: int = 300, seed: int = 0, **sampling) -> dict:
    k = model.cfg.context_frames
    context, real_bits, real = held_out_starts(model.cfg, data, 50, num, seed + 1)
    played = torch.stack([action_bits(policy_actions("random", frames, seed + i)) for i in range(len(context))])
    made = rollout(model, context, torch.cat([real_bits[:, :k], played], dim=1), seed=seed, **sampling)
    palette, period = real_palette(real), max(model.cfg.patch_size, 2)  # the grid of the model's patches
    first, last, real_50 = (frame_stats(v, palette, period) for v in (made[:, :50], made[:, 250:300], real))
    shares = {"first_50": first.pop("in_palette_by_item"), "last_50": last.pop("in_palette_by_item")}
    del real_50["in_palette_by_item"]
    return dict(rollouts=len(made), frames=frames, policy="random", first_50=first, last_50=last,
                real_50=real_50, grain_period=period,
                in_palette_ratio=last["in_palette"] / max(first["in_palette"], 1e-12),
                # the ratio's interval over the rollouts, each bringing its two shares
                in_palette_ratio_ci95=ratio_interval(np.array(shares["last_50"]), np.array(shares["first_50"]),
                                                     seed=seed),
                in_palette_by_rollout=shares)


def evaluate_world(checkpoint, data, *, num: int = 32, pairs: int = 32, long: int = 8, seed: int = 0,
                   steps: int | None = None, solver: str | None = None, guidance: float | None = None,
                   shift: float | None = None, own_mark: float | None = None, renoise: float | None = None,
                   device: str | None = None, cache: str | Path | None = None) -> dict:
    from mariofm.checkpoint import WORLD_SHIPPED, load_model

    model, cfg = load_model(checkpoint or WORLD_SHIPPED, device=device or "cpu")
    check_world_model(model)
    sampling = dict(steps=steps or cfg.sample_steps, solver=solver or cfg.solver,
                    guidance=cfg.action_guidance if guidance is None else guidance,
                    shift=cfg.sample_shift if shift is None else shift,
                    renoise=cfg.replace(sample_renoise=cfg.sample_renoise if renoise is None else renoise,
                                        solver=solver or cfg.solver).sample_renoise,  # checked before minutes of work
                    own_mark=play_mark(model, own_mark))
    report: dict = dict(checkpoint=str(checkpoint or WORLD_SHIPPED), **sampling, seed=seed)
    jobs = (("horizons", horizon_scores, (model, data, num), {}),
            ("buttons", button_scores, (model, pairs), dict(cache=cache)),
            ("stability", stability_scores, (model, data, long), {}))
    for name, fn, args, extra in jobs:
        begin = time.perf_counter()
        report[name] = fn(*args, seed=seed, **extra, **sampling)
        report[name]["seconds"] = round(time.perf_counter() - begin, 1)
    return report


__all__ = ["evaluate_world", "horizon_scores", "button_scores", "stability_scores", "psnr", "held_out_starts", "SETS",
           "frame_scroll", "total_scroll", "frame_stats", "speed_split", "ratio_interval", "stopped_below",
           "stop_causes", "speed_by_cause"]
