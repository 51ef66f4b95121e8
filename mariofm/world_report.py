"""The world model's report: the table `python -m mariofm evaluate --world` prints, and two reports side by side.

Two settings or two models scored over the same moments of the real game (the same --seed and --pairs) face the
same game AND the same noise: a rollout draws its noise from one generator per start, seeded by the moment
(mariofm.rollout), so a moment plays the same whatever is played beside it. Their speed ratios then differ by
what the settings do, not by luck, and the difference is measured moment by moment (`against`):

    ratio_a − ratio_b = Σ model_a / Σ game − Σ model_b / Σ game = Σ (model_a − model_b) / Σ game,

a speed ratio of the per-moment difference, whose 95% interval is world_eval.ratio_interval's bootstrap over the
moments. Measured on the shipped model, tuning seed 1, 128 moments: guidance 1.5 against 1 with right + B held
differs by +0.01 with a paired interval of −0.04 to +0.05, while each ratio alone has an interval 0.43 wide
(docs/benchmarks.md section 6).

    python -m mariofm evaluate --world --seed 1 --pairs 128 --guidance 1.5 --against w1.json

The 300-frame palette ratio (Σ last-50 share / Σ first-50 share over the rollouts) is set beside the base's the
same way when both played the same starts (`palette_against`). Both differences are one computation
(`paired_difference`): the bootstrap draws the same moments or rollouts for both ratios and keeps their difference
(world_eval.ratio_interval's `minus`), whether the two denominators are shared (the game's scroll) or not.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mariofm.world_eval import CAUSES, EARLY, SETS, ratio_interval


def print_world_table(report: dict) -> None:
    h, b, s = report["horizons"], report["buttons"], report["stability"]
    mark = report.get("own_mark", 1.0)  # 1: as trained (and what a model without marks reads)
    renoise = report.get("renoise", 0.0)  # 0: the ODE (reports before the field)
    print(f"world model {report['checkpoint']}: {report['solver']} {report['steps']} steps per frame (grid shift "
          f"{report.get('shift', 1.0):g}), button guidance {report.get('guidance', 1.0):g}"
          + (f", its own frames marked {mark:g}" if mark != 1 else "")
          + (f", {renoise:g} of the noise drawn afresh each step" if renoise else ""))
    print(f"horizons ({h['starts']} held-out starts, real buttons)   PSNR median/mean   baseline      "
          "in-palette (baseline)")
    for key in (k for k in h if k.startswith("h") and k[1:].isdigit()):
        r = h[key]
        print(f"  {key[1:]:>3} frames ahead   {r['psnr_median']:5.1f} / {r['psnr_mean']:5.1f} dB   "
              f"{r['baseline_psnr_median']:5.1f} / {r['baseline_psnr_mean']:5.1f} dB   "
              f"{r['in_palette']:.3f} ({r['baseline_in_palette']:.3f})")
    print(f"buttons ({b['pairs']} moments of real play, {b['horizon_frames']} frames held)")
    for name in SETS:
        r = b[name]
        print(f"  {name:8s} scroll px/frame: model {r['model_px_per_frame']:.2f}, game {r['game_px_per_frame']:.2f}"
              f" (ratio {_number(r['speed_ratio'])}, 95% interval over the moments {_interval(r)})")
        model_px, game_px = r["model_px_by_frame"], r["game_px_by_frame"]
        if len(model_px) > EARLY:  # a short horizon has no later frames to set beside the first
            print(f"  {'':8s} frames 1-{EARLY}: model {np.mean(model_px[:EARLY]):.2f}, game "
                  f"{np.mean(game_px[:EARLY]):.2f}; frames {EARLY + 1}-{b['horizon_frames']}: model "
                  f"{np.mean(model_px[EARLY:]):.2f}, game {np.mean(game_px[EARLY:]):.2f}")
        print(f"  {'':8s} where the game runs ({r['game_runs']} of {b['pairs']}): {_pair(r, 'runs')}; where it stops: "
              f"{_pair(r, 'stops')}; moment by moment r = {_number(r['scroll_correlation'])}")
        causes = r["where_game_stops_by_cause"]
        print(f"  {'':8s} where it stops, by why: " + "; ".join(
            f"{CAUSES[c]} ({v['moments']}): model {_number(v['model_px'])}, game {_number(v['game_px'])}"
            for c, v in causes.items()))
    print(f"  right+b scrolls further than none: model {b['model_right_b_scrolls_more']:.0%}, game "
          f"{b['game_right_b_scrolls_more']:.0%}")
    print(f"stability ({s['rollouts']} rollouts x {s['frames']} frames, random buttons)")
    for key in ("first_50", "last_50", "real_50"):
        r = s[key]
        print(f"  {key:8s} in-palette {r['in_palette']:.3f}  brightness {r['brightness']:.1f}  contrast "
              f"{r['contrast']:.1f}  motion {r['motion']:.2f}  colours {r['colours_per_frame']:.0f}  grid grain "
              f"{r['grid_grain']:.1f}")
    ci = s.get("in_palette_ratio_ci95")  # reports written before it have none
    print(f"  in-palette ratio, frames 250-300 over 1-50: {s['in_palette_ratio']:.3f} (95% interval over the "
          f"rollouts {'n/a' if ci is None else f'{ci[0]:.3f}-{ci[1]:.3f}'})")


def _number(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _interval(row: dict) -> str:
    ci = row.get("speed_ratio_ci95")  # reports written before it have none
    return "n/a" if ci is None else f"{ci[0]:.2f}-{ci[1]:.2f}"


def _pair(row: dict, where: str) -> str:
    return f"model {_number(row[f'model_px_where_game_{where}'])}, game {_number(row[f'game_px_where_game_{where}'])}"


def write_report(report: dict, out: str | Path) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2))


def read_world_report(path: str | Path, seed: int | None = None, pairs: int | None = None) -> dict:
    """A report `evaluate --world --out` wrote; a clear error for a missing file, another kind of JSON, or (when
    `seed` and `pairs` are given) a report of other moments, which `against` cannot pair."""
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read the world report {path}: {err}; give a file `evaluate --world --out` wrote"
                         ) from err
    if not isinstance(report, dict) or not isinstance(report.get("buttons"), dict):
        raise ValueError(f"{path} is not a world report (it has no 'buttons'): give a file `evaluate --world --out` "
                         "wrote")
    rows = [report["buttons"].get(name) for name in SETS]
    if not all(isinstance(r, dict) and {"model_scroll", "game_scroll", "speed_ratio"} <= r.keys() for r in rows):
        raise ValueError(f"{path} has no per-moment scrolls for {' and '.join(SETS)}: evaluate the base again with "
                         "this version of `evaluate --world --out`")
    if seed is not None and (report.get("seed"), report["buttons"].get("pairs")) != (seed, pairs):
        raise ValueError(f"{path} was scored with --seed {report.get('seed')} --pairs "
                         f"{report['buttons'].get('pairs')}: evaluate with those to set the two side by side")
    return report


def against(report: dict, base: dict) -> dict:
    """Each button set's speed ratio in `report` beside `base`'s, scored over the same moments: both ratios, their
    difference and its paired 95% interval over the moments (module docstring); the same for the 300-frame palette
    ratio ("stability", `palette_against`). A clear error if the moments differ."""
    out = {}
    for name in SETS:
        row, other = report["buttons"][name], base["buttons"][name]
        game = np.asarray(row["game_scroll"], dtype=float)
        if "model_scroll" not in other or not np.array_equal(game, other["game_scroll"]):
            raise ValueError("the base report was scored on other moments of the game: evaluate both with the same "
                             f"--seed and --pairs (this one: seed {report['seed']}, {len(game)} moments; the base: "
                             f"seed {base.get('seed')}, {len(other.get('game_scroll', []))} moments)")
        out[name] = dict(speed_ratio=row["speed_ratio"], base_speed_ratio=other["speed_ratio"],
                         **paired_difference((row["model_scroll"], game), (other["model_scroll"], game),
                                             report["seed"]))
    out["stability"] = palette_against(report.get("stability", {}), base.get("stability", {}), report["seed"])
    return out


def palette_against(run: dict, base: dict, seed: int) -> dict | None:
    """The 300-frame in-palette ratio beside the base's, over the same starts (the same seed and --long): the
    difference of Σ last / Σ first between the two, paired over the rollouts. None when either report has no
    per-rollout shares (written before they were kept) or they played other numbers of rollouts."""
    a, b = run.get("in_palette_by_rollout"), base.get("in_palette_by_rollout")
    if a is None or b is None or len(a["first_50"]) != len(b["first_50"]):
        return None
    return dict(in_palette_ratio=run["in_palette_ratio"], base_in_palette_ratio=base["in_palette_ratio"],
                **paired_difference((a["last_50"], a["first_50"]), (b["last_50"], b["first_50"]), seed))


def paired_difference(ratio: tuple, base: tuple, seed: int) -> dict:
    """Σ num / Σ den of `ratio` minus the same of `base`, both (numerators, denominators) over the same N items, and
    the 95% interval of that difference drawing the same items for both (world_eval.ratio_interval's `minus`).
    With a shared denominator (a speed ratio's game scroll) it is the ratio of the per-item change (module
    docstring). difference None when either denominator sums to 0."""
    (num, den), (base_num, base_den) = ([np.asarray(v, dtype=float) for v in pair] for pair in (ratio, base))
    has_ratios = den.sum() > 0 and base_den.sum() > 0
    difference = float(num.sum() / den.sum() - base_num.sum() / base_den.sum()) if has_ratios else None
    return dict(difference=difference,
                difference_ci95=ratio_interval(num, den, seed=seed, minus=(base_num, base_den)))


def print_against(compared: dict, name: str) -> None:
    print(f"against {name} (the same moments, starts and noise): this, base, difference (95% paired interval)")
    rows = [(f"{key} speed ratio", compared[key], "speed_ratio") for key in SETS]
    rows.append(("300-frame palette ratio", compared.get("stability"), "in_palette_ratio"))
    for label, r, key in rows:
        if r is None:
            print(f"  {label:25s} n/a (the reports played other numbers of rollouts, or one is older)")
            continue
        ci, digits = r["difference_ci95"], 3 if key == "in_palette_ratio" else 2
        spread = "n/a" if ci is None else f"{ci[0]:+.{digits}f} to {ci[1]:+.{digits}f}"
        difference = "n/a" if r["difference"] is None else f"{r['difference']:+.{digits}f}"
        print(f"  {label:25s} {_number(r[key], digits)} vs {_number(r[f'base_{key}'], digits)}: {difference} "
              f"({spread})")


__all__ = ["print_world_table", "write_report", "read_world_report", "against", "palette_against", "paired_difference",
           "print_against"]
