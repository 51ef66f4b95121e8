"""Checkpoints: the files a run writes and the ways to read them back, without ever running stored code.

    run/checkpoint.pt    everything needed to resume: config, weights, EMA weights, optimizer, RNG states, step
    run/video_model.pt   the config, the weights and the EMA weights: all that generation needs
    *.safetensors        EMA weights only, the config in the file's metadata (what `export` ships)

`load_model` rebuilds a VideoUNet from any of the three. `.pt` files load with `weights_only=True` (plain tensors
and containers only); a file holding other objects is refused with an error that says why. A file that is empty,
cut short (an interrupted copy) or of another kind is a DamagedFileError naming the file and what is wrong.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import sys
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from mariofm.config import Config
from mariofm.unet import VideoUNet

CHECKPOINT = "checkpoint.pt"  # everything needed to resume
MODEL = "video_model.pt"  # config + weights, all that generation needs
SHIPPED = Path(__file__).resolve().parent / "checkpoints" / "mariofm_cpu.safetensors"  # installed with the package
WORLD_SHIPPED = SHIPPED.with_name("mariofm_world.safetensors")  # the world model (mariofm.rollout)


class ConfigMismatchError(ValueError):
    """A checkpoint was made with another config than the one asked for."""


class DamagedFileError(ValueError):
    """A checkpoint or model file is empty, truncated, or not the kind of file its name says."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path} is damaged or not a mariofm checkpoint: {problem}. Copy or export it again, "
                         f"or point to another file")


def _what_is_wrong(path: Path, err: Exception) -> str:
    """Why torch.load failed on `path`, in words: empty, cut short, or not a PyTorch file at all."""
    size = path.stat().st_size
    if size == 0:
        return "it is empty (0 bytes)"
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"PK") and not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        return f"it is truncated ({size} bytes; the end of its zip archive is missing, as after an interrupted " \
               f"write or copy)"
    if not head.startswith(b"PK") and not head.startswith(b"\x80"):  # neither a zip nor a (legacy) pickle
        return f"it is not a PyTorch file (it begins with {head!r})"
    # a legacy pickle that runs out of bytes: the unpickler's reads come back short at the end of the file
    if head.startswith(b"\x80") and (isinstance(err, (EOFError, IndexError, struct.error))
                                      or "unexpected EOF" in str(err)):
        return f"it ends before the data it announces ({size} bytes of an old-format PyTorch file: cut short, as " \
               f"after an interrupted write or copy, or damaged)"
    return f"torch cannot read it ({type(err).__name__}: {str(err).splitlines()[0][:200]})"


def save_atomic(obj: dict, path: Path) -> None:
    """Write to a temporary file, then rename: a crash mid-write never leaves a half checkpoint behind."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def checkpoint_file(path: str | Path) -> Path:
    """The file `path` names: a run folder means its checkpoint.pt, else its video_model.pt."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT if (path / CHECKPOINT).exists() else path / MODEL
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint (a run folder means its checkpoint.pt, else its video_model.pt) as plain tensors and
    containers; never run code stored in the file."""
    path = checkpoint_file(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}; train one with `python -m mariofm train`")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "GLOBAL" not in str(err):  # not a refused class or function: the pickle itself is broken
            raise DamagedFileError(path, _what_is_wrong(path, err)) from None
        raise pickle.UnpicklingError(
            f"refusing to load {path}: it holds objects other than tensors and plain data, and loading it "
            f"could run arbitrary code. Only load checkpoints written by mariofm. ({err})") from None
    # a cut legacy (pickle) file fails as EOFError, IndexError or struct.error depending on where it ends
    except (RuntimeError, EOFError, IndexError, struct.error, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise DamagedFileError(path, _what_is_wrong(path, err)) from None


def require_keys(state: dict, keys: tuple[str, ...], path: str | Path, kind: str) -> dict:
    """`state` itself when it holds `keys`; else a DamagedFileError saying it is not a `kind`."""
    missing = [k for k in keys if not isinstance(state, dict) or k not in state]
    if missing:
        raise DamagedFileError(Path(path), f"it holds no {', '.join(missing)}, so it is not a {kind}")
    return state


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
        try:
            with safe_open(path, "pt") as f:
                metadata = f.metadata() or {}
            weights = load_file(path, device=str(device))
        except SafetensorError as err:
            problem = "it is empty (0 bytes)" if path.stat().st_size == 0 else f"safetensors cannot read it ({err})"
            raise DamagedFileError(path, problem) from None
        if "config" not in metadata:
            raise DamagedFileError(path, "its metadata holds no config (files from `mariofm export` do)")
        cfg = Config.from_dict(json.loads(metadata["config"]))
        if not ema:
            print(f"{path.name} holds EMA weights only; using them", file=sys.stderr)
    else:
        path = checkpoint_file(path)
        state = load_checkpoint(path, map_location=device)
        require_keys(state, ("config", "ema" if ema else "model"), path, "mariofm checkpoint")
        cfg = Config.from_dict(state["config"])
        weights = ema_weights(state) if ema else state["model"]
    model = VideoUNet(cfg).to(device)
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        # torch lists each misfit on a line of its own under a heading: name the last one
        raise DamagedFileError(path, f"its weights do not fit the model its config describes "
                                     f"({str(err).splitlines()[-1].strip()})") from None
    return model.eval(), cfg


__all__ = ["CHECKPOINT", "MODEL", "SHIPPED", "WORLD_SHIPPED", "ConfigMismatchError", "DamagedFileError", "save_atomic",
           "checkpoint_file", "load_checkpoint", "ema_weights", "check_config", "require_keys", "load_model"]
