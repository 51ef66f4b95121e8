"""`python -m mariofm export`: ship a trained model as a small safetensors file with its model card.

    python -m mariofm export --run runs/ship --out mariofm/checkpoints/mariofm_cpu.safetensors --metrics eval.json
    python -m mariofm export --file mariofm/checkpoints/mariofm_world.safetensors --set action_guidance=1.5 \
        --metrics eval_w1.5.json     # new play settings for an exported model, measured with them (`set_play`)

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
    report.pop("against", None)  # a comparison with another report (evaluate --world --against), not this model's
    return report


# how the model is used, not how it was trained: none of them needs other weights (grid_free, config.py: switched on
# for weights trained without it, the net's change loses its offset per patch place and keeps everything else)
PLAY_FIELDS = ("sample_steps", "solver", "sample_shift", "sample_renoise", "play_noise", "action_guidance", "grid_free",
               "own_mark")


def export(run: str | Path, out: str | Path, *, metrics: str | Path | None = None, notes: dict | None = None,
           play: dict | None = None) -> dict:
    """Write `out` (.safetensors) and its card `out.json`. Every input (checkpoint, training log, metrics
    report) is read and checked first; both files are written beside their targets under temporary names and
    renamed into place last, so a failure leaves the old pair as it was and the weights never meet another
    model's card. `play`: new values of PLAY_FIELDS for the shipped config (e.g. the sampler an evaluation
    chose); the card keeps the trained ones (training.config_play_fields)."""
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
    card = dict(file=out.name, sha256=None, size_mb=None, weights="EMA", config=state["config"],  # sha256, size: below
                training=dict(steps=state["step"], wall_minutes=round(state["elapsed"] / 60, 1),
                              budget_epochs_steps_minutes=state["budget"],
                              hardware=state.get("hardware") or f"(not recorded; exported on) {hardware()}",
                              **losses, **({"config_play_fields": trained} if play else {})),
                **(notes or {}))
    if report is not None:
        card["evaluate"] = report
    return write_pair(weights, {"config": json.dumps(state["config"]), "step": str(state["step"])}, out, card)


def write_pair(weights: dict, metadata: dict, out: Path, card: dict) -> dict:
    """Write the weights to `out` and `card` (with the file's sha256 and size) beside it as .json, both under
    temporary names renamed into place last: a failure leaves the old pair as it was."""
    from safetensors.torch import save_file

    card_path = out.with_suffix(".json")
    tmp, card_tmp = out.with_name(out.name + ".tmp"), card_path.with_name(card_path.name + ".tmp")
    try:
        save_file(weights, tmp, metadata=metadata)
        card.update(sha256=hashlib.sha256(tmp.read_bytes()).hexdigest(), size_mb=round(tmp.stat().st_size / 2**20, 2))
        card_tmp.write_text(json.dumps(card, indent=2) + "\n")
        os.replace(tmp, out)
        os.replace(card_tmp, card_path)
    finally:
        tmp.unlink(missing_ok=True)
        card_tmp.unlink(missing_ok=True)
    return card


# a world report's sampling settings (mariofm.world_eval) and the config fields they are
REPORT_PLAY = {"steps": "sample_steps", "solver": "solver", "guidance": "action_guidance", "shift": "sample_shift",
               "renoise": "sample_renoise", "own_mark": "own_mark"}


def set_play(file: str | Path, play: dict, metrics: str | Path) -> dict:
    """Change play-time fields (PLAY_FIELDS) of an exported model in place, for when an evaluation chose other play
    settings after the run folder is gone. The weights stay bit for bit; the config in the file's metadata and the
    card's config, sha256 and `evaluate` change. `metrics` must be a report measured with the new settings: one
    that does not record a changed field (a world report records steps, solver, guidance, shift, renoise and
    own_mark) or records another value is refused. The card keeps the trained values in
    training.config_play_fields. Both files are renamed into place together, as `export` does."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from mariofm.config import Config

    file, play = Path(file), dict(play)
    card_path = file.with_suffix(".json")
    bad = sorted(set(play) - set(PLAY_FIELDS))
    if bad or not play:
        raise ValueError(f"--set {bad or 'nothing'}: give the play-time fields {PLAY_FIELDS} to change")
    if not file.is_file() or not card_path.is_file():
        raise FileNotFoundError(f"--file {file}: export needs the .safetensors file and its card {card_path.name}")
    with safe_open(file, "pt") as f:
        metadata = f.metadata() or {}
    if "config" not in metadata:
        raise ValueError(f"--file {file}: its metadata holds no config (files from `mariofm export` do)")
    card = json.loads(card_path.read_text())
    old = Config.from_dict(json.loads(metadata["config"])).to_dict()  # a field newer than the file: its default
    cfg = Config.from_dict({**old, **play}).to_dict()  # validated
    report = read_report(metrics)
    recorded = {field for key, field in REPORT_PLAY.items() if key in report}
    if unrecorded := sorted(set(play) - recorded):
        raise ValueError(f"--metrics {metrics} does not record {unrecorded}: it cannot show what the new setting "
                         f"does, so the card would not describe the file (reports record {sorted(REPORT_PLAY)})")
    # a world report from before shift, renoise or own_mark was recorded: the even grid, the ODE, marks 1
    measured = {"shift": 1.0, "renoise": 0.0, "own_mark": 1.0, **report} if "guidance" in report else report
    for key, field in REPORT_PLAY.items():
        if key in measured and measured[key] != cfg[field]:
            raise ValueError(f"--metrics {metrics} was measured with {key}={measured[key]}, the file would play with "
                             f"{field}={cfg[field]}: evaluate with the new settings first")
    training = card.setdefault("training", {})
    training["config_play_fields"] = {**{k: old[k] for k in play}, **training.get("config_play_fields", {})}
    card.update(config=cfg, evaluate=report)
    return write_pair(load_file(file), {**metadata, "config": json.dumps(cfg)}, file, card)


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("export", help="write a run's EMA weights as .safetensors with a model card",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="run folder with checkpoint.pt")
    source.add_argument("--file", help="an exported .safetensors (with its card) whose play-time fields --set "
                        "changes in place; --metrics, measured with the new settings, replaces the card's evaluation")
    # no default: the obvious one, the shipped model, is what plain `generate` uses, and an export that
    # replaced it by surprise would change every later generation. A path typed out is the user's intent, and
    # re-exporting to it (after a new evaluate) is the normal loop, so an existing file there is replaced.
    p.add_argument("--out", help=f"--run: the .safetensors file to write; the card goes beside it (the shipped "
                   f"model: {SHIPPED})")
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

    if args.file:
        if args.out or notes or not args.metrics:
            raise ValueError("--file changes an exported model in place: give --set and --metrics (measured with "
                             "the new settings), no --out or notes")
        card = set_play(args.file, parse_overrides(args.set), args.metrics)
        print(f"changed {', '.join(args.set)} in {args.file} ({card['size_mb']} MB) and its card")
        return 0
    if not args.out:
        raise ValueError("--run needs --out (required): the .safetensors file to write")
    card = export(args.run, args.out, metrics=args.metrics, notes=notes, play=parse_overrides(args.set))
    print(f"wrote {args.out} ({card['size_mb']} MB) and {Path(args.out).with_suffix('.json')}")
    return 0
