"""mariofm.demo: the demo ends with its model's scores beside another model's and the real floor."""

from __future__ import annotations

import math

from mariofm.checkpoint import MODEL
from mariofm.config import preset
from mariofm.demo import SCORES, score_table
from mariofm.train import train


def test_score_table_lays_models_beside_the_real_floor(mario_clips, tmp_path):
    run = train(preset("smoke"), mario_clips, tmp_path / "run", steps=2, progress=False, sample_every=100)
    table = score_table({"two steps": run / MODEL, "same again": run / MODEL}, mario_clips, num=3)
    header, *rows = table.splitlines()
    assert header.split() == ["two", "steps", "same", "again", "real", "clips", "(floor)"]
    assert [row[:len(label)] for row, (label, _) in zip(rows, SCORES, strict=True)] == [s for s, _ in SCORES]
    cells = [[float(c) for c in row[len(label):].split()] for row, (label, _) in zip(rows, SCORES)]
    assert all(len(c) == 3 and all(math.isfinite(v) for v in c) for c in cells)
    assert all(c[0] == c[1] for c in cells)  # same model, same clips, same noise: the same scores
    fd_3d, _, palette, _ = cells
    assert fd_3d[0] > fd_3d[2]  # a net trained for two steps is far from real footage
    assert palette[2] == 1.0 and palette[0] < 1.0  # palette fidelity is a ratio to the real floor set's
