"""Weight-free metrics: how close is a set of generated Mario videos to a set of real ones?

Every metric takes uint8 videos (N, T, H, W, 3) RGB and compares a generated set with a real set. Two of them
ask what SMB footage always does, and need no features at all:

    palette_fidelity                    does the video keep to the NES colours of the real footage?
    scroll_distance                     does the camera move as SMB's does (never to the left)?
    grid_grain                          how much of one pattern stays on a pixel grid (a patch net's chequered
                                        grain); set it beside the same number for real frames
    compare                             these and the random-feature FD and KID of `mariofm.features`, in one
                                        JSON-able dict, beside the real-vs-real floor

Every score depends on the data: a number means little without the floor, the same metric between two disjoint
real sets of the same N. `compare` adds it when given a second real set.
"""

from __future__ import annotations

import numpy as np
import torch

from mariofm.features import (
    FrameFeatures,
    VideoFeatures,
    bootstrap_interval,
    check_videos,
    frechet_distance,
    kernel_distance,
)


# ------------------------------------------------------------------------------------------------------------
# NES palette
# ------------------------------------------------------------------------------------------------------------
def colour_counts(videos: np.ndarray, max_pixels: int = 1_000_000) -> tuple[np.ndarray, np.ndarray]:
    """The distinct colours (K, 3) int64 of the videos and how many pixels show each (K,).

    Above `max_pixels` pixels, counted on a fixed random sample of that many: enough to pin shares down to
    about +-0.001, and unlike a stride a random sample cannot alias with the pixel grid.
    """
    px = videos.reshape(-1, 3)
    if len(px) > max_pixels:
        px = px[np.random.RandomState(0).randint(0, len(px), max_pixels)]
    packed, counts = np.unique(px.astype(np.int64) @ np.array([1 << 16, 1 << 8, 1]), return_counts=True)
    return np.stack([packed >> 16, packed >> 8 & 255, packed & 255], axis=1), counts


def real_palette(real: np.ndarray, min_share: float = 1e-3) -> np.ndarray:
    """The colours that cover at least `min_share` of the real pixels, (P, 3) uint8, most frequent first.

    The NES draws from a fixed 54-colour palette and a SMB screen uses about a dozen of them; downscaling
    with area averaging adds blends of neighbouring colours, and the frequent ones join the palette.
    """
    colours, counts = colour_counts(check_videos(real, "real"))
    keep = np.flatnonzero(counts >= min_share * counts.sum())
    if len(keep) == 0:
        raise ValueError(f"no colour covers {min_share:.2%} of the real pixels: is `real` really NES footage "
                         "(uint8 RGB, not noise or a smooth gradient)? Lower min_share if it is")
    return colours[keep[np.argsort(-counts[keep], kind="stable")]].astype(np.uint8)


def palette_usage(videos: np.ndarray, palette: np.ndarray, tol: float = 12.0) -> np.ndarray:
    """Share of pixels whose nearest palette colour is entry p (P bins), plus one last bin for pixels farther
    than `tol` RGB units (Euclidean) from every palette colour. Sums to 1."""
    colours, counts = colour_counts(check_videos(videos))
    pal = palette.astype(np.float64)
    nearest = np.empty(len(colours), np.int64)
    for i in range(0, len(colours), 1 << 16):  # blocks: noisy video has ~a million distinct colours
        c = colours[i:i + (1 << 16)].astype(np.float64)
        d2 = (c * c).sum(1, keepdims=True) - 2 * c @ pal.T + (pal * pal).sum(1)  # |c - p|^2, exact integers
        nearest[i:i + len(c)] = np.where(d2.min(1) <= tol * tol, d2.argmin(1), len(pal))
    return np.bincount(nearest, weights=counts, minlength=len(pal) + 1) / counts.sum()


def palette_fidelity(fake: np.ndarray, real: np.ndarray, real_ref: np.ndarray | None = None,
                     tol: float = 12.0) -> dict[str, float]:
    """How well `fake` keeps to the colours of `real`.

    in_palette: fraction of fake pixels within `tol` of the real palette (1 = perfect).
    palette_tv: total variation 0.5 * sum_p |u_fake(p) - u_real(p)| between the palette-usage histograms
    (0 = same colours in the same amounts). Downscaled footage has blend colours, so with `real_ref` (other
    real clips processed the same way) the same numbers for it come beside, and in_palette as a ratio to it.
    """
    palette = real_palette(real)
    u_real = palette_usage(real, palette, tol)

    def score(videos: np.ndarray) -> tuple[float, float]:
        u = palette_usage(videos, palette, tol)
        return 1 - float(u[-1]), 0.5 * float(np.abs(u - u_real).sum())

    out = {"palette_size": len(palette)}
    out["in_palette"], out["palette_tv"] = score(fake)
    if real_ref is not None:
        out["in_palette_floor"], out["palette_tv_floor"] = score(real_ref)
        out["in_palette_ratio"] = out["in_palette"] / max(out["in_palette_floor"], 1e-12)
    return out


