"""The benchmark scripts keep working: each runs its --quick mode on real recorded clips and prints its table.

These check the scripts, not the speed: --quick numbers mean nothing (smoke-sized nets, a step or two), so the
assertions are about what must hold at any size — every model gets a row, FLOPs and NFE are counted right,
an untrained net scores worse than real footage.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_script(name: str, *args: str) -> str:
    """Run benchmarks/<name> with `args` on one thread; return its stdout (it must exit 0)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, str(BENCHMARKS / name), *args], capture_output=True, text=True,
                         env=env, cwd=BENCHMARKS.parent, timeout=600)
    assert out.returncode == 0, f"{name} {' '.join(args)} failed:\n{out.stderr[-3000:]}"
    return out.stdout


def tables(text: str) -> list[list[dict[str, str]]]:
    """Every markdown table in `text`, as a list of {column title: cell} rows."""
    found, lines = [], text.splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.startswith("|") and lines[i + 1].startswith("|---"):
            titles = [c.strip() for c in line.strip("|").split("|")]
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                rows.append(dict(zip(titles, (c.strip() for c in row.strip("|").split("|")), strict=True)))
            found.append(rows)
    return found


def number(cell: str) -> float:
    return float(cell.replace(",", ""))


def test_peers_gives_every_installed_model_a_row_and_says_why_others_are_missing():
    text = run_script("peers.py", "--quick", "--threads", "1")
    rows = {r["model"]: r for r in tables(text)[0]}
    assert {"mariofm", "mariofm-3d", "mariofm-p1", "seed-design"} <= set(rows)
    for peer in ("diffusers", "lucidrains"):
        assert peer in rows or f"Skipped {peer}:" in text
    ratio = number(rows["mariofm-3d"]["clips/s"]) / number(rows["mariofm"]["clips/s"])
    assert number(rows["mariofm-3d"]["x mariofm clips/s"]) == pytest.approx(ratio, abs=0.02)  # cells are rounded
    assert all(number(r["clips/s"]) > 0 for r in rows.values())
    # counted, not timed: full 3x3x3 convs and unfolded pixels both cost more FLOPs than the preset
    gflop = {name: number(r["GFLOP/step"]) for name, r in rows.items()}
    assert gflop["mariofm"] < gflop["mariofm-3d"] < gflop["seed-design"]
    assert gflop["mariofm"] < gflop["mariofm-p1"] < gflop["seed-design"]


def test_bench_train_step_counts_more_flops_for_full_3d_convs():
    rows = {r["config"]: r for r in tables(run_script("bench_train_step.py", "--only", "smoke", "--threads", "1"))[0]}
    assert set(rows) == {"smoke 2+1d", "smoke 3d"}
    assert number(rows["smoke 3d"]["GFLOP/step"]) > number(rows["smoke 2+1d"]["GFLOP/step"])


def rate_matches(rate: float, amount: float, seconds: float, digits: int, rate_digits: int | None = None) -> bool:
    """rate == amount / seconds, allowing for `seconds` having been rounded to `digits` decimals (and the rate to
    `rate_digits`, when given: 16 frames in 1.725 s print as 9.3 frames/s in 1.73 s)."""
    half, rate_half = 0.5 * 10**-digits, 0 if rate_digits is None else 0.5 * 10**-rate_digits
    return seconds > half and amount / (seconds + half) <= (rate + rate_half) * 1.001 \
        and rate - rate_half <= amount / (seconds - half) * 1.001


def test_gpu_script_runs_its_cpu_check():
    """The columns agree: clips/s = batch / (s/step), generated frames/s = 4 clips x T frames / seconds."""
    train_rows, gen_rows = tables(run_script("gpu.py", "--device", "cpu", "--presets", "smoke", "--quick"))
    assert [r["preset"] for r in train_rows] == ["smoke"]
    row = train_rows[0]
    assert int(row["batch"]) == 2 and number(row["GFLOP/step"]) > 0 and number(row["peak MB"]) > 0
    assert rate_matches(number(row["clips/s"]), 2, number(row["s/step"]), 3)
    assert [r["precision"] for r in gen_rows] == ["fp32", "bf16 autocast"]
    for r in gen_rows:
        assert r["H x W"] == "32x32" and r["frames/clip"] == "4" and r["solver"] == "heun 2 steps (3 NFE)"
        printed = r["generated frames/s"]
        decimals = len(printed.partition(".")[2]) if "." in printed else 0
        assert rate_matches(number(printed), 4 * 4, number(r["seconds"]), 2, decimals), r


