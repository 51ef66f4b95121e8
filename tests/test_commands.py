"""Every subcommand of `python -m mariofm`, through the real command line (mariofm.cli.main), on real recorded
clips: its happy path with small settings, and one bad input that must end with exit code 2 and a message that
says what is wrong. (`record`'s are in test_record.py.) Signals are sent to a real training process."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from safetensors import safe_open

from mariofm.checkpoint import CHECKPOINT, MODEL, load_checkpoint, load_model
from mariofm.cli import main
from mariofm.config import Config
from mariofm.runlog import read_metrics
from mariofm.sample import noise_for, sample_videos
from mariofm.video import write_gif

ROOT = Path(__file__).resolve().parent.parent


def fails_with(argv: list[str], message: str, capsys) -> None:
    """The command exits with code 2 and an error that holds `message` (argparse's own, for a malformed
    argument, or the command's: "error: ..." without a traceback)."""
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse refuses the argument before the command runs
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and "error: " in err and message in err and "Traceback" not in err, err


# --- generate ----------------------------------------------------------------------------------------------------
def test_generate_writes_seeded_videos_of_the_model(smoke_run, tmp_path, capsys):
    argv = ["generate", "--checkpoint", str(smoke_run / MODEL), "--num", "2", "--steps", "2", "--seed", "5"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert "2 videos, heun with 2 steps = 3 NFE" in capsys.readouterr().out
    model, cfg = load_model(smoke_run / MODEL)
    expected = sample_videos(model, noise_for(cfg, 2, 5), 2, "heun")
    for i in range(2):  # the files are the GIFs of the model's samples from noise_for(seed 5)
        write_gif(tmp_path / "expected.gif", expected[i], cfg.fps)
        assert (tmp_path / "a" / f"generated_video_{i}.gif").read_bytes() == (tmp_path / "expected.gif").read_bytes()
    assert main([*argv, "--out", str(tmp_path / "raw"), "--no-ema"]) == 0  # the raw weights: other videos
    raw = iio.imread(tmp_path / "raw" / "generated_video_0.gif", index=None)
    assert not np.array_equal(raw, iio.imread(tmp_path / "a" / "generated_video_0.gif", index=None))


def test_generate_refuses_zero_videos_and_missing_checkpoints(smoke_run, tmp_path, capsys):
    fails_with(["generate", "--checkpoint", str(smoke_run / MODEL), "--out", str(tmp_path), "--num", "0"],
               "argument --num: 0 must be at least 1", capsys)
    fails_with(["generate", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path)],
               f"no checkpoint at {tmp_path / 'none.pt'}", capsys)


# --- evaluate and export -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def evaluated(smoke_run, mario_clips, tmp_path_factory) -> Path:
    """`evaluate` of the 2-step smoke model: its samples are still noise, so every distance must come out far
    above the real-vs-real floor and the palette share far below it — a direction that cannot flip."""
    out = tmp_path_factory.mktemp("eval") / "eval.json"
    assert main(["evaluate", "--checkpoint", str(smoke_run / MODEL), "--data", str(mario_clips), "--num", "6",
                 "--steps", "2", "--bpd-clips", "1", "--bpd-steps", "2", "--out", str(out)]) == 0
    return out


def test_evaluate_reports_metrics_beside_their_real_floor(evaluated):
    report = json.loads(evaluated.read_text())
    assert (report["steps"], report["solver"], report["nfe"]) == (2, "heun", 3) and 2 <= report["num"] <= 6
    m = report["metrics"]
    assert m["n"] == m["n_real"] == report["num"]
    for key in ("video_fd", "frame_fd"):  # measured: 8-11 times the floor
        assert m[key] > 3 * m[f"{key}_floor"] > 0, key
    # palette numbers are shares in [0, 1]; measured: 2% of pixels in the palette against 32% for real clips
    assert m["palette_tv"] > m["palette_tv_floor"] + 0.15 and m["in_palette"] < m["in_palette_floor"] - 0.15
    assert m["in_palette_ratio"] < 0.5
    assert 0.5 < report["val_fm_loss"] < 3  # about E|ε − x0|² for a model that has barely moved from v = 0
    bpd = report["bits_per_dim"]
    assert (bpd["clips"], bpd["steps"], bpd["nfe"], bpd["hutchinson_probes"]) == (1, 2, 4, 1) and bpd["mean"] > 0


def test_evaluate_refuses_a_folder_without_clips(smoke_run, tmp_path, capsys):
    fails_with(["evaluate", "--checkpoint", str(smoke_run / MODEL), "--data", str(tmp_path), "--num", "2"],
               f") in {tmp_path}\nRecord gameplay clips with:\n    python -m mariofm record --out {tmp_path}", capsys)


def test_export_ships_the_ema_weights_with_a_true_card(smoke_run, evaluated, tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    assert main(["export", "--run", str(smoke_run), "--out", str(out), "--metrics", str(evaluated),
                 "--note", "data_command=python -m mariofm record --clips 4", "purpose=a test"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest() and card["file"] == out.name
    run_cfg = load_model(smoke_run / MODEL)[1]
    with safe_open(out, "pt") as f:
        assert json.loads(f.metadata()["config"]) == card["config"] and f.metadata()["step"] == "2"
    assert Config.from_dict(card["config"]) == run_cfg
    assert card["evaluate"] == json.loads(evaluated.read_text())
    assert card["data_command"] == "python -m mariofm record --clips 4" and card["purpose"] == "a test"
    train_rows = [r for r in read_metrics(smoke_run) if "loss" in r]
    assert card["training"]["steps"] == 2 and card["training"]["train_fm_loss"] == train_rows[-1]["loss"]
    assert card["training"]["val_fm_loss"] == [r for r in read_metrics(smoke_run) if "val_loss" in r][-1]["val_loss"]
    # the export generates exactly what the run does
    for name, path in (("run", smoke_run / MODEL), ("export", out)):
        assert main(["generate", "--checkpoint", str(path), "--out", str(tmp_path / name), "--num", "2",
                     "--steps", "2"]) == 0
    for f in ("generated_video_0.gif", "generated_video_1.gif", "generated_videos_grid.gif"):
        assert (tmp_path / "run" / f).read_bytes() == (tmp_path / "export" / f).read_bytes(), f


def test_export_file_changes_play_settings_in_place_with_an_evaluation_measured_with_them(smoke_run, evaluated,
                                                                                         tmp_path, capsys):
    from safetensors.torch import load_file

    out = tmp_path / "m.safetensors"
    assert main(["export", "--run", str(smoke_run), "--out", str(out), "--note", "purpose=a test"]) == 0
    trained, weights = json.loads(out.with_suffix(".json").read_text()), load_file(out)
    steps = trained["config"]["sample_steps"]
    report = {**json.loads(evaluated.read_text()), "steps": steps + 1}  # as if evaluated with one step more
    (tmp_path / "wrong.json").write_text(json.dumps({**report, "steps": steps + 2}))
    (tmp_path / "eval.json").write_text(json.dumps(report))
    before = {p.name: p.read_bytes() for p in tmp_path.glob("m.*")}
    fails_with(["export", "--file", str(out), "--set", f"sample_steps={steps + 1}", "--metrics",
                str(tmp_path / "wrong.json")], f"was measured with steps={steps + 2}, the file would play with "
               f"sample_steps={steps + 1}: evaluate with the new settings first", capsys)
    fails_with(["export", "--file", str(out), "--set", "lr=1", "--metrics", str(tmp_path / "eval.json")],
               "--set ['lr']: give the play-time fields", capsys)
    fails_with(["export", "--file", str(out), "--set", "sample_steps=3"], "give --set and --metrics", capsys)
    fails_with(["export", "--file", str(out), "--metrics", str(tmp_path / "eval.json")], "--set nothing", capsys)
    fails_with(["export", "--file", str(out), "--set", "play_noise=0", "--metrics", str(tmp_path / "eval.json")],
               "does not record ['play_noise']: it cannot show what the new setting does", capsys)
    fails_with(["export", "--file", str(tmp_path / "other.safetensors"), "--set", "sample_steps=3", "--metrics",
                str(tmp_path / "eval.json")], "export needs the .safetensors file and its card other.json", capsys)
    fails_with(["export", "--run", str(smoke_run)], "--run needs --out (required)", capsys)
    assert {p.name: p.read_bytes() for p in tmp_path.glob("m.*")} == before  # nothing changed, nothing left over
    assert main(["export", "--file", str(out), "--set", f"sample_steps={steps + 1}", "--metrics",
                 str(tmp_path / "eval.json")]) == 0
    assert f"changed sample_steps={steps + 1} in {out}" in capsys.readouterr().out
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest() != trained["sha256"]
    assert card["config"] == {**trained["config"], "sample_steps": steps + 1} and card["evaluate"] == report
    assert card["training"]["config_play_fields"] == {"sample_steps": steps} and card["purpose"] == "a test"
    new = load_file(out)
    assert new.keys() == weights.keys() and all(torch.equal(new[k], weights[k]) for k in weights)  # bit for bit
    assert load_model(out)[1].sample_steps == steps + 1
    with safe_open(out, "pt") as f:
        assert json.loads(f.metadata()["config"]) == card["config"] and f.metadata()["step"] == "2"
    # changed again: the card still names the value the run trained with; a comparison is not the evaluation
    (tmp_path / "eval.json").write_text(json.dumps({**report, "steps": steps + 2, "against": {"base": "x.json"}}))
    assert main(["export", "--file", str(out), "--set", f"sample_steps={steps + 2}", "--metrics",
                 str(tmp_path / "eval.json")]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["training"]["config_play_fields"] == {"sample_steps": steps} and "against" not in card["evaluate"]
    assert card["config"]["sample_steps"] == load_model(out)[1].sample_steps == steps + 2
    # a file written before a play field existed: what it played with is that field's default
    from safetensors.torch import save_file

    with safe_open(out, "pt") as f:
        meta = f.metadata()
    older = {k: v for k, v in json.loads(meta["config"]).items() if k != "solver"}
    save_file(load_file(out), out, metadata={**meta, "config": json.dumps(older)})
    other = {"euler": "heun", "heun": "euler"}[Config().solver]
    (tmp_path / "eval.json").write_text(json.dumps({**report, "steps": steps + 2, "solver": other}))
    assert main(["export", "--file", str(out), "--set", f"solver={other}", "--metrics",
                 str(tmp_path / "eval.json")]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["training"]["config_play_fields"] == {"sample_steps": steps, "solver": Config().solver}
    assert card["config"]["solver"] == load_model(out)[1].solver == other


def test_export_refuses_notes_without_a_value(smoke_run, tmp_path, capsys):
    fails_with(["export", "--run", str(smoke_run), "--out", str(tmp_path / "m.safetensors"), "--note", "oops"],
               "--note 'oops': write notes as key=value", capsys)
    assert not (tmp_path / "m.safetensors").exists()


# --- train -------------------------------------------------------------------------------------------------------
def test_train_refuses_an_unknown_setting_and_a_missing_folder(mario_clips, tmp_path, capsys):
    fails_with(["train", "--preset", "smoke", "--data", str(mario_clips), "--out", str(tmp_path / "run"),
                "--steps", "1", "--set", "learning_rate=1"], "bad --set 'learning_rate=1'", capsys)
    fails_with(["train", "--preset", "smoke", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run"),
                "--steps", "1"], f"the data folder {tmp_path / 'nowhere'} does not exist", capsys)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_checkpoints_the_current_step_and_the_run_resumes(signum, mario_clips, tmp_path):
    """A training process told to stop writes a checkpoint of the step it finished (there is no periodic one:
    --checkpoint-every is beyond the budget), exits with 130, and `--resume` continues from that step."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "mariofm", "train", "--preset", "smoke", "--data", str(mario_clips), "--out",
           str(run), "--steps", "1000", "--checkpoint-every", "5000"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not any(
            "loss" in r for r in (read_metrics(run) if (run / "metrics.jsonl").exists() else [])):
        time.sleep(0.2)  # wait for the first training row (step 10): the loop is running
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    step = load_checkpoint(run / CHECKPOINT)["step"]
    assert 10 <= step < 1000 and f"interrupted at step {step}" in err
    assert "stopping after this step" in err
    if signum == signal.SIGTERM:  # resume for two more steps (the first resume of the SIGKILL test: test_train)
        done = subprocess.run([sys.executable, "-m", "mariofm", "train", "--resume", str(run), "--stop-at",
                               str(step + 2)], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert load_checkpoint(run / CHECKPOINT)["step"] == step + 2


# --- demo --------------------------------------------------------------------------------------------------------
def test_demo_without_training_previews_real_clips_and_generates_with_the_shipped_model(mario_clips, tmp_path,
                                                                                        capsys):
    data = tmp_path / "data"
    shutil.copytree(mario_clips, data, ignore=shutil.ignore_patterns(".cache"))
    assert main(["demo", "--no-train", "--data", str(data), "--out", str(tmp_path / "out"), "--num", "2",
                 "--steps", "2"]) == 0
    text = capsys.readouterr().out
    assert f"using the 4 clips already in {data}" in text and "skipping training: using the shipped model" in text
    out = tmp_path / "out"
    for name in ("real_preview.gif", "real_contact_sheet.png", "generated/generated_videos_grid.gif",
                 "generated/generated_videos_grid.mp4"):
        assert (out / name).stat().st_size > 1000, name
        assert str(out / name) in text  # the closing list says where everything is
    _, cfg = load_model()  # the shipped model's 2 clips side by side (with a border) in the grid
    grid = iio.imread(out / "generated" / "generated_videos_grid.gif", index=None)
    assert grid.shape[0] == cfg.sequence_length and grid.shape[2] >= 2 * cfg.video_width
    assert "sampling took" in text and "at 3 NFE" in text and not (out / "run").exists()


def test_a_tiny_demo_records_trains_and_generates_from_its_own_model(tmp_path, capsys):
    data, out = tmp_path / "data", tmp_path / "out"
    assert main(["demo", "--data", str(data), "--out", str(out), "--clips", "3", "--frames", "48",
                 "--minutes", "0.05", "--num", "1", "--steps", "1"]) == 0
    text = capsys.readouterr().out
    assert f"recording 3 clips of 48 frames of real gameplay into {data}" in text
    assert len(list(data.glob("*.avi"))) == 3
    state = load_checkpoint(out / "run" / CHECKPOINT)
    assert state["step"] >= 1 and state["budget"] == [None, None, 0.05]
    assert [r for r in read_metrics(out / "run") if "loss" in r]
    assert (out / "generated" / "generated_videos_grid.mp4").exists() and str(out / "run" / "loss_curve.png") in text
    assert "this demo's model" in text and "shipped model" in text and "real clips (floor)" in text  # the scores


def test_demo_refuses_an_empty_budget(mario_clips, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(mario_clips, data, ignore=shutil.ignore_patterns(".cache"))
    fails_with(["demo", "--data", str(data), "--out", str(tmp_path / "out"), "--minutes", "0"],
               "--minutes=0.0 must be positive", capsys)
