"""Weight-free metrics: how close is a set of generated Mario videos to a set of real ones?

FVD and FID embed videos with networks whose weights must be downloaded; nothing here downloads anything.
Every metric takes uint8 videos (N, T, H, W, 3) RGB and compares a generated set with a real set:

    VideoFeatures, FrameFeatures        fixed *random* conv nets (the same weights on every machine)
    frechet_distance, kernel_distance   FD and KID between two sets of their features
    palette_fidelity                    does the video keep to the NES colours of the real footage?
    scroll_distance                     does the camera move as SMB's does (never to the left)?
    compare                             all of them in one JSON-able dict, beside the real-vs-real floor

FD is biased at finite N, and every score depends on the data: a number means little without the floor,
the same metric between two disjoint real sets of the same N. `compare` adds it when given a second real set.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mariofm.video import from_uint8


def check_videos(videos: np.ndarray, name: str = "videos", min_n: int = 1) -> np.ndarray:
    """Return `videos` as a uint8 (N, T, H, W, 3) array with T >= 2, or raise a ValueError that says why."""
    if isinstance(videos, torch.Tensor):
        raise ValueError(f"{name} is a torch tensor {tuple(videos.shape)}; pass uint8 numpy (N, T, H, W, 3): "
                         "convert model output (B, 3, T, H, W) in [-1, 1] with mariofm.video.to_uint8")
    videos = np.asarray(videos)
    if videos.dtype != np.uint8 or videos.ndim != 5 or videos.shape[-1] != 3:
        raise ValueError(f"{name} must be uint8 RGB videos of shape (N, T, H, W, 3); got {videos.dtype} "
                         f"{videos.shape}. Floats in [-1, 1]: ((x + 1) * 127.5).round().astype(np.uint8)")
    if videos.shape[0] < min_n or videos.shape[1] < 2:
        raise ValueError(f"{name} has shape {videos.shape}: need at least {min_n} videos of at least 2 frames")
    return np.ascontiguousarray(videos)  # torch.from_numpy refuses views with negative strides (v[:, ::-1])


# ------------------------------------------------------------------------------------------------------------
# Random conv features
# ------------------------------------------------------------------------------------------------------------
class _RandomConvFeatures:
    """A conv net whose weights are drawn, never trained: `conv -> ReLU` layers with stride 2 in space.

    The weights come from `np.random.RandomState(seed)`, whose stream NumPy keeps frozen across versions and
    platforms, so every machine builds the same net. He scaling (std = sqrt(2 / fan_in)) keeps activations
    O(1) through the layers. A random net is a poor *semantic* embedding, but a fixed one is a fair ruler:
    both sets are measured with the same one. Features: the mean of every channel of every layer.

    The first layer's filters sum to zero. A NES screen is mostly flat colour, and a filter with a nonzero
    sum answers mostly to that colour, so which level a clip shows (blue sky, black underground) would swamp
    everything else. Zero-sum filters answer to edges, texture and motion, where noise, blur and frame order
    show. A share `colour_share` of them sums to zero over all input channels together (blind to grey level
    only, so they still see colour contrasts); the rest sum to zero over each channel (blind to flat colour).
    """

    kernel: tuple[int, int, int]
    in_channels: int
    time_stride: int  # of every layer after the first
    colour_share: float

    def __init__(self, seed: int = 0, widths: tuple[int, ...] = (16, 32, 64), batch_size: int = 16):
        rng = np.random.RandomState(seed)
        self.seed, self.batch_size, self.weights = seed, batch_size, []
        c_in = self.in_channels
        for c_out in widths:
            fan_in = c_in * math.prod(self.kernel)
            w = rng.standard_normal((c_out, c_in, *self.kernel)) * math.sqrt(2.0 / fan_in)
            if not self.weights:
                k = round(self.colour_share * c_out)
                w[:k] -= w[:k].mean(axis=(1, 2, 3, 4), keepdims=True)
                w[k:] -= w[k:].mean(axis=(2, 3, 4), keepdims=True)
            self.weights.append(torch.from_numpy(w.astype(np.float32)))
            c_in = c_out
        self.dim = sum(widths)

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.inference_mode()
    def _layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        acts, pad = [], tuple(k // 2 for k in self.kernel)
        for i, w in enumerate(self.weights):
            stride = (1 if i == 0 else self.time_stride, 2, 2)  # space halves at every layer
            x = F.relu(F.conv3d(x, w, stride=stride, padding=pad))
            acts.append(x)
        return acts

    def _pool(self, acts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([a.mean(dim=(2, 3, 4)) for a in acts], dim=1)  # (B, dim)

    def __call__(self, videos: np.ndarray, progress: bool = False) -> np.ndarray:
        """Features of uint8 videos (N, T, H, W, 3) -> float64 (N, dim)."""
        videos = check_videos(videos)
        out = []
        for i in tqdm(range(0, len(videos), self.batch_size), desc=type(self).__name__, disable=not progress):
            x = from_uint8(videos[i:i + self.batch_size])
            out.append(self._pool(self._layers(self._input(x))).double())
        return torch.cat(out).numpy()


class VideoFeatures(_RandomConvFeatures):
    """A random 3D-conv net (3x3x3) fed frames *and* frame differences: one feature vector per clip.

    Input at time t: [x_t, x_t - x_{t-1}] (6 channels, T-1 steps). The difference channels make motion a
    first-class signal: a frozen clip has zero differences, a shuffled one huge ones.
    """

    kernel, in_channels, time_stride, colour_share = (3, 3, 3), 6, 2, 0.0  # colour: FrameFeatures' job

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[:, :, 1:], x[:, :, 1:] - x[:, :, :-1]], dim=1)


class FrameFeatures(_RandomConvFeatures):
    """The per-frame 2D variant (1x3x3 kernels): FID-like, blind to time order.

    `per_frame=True` (default) returns one sample per frame, (N*T, dim), as FID treats images; `False`
    averages over the frames, (N, dim).
    """

    kernel, in_channels, time_stride, colour_share = (1, 3, 3), 3, 1, 0.5

    def __init__(self, seed: int = 0, widths: tuple[int, ...] = (32, 32, 64), batch_size: int = 16,
                 per_frame: bool = True):  # a wider first layer: 16 colour filters read tints reliably
        super().__init__(seed, widths, batch_size)
        self.per_frame = per_frame

    def _pool(self, acts: list[torch.Tensor]) -> torch.Tensor:
        if not self.per_frame:
            return super()._pool(acts)
        return torch.cat([a.mean(dim=(3, 4)).transpose(1, 2).flatten(0, 1) for a in acts], dim=1)


# ------------------------------------------------------------------------------------------------------------
# Distances between feature sets
# ------------------------------------------------------------------------------------------------------------
def _standardise(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre both sets on b's mean and divide by ONE scalar: b's root-mean per-dimension variance.

    Per-dimension scaling would divide by ~0 on features that barely vary in real footage (the constant HUD)
    and let them dominate; one scalar only fixes the unit, so a score does not depend on the features' scale.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"features must be (N, D) arrays with the same D and N >= 2; got {a.shape}, {b.shape}")
    mu, scale = b.mean(0), math.sqrt(b.var(0).mean()) + 1e-12
    return (a - mu) / scale, (b - mu) / scale


def frechet_distance(feats: np.ndarray, real_feats: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (scaled by `real_feats`, see above).

        FD = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^1/2 S_b S_a^1/2)^1/2)

    The last trace equals tr((S_a S_b)^1/2), but the symmetric form is a PSD matrix, so eigvalsh gives its
    eigenvalues stably (no complex parts as with sqrtm on the product).
    """
    a, b = _standardise(feats, real_feats)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    lam, vec = np.linalg.eigh(cov_a)
    root_a = (vec * np.sqrt(lam.clip(min=0))) @ vec.T
    cross = np.sqrt(np.linalg.eigvalsh(root_a @ cov_b @ root_a).clip(min=0)).sum()
    mean_term = np.sum((a.mean(0) - b.mean(0)) ** 2)
    return float(mean_term + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)


