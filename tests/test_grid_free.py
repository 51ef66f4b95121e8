"""cfg.grid_free (mariofm.unet.grid_free): a world model's change to the last frame carries no offset per place of
the patch grid, the offset that piles up into a chequer over a long rollout (metrics.grid_grain)."""

import json
import re

import pytest
import torch
from torch import nn

from mariofm.checkpoint import load_model
from mariofm.cli import main
from mariofm.config import Config, preset
from mariofm.train import train
from mariofm.unet import VideoUNet, grid_free, patchify, unpatchify

P = 2


def place_means(frames: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) -> the frame-wide mean at each place of the P×P grid, (B, C, T, P, P)."""
    b, c, t, h, w = frames.shape
    return frames.view(b, c, t, h // P, P, w // P, P).mean((3, 5))


def test_grid_free_evens_the_places_and_keeps_everything_else():
    change = torch.randn(2, 3 * P * P, 2, 5, 6, generator=torch.Generator().manual_seed(0))
    change = change + torch.arange(3 * P * P).view(1, -1, 1, 1, 1)  # a strong offset per place
    even = unpatchify(grid_free(change, P), P)
    means = place_means(even)
    torch.testing.assert_close(means, means.mean((3, 4), keepdim=True).expand_as(means))  # one mean per colour
    torch.testing.assert_close(means.mean((3, 4)), place_means(unpatchify(change, P)).mean((3, 4)))  # same shift
    # what it takes away is one constant per place: the detail inside every place is the same
    removed = change - grid_free(change, P)
    torch.testing.assert_close(removed, removed[..., :1, :1].expand_as(removed))
    torch.testing.assert_close(grid_free(grid_free(change, P), P), grid_free(change, P))  # a projection


def test_a_frame_shift_passes_unchanged():
    shift = torch.randn(2, 3, 1, 1, 1, generator=torch.Generator().manual_seed(2)).expand(2, 3, 1, 6, 8)  # flat
    torch.testing.assert_close(grid_free(patchify(shift, P), P), patchify(shift, P))


def world(grid: bool) -> VideoUNet:
    """A world-smoke net with 2x2 patches whose zero-init head is perturbed (weights and a bias per place)."""
    torch.manual_seed(0)
    model = VideoUNet(preset("world-smoke", patch_size=P, grid_free=grid)).eval()
    nn.init.normal_(model.head[-1].weight, std=0.1)
    nn.init.normal_(model.head[-1].bias, std=0.5)
    return model


@pytest.mark.parametrize("grid", [True, False])
def test_the_model_adds_a_change_without_a_grid_offset(grid):
    model, g = world(grid), torch.Generator().manual_seed(1)
    x, context = torch.randn(2, 3, 1, 32, 32, generator=g), torch.randn(2, 3, 2, 32, 32, generator=g)
    t = torch.tensor([0.5, 0.9])
    with torch.no_grad():
        v = model(x, t, context=context, actions=torch.zeros(2, 3, 8))
    change = x - t.view(2, 1, 1, 1, 1) * v - context[:, :, -1:]  # x̂0 = x_t − t·v (t > t_min), minus the last frame
    spread = (place_means(change) - place_means(change).mean((3, 4), keepdim=True)).abs().max()
    assert (spread < 1e-5) if grid else (spread > 0.05)


@pytest.mark.parametrize("changes", [dict(frame_residual=False), dict(patch_size=1)])
def test_grid_free_needs_a_residual_on_a_patch_grid(changes):
    says = ("config field grid_free=True evens out the change that frame_residual adds, place by place of the patch "
            "grid: it needs frame_residual=True and patch_size > 1 (or grid_free=False)")
    with pytest.raises(ValueError, match="^" + re.escape(says) + "$"):
        Config(**{**preset("world-smoke", patch_size=P).to_dict(), "grid_free": True, **changes})


def test_export_switches_it_on_for_weights_trained_without_it(mario_clips, tmp_path):
    """grid_free needs no weights, so it is a play-time field of `export --set`; the card says how it trained."""
    train(preset("world-smoke", patch_size=P), mario_clips, tmp_path / "run", steps=1, progress=False)
    out = tmp_path / "world.safetensors"
    assert main(["export", "--run", str(tmp_path / "run"), "--out", str(out), "--set", "grid_free=true"]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["config"]["grid_free"] is True and card["training"]["config_play_fields"] == {"grid_free": False}
    model, cfg = load_model(out)
    assert cfg.grid_free and model.grid_free
