"""Weight-free video metrics (mariofm.features and mariofm.metrics).

The core check: real clips with a known corruption must score worse than the real-vs-real floor on the
metrics meant to catch that corruption (table in CATCHES), and the maths must match hand-computed cases.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from mariofm.data import resize_frame
from mariofm.features import FrameFeatures, VideoFeatures, bootstrap_interval, frechet_distance, kernel_distance
from mariofm.metrics import (
    compare,
    grid_grain,
    palette_fidelity,
    scroll_distance,
    scroll_stats,
    wasserstein_1d,
)
from mariofm.video import read_frames

T, STRIDE, SIZE = 8, 1, (60, 64)  # windows of 8 consecutive recorded frames at the cpu preset's frame size


@pytest.fixture(scope="module")
def real_sets(mario_clips: Path) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint sets of real windows, A and B, shrunk as training data is. Consecutive windows of each
    clip go to alternate sets, so both see every clip (4 clips of 48 frames: 12 windows each)."""
    a, b = [], []
    for path in sorted(Path(mario_clips).glob("*.avi")):
        frames = read_frames(path)
        windows = [np.stack([resize_frame(f, SIZE) for f in frames[s:s + T * STRIDE:STRIDE]])
                   for s in range(0, len(frames) - T * STRIDE + 1, T * STRIDE)]
        a, b = a + windows[0::2], b + windows[1::2]
    n = min(len(a), len(b))
    assert n >= 8, f"mario_clips gives {len(a) + len(b)} windows of {T * STRIDE} frames; these tests need 16"
    return np.stack(a[:n]), np.stack(b[:n])