def grid_grain(videos: np.ndarray, period: int = 2) -> float:
    """How strongly uint8 frames (..., H, W, 3) carry one pattern locked to a period×period pixel grid, in 8-bit
    units. Each pixel minus the mean of its 3×3 neighbourhood (its detail), averaged over all frames and over all
    pixels with the same position modulo `period`: period² values per channel, and their mean |value|. Detail
    that moves with the scene averages out; a bias that a patch head (mariofm.unet.unpatchify) leaves at the same
    place of every patch does not. A checkerboard ±a on a flat colour scores 8a/9 at period 2; real 60×64
    footage about 2 (its 8-pixel tiles leave a little)."""
    x = np.asarray(videos, np.float64).reshape(-1, *np.shape(videos)[-3:])  # (frames, H, W, 3)
    h, w = x.shape[1:3]
    pad = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    # the border, whose neighbourhood is padding, is dropped: each place's label shifts by one, its value does not
    detail = (x - sum(pad[:, i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9)[:, 1:-1, 1:-1]
    cells = [detail[:, a::period, b::period].mean((0, 1, 2)) for a in range(period) for b in range(period)]
    return float(np.abs(np.array(cells)).mean())


# ------------------------------------------------------------------------------------------------------------
# Scrolling
# ------------------------------------------------------------------------------------------------------------
def hud_height(height: int) -> int:
    """The rows the HUD (score, coins, world, time) takes: the top 32 of the NES's 240, scaled to `height`."""
    return round(32 * height / 240)


def scroll_stats(videos: np.ndarray, max_shift: int | None = None, hud_rows: int | None = None,
                 batch_size: int = 32) -> dict[str, np.ndarray]:
    """Per consecutive frame pair (a, b): the camera's horizontal move s and how well it explains b.

    If the camera moves right by s pixels, b[:, x] = a[:, x + s]. On grey frames we try every integer s in
    [-max_shift, max_shift] (default W // 8) and keep the one with the least mean absolute difference
    e(s) over the overlap. The HUD (the top 32 of 240 rows, scaled with H) never moves, so it is masked; of
    the rest, every k-th row is enough (at most 64 rows: a horizontal move shows in every row). On a flat
    screen (sky, black) every s fits; a tiny |s| penalty then picks 0.
    Returns {"shift": (N, T-1) int pixels per frame, positive = right, "residual": (N, T-1) e(s) in [0, 1]}.
    """
    videos = check_videos(videos)
    h, w = videos.shape[2:4]
    hud = hud_height(h) if hud_rows is None else hud_rows
    s_max = max(1, w // 8) if max_shift is None else max_shift
    if not 0 <= hud < h or not 0 < s_max < w:
        raise ValueError(f"need 0 <= hud_rows < H={h} and 0 < max_shift < W={w}; got {hud}, {s_max}")
    shifts = torch.arange(-s_max, s_max + 1)
    errs = []
    for i in range(0, len(videos), batch_size):
        rows = videos[i:i + batch_size, :, hud::max(1, (h - hud) // 64)]
        x = torch.from_numpy(rows).float().mean(-1) / 255  # grey: 3x cheaper
        a, b = x[:, :-1], x[:, 1:]
        errs.append(torch.stack([(b[..., : w - s] - a[..., s:]).abs().mean(dim=(2, 3)) if s >= 0 else
                                 (b[..., -s:] - a[..., : w + s]).abs().mean(dim=(2, 3))
                                 for s in shifts.tolist()], dim=-1))
    err = torch.cat(errs).double()  # (N, T-1, 2 s_max + 1)
    best = (err + 1e-6 * shifts.abs()).argmin(-1)
    return {"shift": shifts[best].numpy(), "residual": err.gather(-1, best[..., None])[..., 0].numpy()}


def wasserstein_1d(u: np.ndarray, v: np.ndarray) -> float:
    """W1 between two 1-D samples: the area between their empirical CDFs, int |F_u(x) - F_v(x)| dx."""
    u, v = np.sort(np.ravel(u)), np.sort(np.ravel(v))
    grid = np.sort(np.concatenate([u, v]))
    cdf_u = np.searchsorted(u, grid[:-1], side="right") / len(u)
    cdf_v = np.searchsorted(v, grid[:-1], side="right") / len(v)
    return float(np.sum(np.abs(cdf_u - cdf_v) * np.diff(grid)))


def scroll_distance(fake: np.ndarray, real: np.ndarray, **kwargs) -> dict[str, float]:
    """Compare camera motion: W1 between the shift distributions (pixels/frame), the rate of backward moves
    (shift < 0: SMB's camera never goes left) for both sets, and the mean residual of fake over real's.

    Read the residual beside the shifts: a frozen video explains itself perfectly (residual ratio 0) but its
    shifts are all 0, far from real running footage.
    """
    f, r = scroll_stats(fake, **kwargs), scroll_stats(real, **kwargs)
    return {"scroll_w1": wasserstein_1d(f["shift"], r["shift"]),
            "backward_rate": float((f["shift"] < 0).mean()), "backward_rate_real": float((r["shift"] < 0).mean()),
            "mean_shift": float(f["shift"].mean()), "mean_shift_real": float(r["shift"].mean()),
            "residual_ratio": float(f["residual"].mean() / max(r["residual"].mean(), 1e-12))}


# ------------------------------------------------------------------------------------------------------------
# Everything at once
# ------------------------------------------------------------------------------------------------------------
def compare(fake: np.ndarray, real: np.ndarray, real_floor: np.ndarray | None = None, seed: int = 0,
            progress: bool = False, bootstrap: int = 0) -> dict[str, float]:
    """All metrics of `fake` against `real`, as a flat JSON-able dict.

    `real_floor`: a second real set, disjoint from `real`, with as many clips as `fake`. It is scored exactly
    like `fake`, and its numbers come beside (keys ending in `_floor`): a fake set is as good as real footage
    on a metric when it reaches the floor. `bootstrap` > 0 adds a 95% interval over clips beside every FD and
    KID (keys ending in `_lo` and `_hi`, from that many redraws; `bootstrap_interval`).
    """
    fake, real = check_videos(fake, "fake", 2), check_videos(real, "real", 2)
    sets = {"": fake}  # key suffix -> videos scored against `real`
    if real_floor is not None:
        sets["_floor"] = real_floor = check_videos(real_floor, "real_floor", 2)
        if len(real_floor) != len(fake):
            raise ValueError(f"real_floor has {len(real_floor)} clips but fake has {len(fake)}: FD is biased "
                             f"by N, so the floor needs the same N; pass {len(fake)} real clips not in `real`")
    for suffix, videos in sets.items():
        if videos.shape[1:] != real.shape[1:]:
            raise ValueError(f"{'real_floor' if suffix else 'fake'} clips are (T, H, W, 3) = {videos.shape[1:]} "
                             f"but real clips are {real.shape[1:]}: sample or load both at the same size")
    out: dict[str, float] = {"n": len(fake), "n_real": len(real)}
    for key, net in (("video", VideoFeatures(seed)), ("frame", FrameFeatures(seed))):
        ref = net(real, progress)
        for suffix, videos in sets.items():
            feats = net(videos, progress)
            for name, distance in (("fd", frechet_distance), ("kid", kernel_distance)):
                out[f"{key}_{name}{suffix}"] = distance(feats, ref)
                if bootstrap:
                    per_clip = len(feats) // len(videos)  # FrameFeatures: one row per frame
                    out[f"{key}_{name}{suffix}_lo"], out[f"{key}_{name}{suffix}_hi"] = bootstrap_interval(
                        distance, feats, ref, per_clip, bootstrap, seed=seed)
    out.update(palette_fidelity(fake, real, real_floor) | scroll_distance(fake, real))
    if real_floor is not None:  # (the palette floor came with palette_fidelity)
        out.update({f"{k}_floor": v for k, v in scroll_distance(real_floor, real).items() if "_real" not in k})
    return {k: (int(v) if isinstance(v, (int, np.integer)) else float(v)) for k, v in out.items()}


__all__ = ["colour_counts", "real_palette", "palette_usage", "palette_fidelity", "hud_height", "scroll_stats",
           "scroll_distance", "wasserstein_1d", "compare"]