def kernel_distance(feats: np.ndarray, real_feats: np.ndarray) -> float:
    """KID: the unbiased estimate of MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / D + 1)^3,
    on features scaled as for FD.

        MMD^2 = mean_{i!=j} k(a_i, a_j) + mean_{i!=j} k(b_i, b_j) - 2 mean_{i,j} k(a_i, b_j)

    Unbiased, so it can dip below 0 when the sets match; unlike FD its expected value does not depend on N.
    """
    a, b = _standardise(feats, real_feats)

    def kernel_sum(x: np.ndarray, y: np.ndarray, drop_diagonal: bool) -> float:
        total = 0.0
        for i in range(0, len(x), 1024):  # row blocks keep memory flat for per-frame sets (N*T samples)
            k = x[i:i + 1024] @ y.T / x.shape[1] + 1
            k = k * k * k  # 15x faster than k ** 3 (numpy calls pow)
            total += k.sum() - (np.trace(k, offset=i) if drop_diagonal else 0.0)
        return total

    m, n = len(a), len(b)
    return float(kernel_sum(a, a, True) / (m * (m - 1)) + kernel_sum(b, b, True) / (n * (n - 1))
                 - 2 * kernel_sum(a, b, False) / (m * n))


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


# ------------------------------------------------------------------------------------------------------------
# Scrolling
# ------------------------------------------------------------------------------------------------------------
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
    hud = round(32 * h / 240) if hud_rows is None else hud_rows
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
            progress: bool = False) -> dict[str, float]:
    """All metrics of `fake` against `real`, as a flat JSON-able dict.

    `real_floor`: a second real set, disjoint from `real`, with as many clips as `fake`. It is scored exactly
    like `fake`, and its numbers come beside (keys ending in `_floor`): a fake set is as good as real footage
    on a metric when it reaches the floor.
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
            out[f"{key}_fd{suffix}"] = frechet_distance(feats, ref)
            out[f"{key}_kid{suffix}"] = kernel_distance(feats, ref)
    out.update(palette_fidelity(fake, real, real_floor) | scroll_distance(fake, real))
    if real_floor is not None:  # (the palette floor came with palette_fidelity)
        out.update({f"{k}_floor": v for k, v in scroll_distance(real_floor, real).items() if "_real" not in k})
    return {k: (int(v) if isinstance(v, (int, np.integer)) else float(v)) for k, v in out.items()}


__all__ = ["VideoFeatures", "FrameFeatures", "frechet_distance", "kernel_distance", "colour_counts", "real_palette",
           "palette_usage", "palette_fidelity", "scroll_stats", "scroll_distance", "wasserstein_1d", "compare",
           "check_videos"]
