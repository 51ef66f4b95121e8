"""Two world reports side by side over the same moments (mariofm.world_report.against): the difference of two
speed ratios is the ratio of the per-moment difference, and its interval is paired over the moments."""

import json

import numpy as np
import pytest

from mariofm.world_eval import ratio_interval
from mariofm.world_report import against, palette_against, read_world_report


def report(model: dict, game: dict, seed: int = 1) -> dict:
    buttons = {name: dict(model_scroll=list(model[name]), game_scroll=list(game[name]),
                          speed_ratio=sum(model[name]) / sum(game[name]) if sum(game[name]) else None)
               for name in model}
    return dict(seed=seed, buttons=dict(pairs=len(game["none"]), **buttons))


GAME = {"right+b": [30.0, 4.0, 45.0, 12.0, 0.0, 20.0], "none": [9.0, 0.0, 14.0, 3.0, 1.0, 6.0]}


def test_the_difference_is_the_ratio_of_the_per_moment_change_and_a_shared_noise_cancels():
    rng = np.random.default_rng(0)
    base = {n: rng.uniform(0, 40, 6) for n in GAME}  # the same moments' own noise in both reports ...
    shifted = {n: base[n] + 0.25 * np.array(GAME[n]) for n in GAME}  # ... and 0.25 x the game's scroll more
    compared = against(report(shifted, GAME), report(base, GAME))
    for name in GAME:
        row = compared[name]
        assert row["difference"] == pytest.approx(row["speed_ratio"] - row["base_speed_ratio"])
        assert row["difference"] == pytest.approx(0.25)
        assert row["difference_ci95"] == pytest.approx([0.25, 0.25])  # every draw of moments: the same 0.25
        alone = ratio_interval(shifted[name], np.array(GAME[name]), seed=1)
        assert alone[1] - alone[0] > 0.3  # each ratio alone is far less sure than the paired difference
    same = against(report(base, GAME), report(base, GAME))
    assert same["none"]["difference"] == 0 and same["none"]["difference_ci95"] == [0, 0]


def test_a_game_that_never_scrolls_has_no_difference():
    game = dict(GAME, none=[0.0] * 6)
    compared = against(report({n: np.ones(6) for n in GAME}, game), report({n: np.zeros(6) for n in GAME}, game))
    assert compared["none"]["difference"] is None and compared["none"]["difference_ci95"] is None
    assert compared["right+b"]["difference"] == pytest.approx(6 / sum(GAME["right+b"]))


def test_reports_of_other_moments_or_other_files_are_refused_with_what_to_do(tmp_path):
    model = {n: np.ones(6) for n in GAME}
    other_game = dict(GAME, none=GAME["none"][::-1])
    with pytest.raises(ValueError, match="other moments of the game: evaluate both with the same --seed and --pairs"):
        against(report(model, GAME), report(model, other_game))
    with pytest.raises(ValueError, match="other moments"):
        against(report(model, GAME), report({n: np.ones(5) for n in GAME}, {n: g[:5] for n, g in GAME.items()}))
    path = tmp_path / "base.json"
    path.write_text(json.dumps(report(model, GAME, seed=1)))
    assert read_world_report(path)["seed"] == 1 and read_world_report(path, 1, 6)["buttons"]["pairs"] == 6
    with pytest.raises(ValueError, match="scored with --seed 1 --pairs 6: evaluate with those"):
        read_world_report(path, 0, 6)
    with pytest.raises(ValueError, match="--pairs 6"):
        read_world_report(path, 1, 128)
    with pytest.raises(ValueError, match="cannot read the world report .*missing.json"):
        read_world_report(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read the world report .*bad.json"):
        read_world_report(tmp_path / "bad.json")
    older = report(model, GAME)
    del older["buttons"]["none"]["model_scroll"]  # a report from before the scrolls were kept
    (tmp_path / "older.json").write_text(json.dumps(older))
    with pytest.raises(ValueError, match="has no per-moment scrolls for right\\+b and none: evaluate the base again"):
        read_world_report(tmp_path / "older.json")
    (tmp_path / "video.json").write_text(json.dumps({"metrics": {}}))
    with pytest.raises(ValueError, match="not a world report"):
        read_world_report(tmp_path / "video.json")


def test_the_palette_ratio_is_paired_over_the_same_rollouts_although_its_denominators_differ():
    rng = np.random.default_rng(1)
    first, base_first = rng.uniform(0.6, 0.95, 8), rng.uniform(0.6, 0.95, 8)
    run = dict(in_palette_ratio=0.9, in_palette_by_rollout=dict(first_50=list(first), last_50=list(0.9 * first)))
    base = dict(in_palette_ratio=0.8,
                in_palette_by_rollout=dict(first_50=list(base_first), last_50=list(0.8 * base_first)))
    compared = palette_against(run, base, seed=0)
    assert compared["difference"] == pytest.approx(0.1)
    assert compared["difference_ci95"] == pytest.approx([0.1, 0.1])  # every draw: 0.9 − 0.8
    assert (compared["in_palette_ratio"], compared["base_in_palette_ratio"]) == (0.9, 0.8)
    shorter = dict(base, in_palette_by_rollout={k: v[:4] for k, v in base["in_palette_by_rollout"].items()})
    assert palette_against(run, shorter, seed=0) is None  # other starts: not paired
    assert palette_against(run, {"in_palette_ratio": 0.8}, seed=0) is None  # a report from before the shares


def test_a_paired_interval_equals_the_interval_of_the_per_item_change_when_the_denominator_is_shared():
    rng = np.random.default_rng(2)
    game, a, b = rng.uniform(0, 40, 32), rng.uniform(0, 40, 32), rng.uniform(0, 40, 32)
    assert ratio_interval(a, game, minus=(b, game)) == pytest.approx(ratio_interval(a - b, game))
    low, high = ratio_interval(a, game, minus=(b, rng.uniform(0, 40, 32)))
    assert low < high and ratio_interval(a, game, minus=(b, np.zeros(32))) is None