def test_time_to_quality_scores_untrained_nets_worse_than_real_footage(mario_clips: Path):
    rows = {r["model"]: r for r in tables(run_script("time_to_quality.py", "--quick", "--threads", "1",
                                                     "--data", str(mario_clips)))[0]}
    floor = number(rows.pop("real clips (floor)")["FD-3D"])
    assert {"mariofm", "mariofm-3d", "mariofm-p1", "seed-design"} <= set(rows)
    for name, row in rows.items():  # seconds of training on a smoke-sized net: still noise
        assert int(row["steps"]) > 0, name
        assert number(row["FD-3D"]) > floor, name


def test_sampler_nfe_counts_function_evaluations(mario_clips: Path):
    sampling, likelihood = tables(run_script("sampler_nfe.py", "--quick", "--threads", "1",
                                             "--data", str(mario_clips)))
    for row in sampling + likelihood:
        steps, nfe = int(row["steps"]), int(row["NFE"])
        if row["solver"] == "euler":
            assert nfe == steps
        elif row in sampling:  # sampling skips the corrector of Heun's last step (mariofm.sample.nfe)
            assert nfe == 2 * steps - 1
        else:  # the likelihood ODE keeps it
            assert nfe == 2 * steps


@pytest.fixture(scope="module")
def pipeline_rows(mario_clips: Path) -> list[dict[str, str]]:
    return tables(run_script("data_pipeline.py", "--quick", "--threads", "1", "--data", str(mario_clips)))[0]


def test_data_pipeline_measures_every_stage(pipeline_rows: list[dict[str, str]]):
    """Every stage has a row, counts the frames it must (3 clips of 48 recorded frames; cpu-preset windows of 8
    frames; whole batches of 4), and its last column is its frames/s over the training step's."""
    def stage(prefix: str) -> dict[str, str]:
        rows = [r for r in pipeline_rows if r["stage"].startswith(prefix)]
        assert len(rows) == 1, f"{prefix}: {pipeline_rows}"
        return rows[0]

    assert len(pipeline_rows) == 5
    assert int(stage("decode 3 videos")["frames"]) == int(stage("open cache")["frames"]) == 3 * 48
    windows = int(stage("load clips")["stage"].split(": ")[1].split()[0])
    assert windows > 0 and int(stage("load clips")["frames"]) == windows * 8
    assert int(stage("DataLoader")["frames"]) == windows // 4 * 4 * 8  # the last partial batch is dropped
    need = number(stage("training step")["frames/s"])
    assert need >= 1 and number(stage("training step")["x training's need"]) == 1.0
    for row in pipeline_rows:  # frames/s and need are printed rounded to whole numbers, the ratio to 0.1
        fps, ratio = number(row["frames/s"]), number(row["x training's need"])
        assert (fps - 0.5) / (need + 0.5) - 0.05 <= ratio <= (fps + 0.5) / (need - 0.5) + 0.05, row


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_world_speed_times_model_and_play_loop_and_splits_a_frame(mario_clips: Path, precision: str):
    flags = ["--bf16"] if precision == "bf16" else []
    text = run_script("world_speed.py", "--quick", "--threads", "1", "--data", str(mario_clips), *flags)
    assert f"steps, {'under bf16 autocast' if flags else 'fp32'}; start" in text  # the header says which it timed
    rows, parts, ops = tables(text)
    kinds = [r["what"] for r in rows]
    assert "model alone (as played)" in kinds and "PlayUI tick (play loop + widget updates)" in kinds
    assert sum(k.startswith("play loop") for k in kinds) == 3
    for row in rows:  # world presets play with Euler: one network call per step
        solver, steps = row["solver, steps"].split()
        assert solver == "euler" and int(row["NFE"]) == int(steps)
        assert number(row["frames/s"]) == pytest.approx(1000 / number(row["ms/frame"]), rel=0.05)
    assert sum(number(p["share"].rstrip("%")) for p in parts) == pytest.approx(100, abs=3)
    assert ops and all(number(o["ms/call"]) >= 0 for o in ops)
