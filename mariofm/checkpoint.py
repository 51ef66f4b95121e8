"""Checkpoints: the files a run writes and the ways to read them back, without ever running stored code.

    run/checkpoint.pt    everything needed to resume: config, weights, EMA weights, optimizer, RNG states, step
    run/video_model.pt   the config, the weights and the EMA weights: all that generation needs
    *.safetensors        EMA weights only, the config in the file's metadata (what `export` ships)

`load_model` rebuilds a VideoUNet from any of the three. `.pt` files load with `weights_only=True` (plain tensors
and containers only); a file holding other objects is refused with an error that says why.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from mariofm.config import Config
from mariofm.unet import VideoUNet

CHECKPOINT = "checkpoint.pt"  # everything needed to resume
MODEL = "video_model.pt"  # config + weights, all that generation needs
SHIPPED = Path(__file__).resolve().parent / "checkpoints" / "mariofm_cpu.safetensors"  # installed with the package


class ConfigMismatchError(ValueError):
    """A checkpoint was made with another config than the one asked for."""


def save_atomic(obj: dict, path: Path) -> None:
    """Write to a temporary file, then rename: a crash mid-write never leaves a half checkpoint behind."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint (a run folder means its checkpoint.pt, else its video_model.pt) as plain tensors and
    containers; never run code stored in the file."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT if (path / CHECKPOINT).exists() else path / MODEL
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}; train one with `python -m mariofm train`")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise pickle.UnpicklingError(
            f"refusing to load {path}: it holds objects other than tensors and plain data, and loading it "
            f"could run arbitrary code. Only load checkpoints written by mariofm. ({err})") from None


def ema_weights(state: dict) -> dict[str, torch.Tensor]:
    """The EMA model's weights from a checkpoint, without AveragedModel's `module.` prefix and counter."""
    ema = state["ema"]
    return {k.removeprefix("module."): v for k, v in ema.items() if k != "n_averaged"}


def check_config(saved: dict, cfg: Config, where: str | Path) -> None:
    """Raise ConfigMismatchError naming every field where the checkpoint's config differs from `cfg`."""
    differing = Config.from_dict(saved).diff(cfg)
    if differing:
        lines = ", ".join(f"{k}: checkpoint {a!r} vs requested {b!r}" for k, (a, b) in differing.items())
        raise ConfigMismatchError(f"{where} was trained with a different config ({lines}). Resume without "
                                  f"--preset/--set to use the checkpoint's config, or start a new run folder.")


def load_model(checkpoint: str | Path | None = None, *, ema: bool = True,
               device: str | torch.device = "cpu") -> tuple[VideoUNet, Config]:
    """Rebuild the model from a run folder, `video_model.pt`, `checkpoint.pt` or a `.safetensors` file
    (config in its metadata; default: the shipped model), with the EMA weights unless `ema=False`. Nothing is
    unpickled. Returns the model in eval mode and its config."""
    path = Path(checkpoint) if checkpoint else SHIPPED
    if path.suffix == ".safetensors":
        if not path.exists():
            raise FileNotFoundError(f"no model at {path}; train one with `python -m mariofm train`")
        with safe_open(path, "pt") as f:
            cfg = Config.from_dict(json.loads(f.metadata()["config"]))
        weights = load_file(path, device=str(device))
        if not ema:
            print(f"{path.name} holds EMA weights only; using them", file=sys.stderr)
    else:
        state = load_checkpoint(path, map_location=device)
        cfg = Config.from_dict(state["config"])
        weights = ema_weights(state) if ema else state["model"]
    model = VideoUNet(cfg).to(device)
    model.load_state_dict(weights)
    return model.eval(), cfg


__all__ = ["CHECKPOINT", "MODEL", "SHIPPED", "ConfigMismatchError", "save_atomic", "load_checkpoint", "ema_weights",
           "check_config", "load_model"]
