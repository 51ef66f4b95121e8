"""`python -m mariofm export`: ship a trained model as a small safetensors file with its model card.

    python -m mariofm export --run runs/ship --out mariofm/checkpoints/mariofm_cpu.safetensors --metrics eval.json

The file holds the EMA weights and, in its metadata, the config: loading it never runs code
(`mariofm.generate.load_model`). The card (`.json` beside it) gathers what a reader needs to trust the numbers:
config, how the data was recorded, how long and on what the model trained, the final losses, and the `evaluate`
metrics with their real-vs-real floors — each with the command that produced it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from mariofm.generate import SHIPPED
from mariofm.train import CHECKPOINT, ema_weights, hardware, load_checkpoint


def final_losses(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train = [r for r in rows if "loss" in r]
    val = [r for r in rows if "val_loss" in r]
    return dict(train_fm_loss=train[-1]["loss"] if train else None,
                train_fm_loss_window_steps=train[-1]["step"] if train else None,
                val_fm_loss=val[-1]["val_loss"] if val else None)


PLAY_FIELDS = ("sample_steps", "solver", "play_noise")  # how the model is used, not how it was trained


def export(run: str | Path, out: str | Path, *, metrics: str | Path | None = None, notes: dict | None = None,
           play: dict | None = None) -> dict:
    """`play`: new values of PLAY_FIELDS for the shipped config (e.g. the sampler an evaluation chose); the card
    keeps the trained ones under training.config_play_fields."""
    from safetensors.torch import save_file

    from mariofm.config import Config

    run, out = Path(run), Path(out)
    state = load_checkpoint(run / CHECKPOINT)
    if bad := sorted(set(play or {}) - set(PLAY_FIELDS)):
        raise ValueError(f"--set {bad}: only the play-time fields {PLAY_FIELDS} may change at export")
    trained = {k: state["config"].get(k) for k in (play or {})}
    state["config"] = Config.from_dict({**state["config"], **(play or {})}).to_dict()  # validated
    weights = {k: v.contiguous() for k, v in ema_weights(state).items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(weights, out, metadata={"config": json.dumps(state["config"]), "step": str(state["step"])})
    card = dict(file=out.name, sha256=hashlib.sha256(out.read_bytes()).hexdigest(),
                size_mb=round(out.stat().st_size / 2**20, 2), weights="EMA", config=state["config"],
                training=dict(steps=state["step"], wall_minutes=round(state["elapsed"] / 60, 1),
                              budget_epochs_steps_minutes=state["budget"],
                              hardware=state.get("hardware") or f"(not recorded; exported on) {hardware()}",
                              **final_losses(run), **({"config_play_fields": trained} if play else {})),
                **(notes or {}))
    if metrics:
        card["evaluate"] = json.loads(Path(metrics).read_text())
    out.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("export", help="write a run's EMA weights as .safetensors with a model card",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run", required=True, help="run folder with checkpoint.pt")
    p.add_argument("--out", default=str(SHIPPED), help="where to write the .safetensors file")
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