def _blur(v: np.ndarray) -> np.ndarray:
    """3x3 box blur of every frame (edges repeated)."""
    p = np.pad(v.astype(np.float32), ((0, 0), (0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = v.shape[2:4]
    return (sum(p[:, :, i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9).round().astype(np.uint8)


CORRUPTIONS = {
    "noise": lambda v, g: np.clip(v + g.normal(0, 16, v.shape), 0, 255).round().astype(np.uint8),
    "blur": lambda v, g: _blur(v),
    "tint": lambda v, g: np.clip(v.astype(int) + [24, 0, -24], 0, 255).astype(np.uint8),
    "shuffle": lambda v, g: np.stack([clip[g.permutation(len(clip))] for clip in v]),
    "reverse": lambda v, g: v[:, ::-1].copy(),
    "frozen": lambda v, g: np.repeat(v[:, :1], v.shape[1], axis=1),
}
# which metrics are meant to catch which corruption (all "higher is worse" but in_palette)
CATCHES = {
    "noise": ["frame_fd", "frame_kid", "video_fd", "in_palette", "palette_tv"],
    "blur": ["frame_fd", "frame_kid", "video_fd", "in_palette", "palette_tv"],
    "tint": ["frame_fd", "frame_kid", "in_palette", "palette_tv"],
    "shuffle": ["video_fd", "scroll_w1", "backward_rate"],
    "reverse": ["scroll_w1", "backward_rate"],
    "frozen": ["video_fd", "scroll_w1"],
}


@pytest.fixture(scope="module")
def floor(real_sets) -> dict:
    a, b = real_sets
    return compare(a, b)


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_corrupted_clips_score_worse_than_the_real_floor(real_sets, floor, corruption):
    a, b = real_sets
    """Not just worse: at least twice as far from a perfect score as the real floor, and by at least 0.1 (the
    floor of KID and of the backward rate is <= 0 here). On these clips the closest call is shuffle's video_fd:
    15.8 against a floor of 6.7."""
    bad = compare(CORRUPTIONS[corruption](a, np.random.default_rng(1)), b)
    for metric in CATCHES[corruption]:
        # distance from a perfect score: 1 - in_palette; every other metric is 0 when perfect
        off, floor_off = [1 - v if metric == "in_palette" else v for v in (bad[metric], floor[metric])]
        assert off >= max(2 * floor_off, 0.1), f"{corruption}: {metric} = {bad[metric]:.4g}, floor {floor[metric]:.4g}"


@pytest.fixture(scope="module")
def three_sets(mario_clips: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three disjoint sets of real windows (every third window of each clip): 8 windows each."""
    sets = [[], [], []]
    for path in sorted(Path(mario_clips).glob("*.avi")):
        frames = read_frames(path)
        windows = [np.stack([resize_frame(f, SIZE) for f in frames[s:s + T]]) for s in range(0, len(frames) - T + 1, T)]
        for i in range(3):
            sets[i] += windows[i::3]
    n = min(map(len, sets))
    return tuple(np.stack(s[:n]) for s in sets)


def test_compare_reports_the_floor_beside_each_score(three_sets):
    """fake, real and floor are three disjoint real sets: each `_floor` number is the floor set scored against
    `real` exactly as `fake` is, and differs from fake's own number (they are other clips)."""
    fake, real, floor_set = three_sets
    out = compare(fake, real, real_floor=floor_set)
    as_fake, as_floor = compare(fake, real), compare(floor_set, real)
    for key in ("video_fd", "video_kid", "frame_fd", "frame_kid", "in_palette", "palette_tv", "scroll_w1"):
        assert out[key] == pytest.approx(as_fake[key]), key
        assert out[f"{key}_floor"] == pytest.approx(as_floor[key]), key
        assert out[key] != pytest.approx(out[f"{key}_floor"]), key
    assert out["in_palette_ratio"] == pytest.approx(out["in_palette"] / out["in_palette_floor"])
    assert out["backward_rate_real"] == 0  # SMB's camera never scrolls left
    assert out["n"] == len(fake) and out["n_real"] == len(real)
    assert all(isinstance(v, (int, float)) for v in out.values())  # JSON-able


def test_bootstrap_interval_brackets_the_score_and_separates_noise_from_real(real_sets):
    a, b = real_sets
    noisy = CORRUPTIONS["noise"](a, np.random.default_rng(1))
    out = compare(noisy, b, real_floor=a, bootstrap=50)
    for key in ("video_fd", "video_kid", "frame_fd", "frame_kid"):
        for suffix in ("", "_floor"):
            lo, hi = out[f"{key}{suffix}_lo"], out[f"{key}{suffix}_hi"]
            assert lo < hi, (key, suffix, lo, hi)
    # noise is caught beyond doubt: the noisy set's whole interval lies above the real floor. (The floor's own
    # interval is wide here: 12 clips cut from 4 short recordings, so a redraw often repeats one clip many times)
    for key in ("frame_fd", "frame_kid", "video_fd", "video_kid"):
        assert out[f"{key}_lo"] > out[f"{key}_floor"], (key, out[f"{key}_lo"], out[f"{key}_floor"])
    assert compare(noisy, b, real_floor=a, bootstrap=50) == out  # fixed seed: the same interval every time
    assert "video_fd_lo" not in compare(noisy, b)  # off unless asked for


def test_bootstrap_redraws_whole_clips():
    # per-frame features of 6 clips x 4 frames; a clip's frames share one value, so a redraw of whole clips
    # keeps every mean a multiple of 1/6 of the clip values, while a redraw of single frames would not
    feats = np.repeat(np.arange(6, dtype=np.float64), 4)[:, None]
    means = []
    lo, hi = bootstrap_interval(lambda x, y: means.append(x.mean()) or x.mean(), feats, feats, per_clip=4, draws=100)
    assert all(abs(m * 6 - round(m * 6)) < 1e-9 for m in means)
    assert 0 <= lo < hi <= 5


# --- the random feature nets ------------------------------------------------------------------------------
def test_feature_nets_are_the_same_on_every_construction(real_sets):
    a, _ = real_sets
    for cls in (VideoFeatures, FrameFeatures):
        one, two, other = cls(seed=0), cls(seed=0), cls(seed=1)
        assert all(torch.equal(w1, w2) for w1, w2 in zip(one.weights, two.weights, strict=True))
        assert not torch.equal(one.weights[0], other.weights[0])
        assert np.array_equal(one(a), two(a))
    # numpy's legacy RandomState stream is frozen: the first weight is the same on every machine
    expected = np.random.RandomState(0).standard_normal(VideoFeatures(seed=0).weights[0].shape)
    expected = (expected - expected.mean(axis=(2, 3, 4), keepdims=True)) * np.sqrt(2 / (6 * 27))
    assert np.allclose(VideoFeatures(seed=0).weights[0].numpy(), expected, atol=1e-6)


def test_first_layer_filters_sum_to_zero():
    w = VideoFeatures().weights[0]  # every filter sums to zero over each input channel: blind to flat colour
    assert w.sum(dim=(2, 3, 4)).abs().max() < 1e-5
    w = FrameFeatures().weights[0]
    half = len(w) // 2  # the colour filters sum to zero over all channels together
    assert w[:half].sum(dim=(1, 2, 3, 4)).abs().max() < 1e-5 and w[:half].sum(dim=(2, 3, 4)).abs().max() > 0.1
    assert w[half:].sum(dim=(2, 3, 4)).abs().max() < 1e-5


def test_feature_shapes(real_sets):
    a, _ = real_sets
    n, t = a.shape[:2]
    video, frames, pooled = VideoFeatures(), FrameFeatures(), FrameFeatures(per_frame=False)
    assert video(a).shape == (n, video.dim) and video(a).dtype == np.float64
    assert frames(a).shape == (n * t, frames.dim)
    assert pooled(a).shape == (n, pooled.dim)
    # per-frame samples averaged over each clip's frames are the pooled features
    assert np.allclose(frames(a).reshape(n, t, -1).mean(1), pooled(a))


# --- distances on hand-computed cases ---------------------------------------------------------------------
def _whitened(n: int, d: int, seed: int = 0) -> np.ndarray:
    """n points in d dims with sample mean exactly 0 and sample covariance (ddof=1) exactly I."""
    x = np.random.default_rng(seed).standard_normal((n, d))
    x -= x.mean(0)
    return x @ np.linalg.inv(np.linalg.cholesky(np.cov(x, rowvar=False))).T


def test_frechet_distance_matches_the_closed_form():
    n, d = 50, 5
    x, m = _whitened(n, d), np.arange(d, dtype=float)
    # a: mean 0, cov I; b: mean m, cov 4I. FD = |m|^2 + tr(I + 4I - 2 (4I)^1/2) = |m|^2 + d, in b's units:
    # divided by b's mean per-dimension variance, 4 (n - 1) / n (np.var has ddof=0)
    expected = (m @ m + d) / (4 * (n - 1) / n)
    assert frechet_distance(x, 2 * x + m) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(x, x) == pytest.approx(0, abs=1e-9)


def test_distances_use_one_scalar_scale():
    g = np.random.default_rng(0)
    a, b = g.standard_normal((200, 8)), g.standard_normal((200, 8)) + 0.5
    # a common unit does not matter ...
    assert frechet_distance(7 * a, 7 * b) == pytest.approx(frechet_distance(a, b))
    assert kernel_distance(7 * a, 7 * b) == pytest.approx(kernel_distance(a, b))
    # ... and a feature that barely varies (the HUD) does not blow up, as per-dimension scaling would make it
    hud_a, hud_b = np.c_[a, 1 + 1e-9 * g.standard_normal(200)], np.c_[b, 1 + 1e-9 * g.standard_normal(200)]
    # (the 9th dimension adds ~0 to FD but lowers the mean variance, the unit, by 8/9)
    assert frechet_distance(hud_a, hud_b) == pytest.approx(frechet_distance(a, b) * 9 / 8, rel=1e-3)


def test_kernel_distance_is_the_unbiased_mmd():
    g = np.random.default_rng(0)
    a, b = g.standard_normal((5, 3)), g.standard_normal((4, 3)) + 1
    # brute force: centre on b's mean, divide by sqrt(mean variance of b), k(x, y) = (x.y / 3 + 1)^3
    mu, s = b.mean(0), np.sqrt(b.var(0).mean())
    za, zb = (a - mu) / s, (b - mu) / s
    k = lambda x, y: (x @ y / 3 + 1) ** 3  # noqa: E731
    same = lambda x: sum(k(x[i], x[j]) for i in range(len(x)) for j in range(len(x)) if i != j)  # noqa: E731
    cross = sum(k(p, q) for p in za for q in zb)
    expected = same(za) / (5 * 4) + same(zb) / (4 * 3) - 2 * cross / (5 * 4)
    assert kernel_distance(a, b) == pytest.approx(expected, rel=1e-9)
    # large samples of one distribution score ~0; of a shifted one, clearly more
    x, y, z = g.standard_normal((3, 2000, 4))
    assert abs(kernel_distance(x, y)) < 0.05 < kernel_distance(x, z + 0.5)


def test_wasserstein_1d():
    # quantile functions: u = 0, 1, 3 (1/3 each), v = 5, 6 (1/2 each): 5/3 + 4/6 + 5/6 + 3/3
    assert wasserstein_1d(np.array([0, 1, 3]), np.array([5, 6])) == pytest.approx(25 / 6)
    x = np.random.default_rng(0).standard_normal(100)
    assert wasserstein_1d(x, x + 2.5) == pytest.approx(2.5)
    assert wasserstein_1d(x, x) == 0


# --- palette and scrolling on synthetic clips with known answers -----------------------------------------
def test_palette_fidelity_counts_off_palette_pixels():
    red, blue = np.array([200, 0, 0], np.uint8), np.array([0, 0, 200], np.uint8)
    real = np.zeros((2, 2, 10, 10, 3), np.uint8)
    real[..., :5, :], real[..., 5:, :] = red, blue  # half red, half blue
    fake = real.copy()
    fake[..., :3, :] = red + np.array([0, 5, 5], np.uint8)  # 30% near red (7.1 units away): in the palette
    fake[..., 7:, :] = 255  # 30% white, far from both: off the palette
    out = palette_fidelity(fake, real, real_ref=real)
    assert out["palette_size"] == 2
    assert out["in_palette"] == pytest.approx(0.7) and out["in_palette_ratio"] == pytest.approx(0.7)
    # usage: real (red .5, blue .5, off 0), fake (red .5, blue .2, off .3): TV = 0.5 (0 + .3 + .3)
    assert out["palette_tv"] == pytest.approx(0.3)
    assert out["in_palette_floor"] == 1 and out["palette_tv_floor"] == 0


def test_grid_grain_finds_a_pattern_that_stays_on_the_grid_and_not_one_that_moves():
    """A checkerboard ±a on a flat colour: every pixel's 3×3 neighbourhood mean is ±a/9 (5 pixels of its sign, 4
    of the other), so its detail is ±8a/9 at the same place in every frame. The same board moved one pixel each
    frame flips sign frame to frame and averages out; at period 4 a period-2 board still sits on the grid."""
    a = 10
    board = np.where(np.add.outer(np.arange(12), np.arange(16)) % 2 == 0, a, -a)[..., None]  # (12, 16, 1)
    still = np.broadcast_to(100 + board, (2, 4, 12, 16, 3)).astype(np.uint8)
    moving = still.copy()
    moving[:, 1::2] = np.roll(still[:, 1::2], 1, axis=3)
    assert grid_grain(still) == pytest.approx(8 * a / 9) and grid_grain(still, period=4) == pytest.approx(8 * a / 9)
    assert grid_grain(moving) == pytest.approx(0, abs=1e-9)
    assert grid_grain(np.full((1, 2, 12, 16, 3), 77, np.uint8)) == 0


def _panning_video(speed: int, n: int = 3, t: int = 6, h: int = 60, w: int = 64) -> np.ndarray:
    """A camera panning right `speed` px per frame over a blocky random level, under a fixed HUD."""
    g = np.random.default_rng(0)
    level = np.repeat(np.repeat(g.integers(0, 256, (n, h // 4, (w + speed * t) // 4 + 1, 3)), 4, 1), 4, 2)
    video = np.stack([level[:, :, speed * i: speed * i + w] for i in range(t)], 1).astype(np.uint8)
    video[:, :, :8] = g.integers(0, 256, (n, 1, 8, w, 3))  # the HUD: the top 32 of 240 rows, unmoving
    return video


def test_scroll_stats_finds_a_known_pan():
    video = _panning_video(speed=3)
    stats = scroll_stats(video)
    assert stats["shift"].shape == (3, 5) and np.all(stats["shift"] == 3) and np.all(stats["residual"] == 0)
    assert np.all(scroll_stats(video[:, ::-1])["shift"] == -3)  # played backwards: the camera goes left
    frozen = np.repeat(video[:, :1], 6, axis=1)
    assert np.all(scroll_stats(frozen)["shift"] == 0) and np.all(scroll_stats(frozen)["residual"] == 0)
    # played backwards, every move is a violation; the distribution of shifts moved by 6 px
    out = scroll_distance(video[:, ::-1], video)
    assert out["backward_rate"] == 1 and out["backward_rate_real"] == 0
    assert out["scroll_w1"] == pytest.approx(6)


# --- bad input --------------------------------------------------------------------------------------------
def test_bad_input_says_what_is_wrong(real_sets):
    a, b = real_sets
    with pytest.raises(ValueError, match="uint8"):
        compare(a.astype(np.float32) / 255, b)
    with pytest.raises(ValueError, match="torch tensor"):
        VideoFeatures()(torch.from_numpy(a))
    with pytest.raises(ValueError, match="at least 2 frames"):
        scroll_stats(a[:, :1])
    with pytest.raises(ValueError, match="same N"):
        compare(a, b, real_floor=a[:-1])
    with pytest.raises(ValueError, match="same size"):
        compare(a[:, :, :32], b)
    with pytest.raises(ValueError, match="same D"):
        frechet_distance(np.zeros((4, 3)), np.zeros((4, 2)))
