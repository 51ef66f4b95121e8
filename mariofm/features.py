"""Random-feature distances between two sets of videos: the idea of FVD and FID without downloaded weights.

FVD and FID embed videos with networks trained elsewhere, whose weights must be downloaded; here the nets are
fixed *random* conv nets, the same on every machine, and the distances are the usual ones between feature sets:

    check_videos                        the input every metric takes: uint8 videos (N, T, H, W, 3) RGB
    VideoFeatures, FrameFeatures        a random 3D-conv net per clip (motion too), a 2D one per frame
    frechet_distance, kernel_distance   FD and KID between two sets of features
    bootstrap_interval                  how far FD or KID would move with other clips of the same sources

FD is biased at finite N: compare a score with the same distance between two real sets of the same N (the
real-vs-real floor that `mariofm.metrics.compare` reports beside it).
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


def bootstrap_interval(distance, feats: np.ndarray, real_feats: np.ndarray, per_clip: int = 1,
                       draws: int = 200, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """A percentile bootstrap interval of `distance(feats, real_feats)` over clips: both sets are redrawn with
    replacement, whole clips at a time (`per_clip` consecutive rows per clip, e.g. T for per-frame features).

    It shows how much the score would move with other clips of the same sources. A redraw repeats some clips
    and drops others, which can only add to a distance, so the interval leans above the point estimate (far
    above it with few clips: N >= 64 keeps it close); read it as a spread, not as centred on the score.
    """
    rng = np.random.RandomState(seed)

    def redraw(x: np.ndarray) -> np.ndarray:
        clips = x.reshape(len(x) // per_clip, per_clip, -1)
        return clips[rng.randint(0, len(clips), len(clips))].reshape(len(x), -1)

    values = [distance(redraw(feats), redraw(real_feats)) for _ in range(draws)]
    return tuple(float(q) for q in np.quantile(values, [(1 - level) / 2, (1 + level) / 2]))


__all__ = ["check_videos", "VideoFeatures", "FrameFeatures", "frechet_distance", "kernel_distance",
           "bootstrap_interval"]
