"""`python -m mariofm export`: ship a trained model as a small safetensors file with its model card.

    python -m mariofm export --run runs/ship --out mariofm/checkpoints/mariofm_cpu.safetensors --metrics eval.json

The file holds the EMA weights and, in its metadata, the config: loading it never runs code
(`mariofm.checkpoint.load_model`). The card (`.json` beside it) gathers what a reader needs to trust the numbers:
config, how the data was recorded, how long and on what the model trained, the final losses, and the `evaluate`
metrics with their real-vs-real floors — each with the command that produced it.

`--out` has no default (the shipped model would be the only sensible one, and replacing it by surprise changes
what every later plain `generate` uses). Every input is read and checked before anything is written, and the
two files are renamed into place together at the end, so the weights and their card always belong together.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

from mariofm.checkpoint import CHECKPOINT, SHIPPED, ema_weights, load_checkpoint, require_keys
from mariofm.device import hardware
from mariofm.runfolder import writable_file
from mariofm.runlog import METRICS, read_metrics


def final_losses(run: Path) -> dict:
    path = run / METRICS
    if not path.is_file():
        raise FileNotFoundError(f"no {METRICS} in {run}: export needs the run's training log for the card")
    try:
        rows = read_metrics(path)
    except ValueError as err:
        raise ValueError(f"{path} is damaged: a line is not JSON ({err})") from None
    train = [r for r in rows if "loss" in r]
    val = [r for r in rows if "val_loss" in r]
    return dict(train_fm_loss=train[-1]["loss"] if train else None,
                train_fm_loss_window_steps=train[-1]["step"] if train else None,
                val_fm_loss=val[-1]["val_loss"] if val else None)


def read_report(metrics: str | Path) -> dict:
    """An `evaluate --out` report, checked to be one."""
    path = Path(metrics)
    if not path.is_file():
        raise FileNotFoundError(f"--metrics {path}: no such file (write one with `python -m mariofm evaluate "
                                f"--out {path}`)")
    try:
        report = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"--metrics {path} is not JSON ({err})") from None
    if not isinstance(report, dict) or not ("metrics" in report or "horizons" in report):  # video or world model
        raise ValueError(f"--metrics {path} is not an `evaluate --out` report (it has no 'metrics')")
    return report


# how the model is used, not how it was trained: none of them needs other weights (grid_free, config.py: switched on
# for weights trained without it, the net's change loses its offset per patch place and keeps everything else)
PLAY_FIELDS = ("sample_steps", "solver", "sample_shift", "play_noise", "action_guidance", "grid_free")


def export(run: str | Path, out: str | Path, *, metrics: str | Path | None = None, notes: dict | None = None,
           play: dict | None = None) -> dict:
    """Write `out` (.safetensors) and its card `out.json`. Every input (checkpoint, training log, metrics
    report) is read and checked first; both files are written beside their targets under temporary names and
    renamed into place last, so a failure leaves the old pair as it was and the weights never meet another
    model's card. `play`: new values of PLAY_FIELDS for the shipped config (e.g. the sampler an evaluation
    chose); the card keeps the trained ones (training.config_play_fields)."""
    from safetensors.torch import save_file

    from mariofm.config import Config

    run, out = Path(run), Path(out)
    card_path = out.with_suffix(".json")
    if out.suffix != ".safetensors":
        raise ValueError(f"--out {out}: name the file *.safetensors (the card goes beside it as .json)")
    writable_file(out)
    writable_file(card_path)
    state = require_keys(load_checkpoint(run / CHECKPOINT), ("config", "ema", "step", "elapsed", "budget"),
                         run / CHECKPOINT, "training checkpoint")
    if bad := sorted(set(play or {}) - set(PLAY_FIELDS)):
        raise ValueError(f"--set {bad}: only the play-time fields {PLAY_FIELDS} may change at export")
    defaults = Config().to_dict()  # a field newer than the run: it trained with the default
    trained = {k: state["config"].get(k, defaults[k]) for k in (play or {})}
    state["config"] = Config.from_dict({**state["config"], **(play or {})}).to_dict()  # validated
    losses = final_losses(run)
    report = read_report(metrics) if metrics else None
    weights = {k: v.contiguous() for k, v in ema_weights(state).items()}
    tmp, card_tmp = out.with_name(out.name + ".tmp"), card_path.with_name(card_path.name + ".tmp")
    try:
        save_file(weights, tmp, metadata={"config": json.dumps(state["config"]), "step": str(state["step"])})
        card = dict(file=out.name, sha256=hashlib.sha256(tmp.read_bytes()).hexdigest(),
                    size_mb=round(tmp.stat().st_size / 2**20, 2), weights="EMA", config=state["config"],
                    training=dict(steps=state["step"], wall_minutes=round(state["elapsed"] / 60, 1),
                                  budget_epochs_steps_minutes=state["budget"],
                                  hardware=state.get("hardware") or f"(not recorded; exported on) {hardware()}",
                                  **losses, **({"config_play_fields": trained} if play else {})),
                    **(notes or {}))
        if report is not None:
            card["evaluate"] = report
        card_tmp.write_text(json.dumps(card, indent=2) + "\n")
        os.replace(tmp, out)
        os.replace(card_tmp, card_path)
    finally:
        tmp.unlink(missing_ok=True)
        card_tmp.unlink(missing_ok=True)
    return card


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("export", help="write a run's EMA weights as .safetensors with a model card",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run", required=True, help="run folder with checkpoint.pt")
    # no default: the obvious one, the shipped model, is what plain `generate` uses, and an export that
    # replaced it by surprise would change every later generation. A path typed out is the user's intent, and
    # re-exporting to it (after a new evaluate) is the normal loop, so an existing file there is replaced.
    p.add_argument("--out", required=True,
                   help=f"the .safetensors file to write; the card goes beside it (the shipped model: {SHIPPED})")
    p.add_argument("--metrics", default=None, help="an `evaluate --out` JSON to put in the card")
    p.add_argument("--note", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra card entries, e.g. data_command='python -m mariofm record ...'")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help=f"change play-time config fields {PLAY_FIELDS} in the shipped file, e.g. play_noise=0")
    p.add_argument("--notes-json", default=None, metavar="FILE",
                   help="a JSON object of extra card entries (e.g. a world model's button shares)")
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    if bad := [pair for pair in args.note if "=" not in pair]:
        raise ValueError(f"--note {bad[0]!r}: write notes as key=value")
    notes = json.loads(Path(args.notes_json).read_text()) if args.notes_json else {}
    notes.update(pair.split("=", 1) for pair in args.note)
    from mariofm.config import parse_overrides

    card = export(args.run, args.out, metrics=args.metrics, notes=notes, play=parse_overrides(args.set))
    print(f"wrote {args.out} ({card['size_mb']} MB) and {Path(args.out).with_suffix('.json')}")
    return 0
