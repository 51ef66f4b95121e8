"""Nothing lost, nothing silent (issue 16): every case a hostile but realistic user tries, on real files.

Each test names its case from the issue (#1 ... #13), checks the message the user gets, and checks that the
files on disk are what they were: byte for byte, by hash. Commands run through `mariofm.cli.main`, in this
process, except where two processes are the point (#3).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from mariofm.checkpoint import CHECKPOINT, MODEL, DamagedFileError, load_checkpoint, load_model
from mariofm.cli import main
from mariofm.config import parse_overrides, preset
from mariofm.data import MarioClips
from mariofm.evaluate import evaluate
from mariofm.export import export
from mariofm.generate import generate
from mariofm.recordings import ActionsError, load_actions
from mariofm.runfolder import LOCK, RunFolderError, RunLock
from mariofm.stopping import TrainingDiverged
from mariofm.train import train

ROOT = Path(__file__).resolve().parent.parent


def cli(capsys, *argv) -> tuple[int, str]:
    """Run `python -m mariofm *argv` in this process: (exit code, stderr)."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as err:  # argparse refuses bad arguments with exit code 2
        code = err.code
    return code, capsys.readouterr().err


def snapshot(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `folder` (the frame cache aside)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and ".cache" not in p.parts}


def copy_run(smoke_run: Path, where: Path) -> Path:
    return Path(shutil.copytree(smoke_run, where))


@pytest.fixture
def read_only_folder(tmp_path):
    """A real folder nothing can be written into: mode 0555, or for root (who ignores modes) chattr +i."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    (folder / "keep.txt").write_text("already here\n")
    root = os.geteuid() == 0
    if root and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
        pytest.skip("running as root, and chattr +i is not available to make a read-only folder")
    if not root:
        folder.chmod(0o555)
    try:
        (folder / "probe").touch()
    except OSError:
        pass
    else:
        pytest.skip("could not make a read-only folder here")
    yield folder
    if root:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    folder.chmod(0o755)


# ----------------------------------------------------------------------------------------------- data loss
def test_1_export_reads_every_input_before_writing_and_needs_an_explicit_out(smoke_run, tmp_path, capsys):
    out = tmp_path / "model.safetensors"
    assert cli(capsys, "export", "--run", smoke_run, "--out", out)[0] == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()  # weights and card belong together
    bad_json = tmp_path / "eval.json"
    bad_json.write_text("{not json")
    before = snapshot(tmp_path)
    for metrics, said in ((tmp_path / "missing.json", "no such file"), (bad_json, "is not JSON")):
        code, err = cli(capsys, "export", "--run", smoke_run, "--out", out, "--metrics", metrics)
        assert code == 2 and str(metrics) in err and said in err, err
    assert snapshot(tmp_path) == before  # the earlier pair is untouched, and no temporary file is left
    # no default --out: a plain export used to replace the shipped model, which plain `generate` loads
    code, err = cli(capsys, "export", "--run", smoke_run)
    assert code == 2 and "--out" in err and "required" in err


def test_2_a_new_run_refuses_a_folder_that_holds_a_run(smoke_run, mario_clips, tmp_path, capsys):
    run = copy_run(smoke_run, tmp_path / "run")
    before = snapshot(run)
    code, err = cli(capsys, "train", "--preset", "smoke", "--data", mario_clips, "--out", run, "--steps", 1)
    assert code == 2 and "is not empty" in err and f"--resume {run}" in err and "--overwrite" in err, err
    # a run that would diverge at once is refused the same way, before it writes its config
    code, err = cli(capsys, "train", "--preset", "smoke", "--data", mario_clips, "--out", run, "--steps", 1,
                    "--set", "lr=1e30")
    assert code == 2 and "is not empty" in err
    assert snapshot(run) == before
    # --overwrite removes the earlier run's files, says which, and keeps what a run does not write
    (run / "notes.txt").write_text("mine\n")
    code, err = cli(capsys, "train", "--preset", "smoke", "--data", mario_clips, "--out", run, "--steps", 1,
                    "--overwrite")
    assert code == 0, err
    assert "removing the earlier run's" in err and "checkpoint.pt" in err and "metrics.jsonl" in err
    assert "keeping notes.txt" in err and (run / "notes.txt").read_text() == "mine\n"
    assert load_checkpoint(run / CHECKPOINT)["step"] == 1


def test_3_a_locked_folder_is_refused_naming_the_holder(smoke_run, mario_clips, tmp_path):
    run = copy_run(smoke_run, tmp_path / "run")
    before = snapshot(run)
    with RunLock(run), pytest.raises(RunFolderError, match=rf"in use by another training run \(pid {os.getpid()}"):
        train(None, None, run, resume=True, steps=3, progress=False)
    assert snapshot(run) == before  # (the lock file aside, which the holder keeps and empties on release)
    assert (run / LOCK).read_text() == ""


def test_3_a_lock_left_by_another_host_is_not_taken_over(smoke_run, tmp_path):
    run = copy_run(smoke_run, tmp_path / "run")
    (run / LOCK).write_text(json.dumps(dict(pid=4321, host="another-host", started="today", command="train")))
    with pytest.raises(RunFolderError, match=rf"another host \(pid 4321 on host another-host.*delete {run / LOCK}"):
        train(None, None, run, resume=True, steps=3, progress=False)
    assert load_checkpoint(run / CHECKPOINT)["step"] == 2 and "another-host" in (run / LOCK).read_text()


def test_3_two_processes_one_run_folder(mario_clips, tmp_path):
    run, env = tmp_path / "run", {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-m", "mariofm", "train", "--preset", "smoke", "--data",
                              str(mario_clips), "--out", str(run), "--steps", "400", "--checkpoint-every", "2"],
                             cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not ((run / CHECKPOINT).exists() and (run / LOCK).exists()
                                              and str(first.pid) in (run / LOCK).read_text()):
            time.sleep(0.2)
        assert first.poll() is None, "the first run ended before the test could start the second"
        for second in (["--resume", str(run)], ["--preset", "smoke", "--data", str(mario_clips), "--out",
                                                  str(run), "--steps", "2", "--overwrite"]):
            done = subprocess.run([sys.executable, "-m", "mariofm", "train", *second], cwd=ROOT, env=env,
                                  capture_output=True, text=True, timeout=300)
            assert done.returncode == 2 and f"pid {first.pid}" in done.stderr, done.stderr[-2000:]
            assert "Traceback" not in done.stderr
        assert first.poll() is None  # the first run goes on, its folder intact
        first.send_signal(signal.SIGKILL)  # dies holding the lock: its name stays in the lock file
        first.wait()
        saved = load_checkpoint(run / CHECKPOINT)
        assert saved["budget"][1] == 400 and saved["step"] >= 2
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    done = subprocess.run([sys.executable, "-m", "mariofm", "train", "--resume", str(run), "--stop-at",
                           str(saved["step"] + 1)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"taking over the lock of {run}" in done.stderr and f"pid {first.pid}" in done.stderr
    assert load_checkpoint(run / CHECKPOINT)["step"] == saved["step"] + 1


# ----------------------------------------------------------------------------------------------- silent wrong results
def test_4_resume_trains_on_the_runs_own_data_from_anywhere(smoke_run, mario_clips, tmp_path, capsys,
                                                           monkeypatch):
    run = copy_run(smoke_run, tmp_path / "run")
    assert json.loads((run / "run.json").read_text())["data"] == str(mario_clips.resolve())
    assert load_checkpoint(run / CHECKPOINT)["data"] == str(mario_clips.resolve())
    elsewhere = tmp_path / "elsewhere"  # no data_video/mario here: the old default would find no data
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, err = cli(capsys, "train", "--resume", run, "--steps", 3)
    assert code == 0, err
    assert load_checkpoint(run / CHECKPOINT)["step"] == 3
    # --data on resume replaces the stored folder, and says so
    other = tmp_path / "other_data"
    shutil.copytree(mario_clips, other, ignore=shutil.ignore_patterns(".cache"))
    code, err = cli(capsys, "train", "--resume", run, "--steps", 4, "--data", other)
    assert code == 0 and f"replaces the run's own data folder {mario_clips.resolve()}" in err, err
    assert load_checkpoint(run / CHECKPOINT)["data"] == str(other.resolve())
    # a checkpoint from before the data folder was stored asks for --data
    state = load_checkpoint(run / CHECKPOINT)
    del state["data"]
    torch.save(state, run / CHECKPOINT)
    code, err = cli(capsys, "train", "--resume", run, "--steps", 5)
    assert code == 2 and "does not say which data folder" in err and "--data" in err
    assert load_checkpoint(run / CHECKPOINT)["step"] == 4
    # --out with --resume is an error, never ignored
    before = snapshot(run)
    code, err = cli(capsys, "train", "--resume", run, "--out", tmp_path / "new", "--steps", 5)
    assert code == 2 and "stays in its own folder" in err and not (tmp_path / "new").exists()
    assert snapshot(run) == before


def test_5_divergence_names_the_real_last_checkpoint(mario_clips, tmp_path):
    wild = preset("smoke", lr=1e30, warmup_steps=1, grad_clip=1e30)
    with pytest.raises(TrainingDiverged, match="No checkpoint was written"):
        train(wild, mario_clips, tmp_path / "fresh", steps=50, progress=False)
    assert not (tmp_path / "fresh" / CHECKPOINT).exists()
    run = train(wild, mario_clips, tmp_path / "run", steps=50, stop_at=1, progress=False)
    before = snapshot(run)
    with pytest.raises(TrainingDiverged, match=rf"{CHECKPOINT} at step 1, is untouched"):
        train(None, None, run, resume=True, progress=False)  # default interval 200: the old message said 0
    assert snapshot(run)[CHECKPOINT] == before[CHECKPOINT]


@pytest.mark.parametrize("command", ["generate", "evaluate"])
@pytest.mark.parametrize("steps", ["0", "-1"])
def test_6_zero_sampling_steps_are_refused(smoke_run, tmp_path, capsys, command, steps):
    code, err = cli(capsys, command, "--checkpoint", smoke_run, "--steps", steps, "--out", tmp_path / "x")
    assert code == 2 and "--steps" in err and "must be at least 1" in err and not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match="--steps"):
        (generate(smoke_run, tmp_path / "x", steps=int(steps)) if command == "generate"
         else evaluate(smoke_run, ".", steps=int(steps)))


def test_7_bits_per_dim_reports_the_clips_it_used(smoke_run, mario_clips, capsys):
    code, err = cli(capsys, "evaluate", "--checkpoint", smoke_run, "--data", mario_clips, "--bpd-clips", 50,
                    "--num", 2)
    assert code == 2 and "--bpd-clips 50 is more than --num 2" in err
    # a small data set holds fewer validation windows than asked for: the report gives the number used
    with pytest.warns(UserWarning, match="has only"):
        report = evaluate(smoke_run, mario_clips, num=40, steps=1, solver="euler", bpd_clips=40, bpd_steps=1,
                          progress=False)
    assert report["num"] < 40 and report["bits_per_dim"]["clips"] == report["num"]


def test_8_boolean_and_typed_settings_are_parsed_strictly(capsys):
    assert parse_overrides(["amp=off", "recompute_activations=YES"]) == dict(amp=False, recompute_activations=True)
    for pair, said in (("amp=maybe", "amp is true or false"), ("lr=abc", "lr takes a float"),
                       ("base_ch=8.5", "base_ch takes an int"), ("channel_mults=1,x", "channel_mults takes")):
        with pytest.raises(ValueError, match=said):
            parse_overrides([pair])
    with pytest.raises(ValueError, match="lr=inf must be a finite number"):
        preset("smoke", **parse_overrides(["lr=inf"]))
    code, err = cli(capsys, "train", "--preset", "smoke", "--set", "amp=maybe")
    assert code == 2 and "amp is true or false" in err


def test_9_actions_must_be_one_controller_byte_per_frame(tmp_path):
    good = tmp_path / "good.actions.npy"
    np.save(good, np.array([0, 128, 255], np.int64))
    assert load_actions(good, 3).dtype == np.uint8 and load_actions(good, 3).tolist() == [0, 128, 255]
    np.save(good, np.array([1.0, 2.0]))  # whole numbers stored as floats are fine
    assert load_actions(good).tolist() == [1, 2]
    for array, said in ((np.array([3, 1579, 7]), "1579 at frame 1"), (np.array([2.5, 1.0]), "2.5 at frame 0"),
                        (np.array([-1, 0], np.int16), "-1 at frame 0"),
                        (np.zeros((169, 2), np.uint8), r"shape \(169, 2\).*shape \(169,\)")):
        path = tmp_path / "bad.actions.npy"
        np.save(path, array)
        with pytest.raises(ActionsError, match=rf"{path}.*{said}"):
            load_actions(path, 169 if array.ndim == 2 else None)


def test_9_a_bad_sidecar_never_wraps_into_wrong_actions(mario_clips, tmp_path):
    data = Path(shutil.copytree(mario_clips, tmp_path / "data", ignore=shutil.ignore_patterns(".cache")))
    sidecar = sorted(data.glob("*.actions.npy"))[0]
    frames = len(np.load(sidecar))
    np.save(sidecar, np.full(frames, 1579, np.int64))  # 1579 % 256 == 43: a plain cast gave 43
    cfg = preset("smoke")
    with pytest.warns(UserWarning, match=rf"{sidecar}.*1579"):
        clips = MarioClips.from_config(cfg, data, split="all", progress=False)
    mine = [i for i, (f, _) in enumerate(clips.windows) if clips.files[f].stem == sidecar.name.split(".")[0]]
    assert mine and not clips[mine[0]]["has_actions"] and not (clips[mine[0]]["actions"] == 43).any()
    with pytest.raises(ActionsError, match=str(sidecar)):  # a model that needs actions (the world model)
        MarioClips.from_config(cfg, data, split="all", progress=False, require_actions=True)


# ----------------------------------------------------------------------------------------------- tracebacks
def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes({"truncated": data[:len(data) // 2], "empty": b"", "text": b"hello, I am not weights\n"}[how])


@pytest.mark.parametrize("how, said", [("truncated", "is truncated"), ("empty", "is empty"),
                                       ("text", "not a PyTorch file")])
def test_10_damaged_checkpoints_are_named_everywhere(smoke_run, mario_clips, tmp_path, capsys, how, said):
    run = copy_run(smoke_run, tmp_path / "run")
    shipped = tmp_path / "model.safetensors"
    export(run, shipped)
    for path in (run / CHECKPOINT, run / MODEL, shipped):
        damage(path, how)
    before = snapshot(tmp_path)
    commands = [(run / MODEL, ["generate", "--checkpoint", run / MODEL, "--out", tmp_path / "gen"]),
                (shipped, ["generate", "--checkpoint", shipped, "--out", tmp_path / "gen"]),
                (run / CHECKPOINT, ["evaluate", "--checkpoint", run / CHECKPOINT, "--data", mario_clips]),
                (run / CHECKPOINT, ["export", "--run", run, "--out", tmp_path / "again.safetensors"]),
                (run / CHECKPOINT, ["train", "--resume", run, "--steps", 5])]
    for path, argv in commands:
        code, err = cli(capsys, *argv)
        assert code == 2 and f"{path} is damaged" in err, (argv, err)
        if path.suffix == ".pt":
            assert said in err and "arbitrary code" not in err, err
    shutil.rmtree(tmp_path / "gen", ignore_errors=True)  # generate made its (empty) output folder first
    assert snapshot(tmp_path) == before


def test_10_a_checkpoint_that_carries_code_is_still_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"config": Evil()}, tmp_path / MODEL)
    with pytest.raises(pickle.UnpicklingError, match="arbitrary code"):
        load_model(tmp_path / MODEL)
    assert not marker.exists()
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")  # a readable file of another program
    with pytest.raises(DamagedFileError, match="holds no config"):
        load_model(tmp_path / "foreign.pt")


@pytest.mark.parametrize("content", ["garbage", "object"])
def test_11_a_damaged_actions_file_is_named_and_training_goes_on(mario_clips, tmp_path, content):
    data = Path(shutil.copytree(mario_clips, tmp_path / "data", ignore=shutil.ignore_patterns(".cache")))
    sidecar = sorted(data.glob("*.actions.npy"))[0]
    if content == "garbage":
        sidecar.write_bytes(b"\x93NUMPY garbage that is no array")
    else:
        np.save(sidecar, np.array([{"jump": 1}] * 48, dtype=object), allow_pickle=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = train(preset("smoke"), data, tmp_path / "run", steps=1, progress=False)
    assert any(str(sidecar) in str(w.message) for w in caught), [str(w.message) for w in caught]
    assert load_checkpoint(run / CHECKPOINT)["step"] == 1


@pytest.mark.parametrize("command", ["generate", "evaluate"])
def test_12_an_unwritable_out_is_refused_before_any_work(tmp_path, capsys, read_only_folder, command):
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me\n")
    # the checkpoint does not exist: an error about --out proves the destination is checked first
    missing = tmp_path / "no_such_model.pt"
    for out, said in ((a_file, "is a file") if command == "generate" else (tmp_path, "is a folder"),
                      (read_only_folder / ("x" if command == "generate" else "x.json"), "cannot write there")):
        code, err = cli(capsys, command, "--checkpoint", missing, "--out", out, "--data", tmp_path)[:2] \
            if command == "evaluate" else cli(capsys, command, "--checkpoint", missing, "--out", out)
        assert code == 2 and said in err and "no_such_model" not in err, err
    assert a_file.read_text() == "keep me\n" and sorted(p.name for p in read_only_folder.iterdir()) == ["keep.txt"]


def test_12_train_refuses_an_unwritable_run_folder(mario_clips, tmp_path, capsys, read_only_folder):
    code, err = cli(capsys, "train", "--preset", "smoke", "--data", mario_clips, "--out", read_only_folder / "run")
    assert code == 2 and "cannot write in the run folder" in err
    (tmp_path / "a_file").write_text("keep me\n")
    code, err = cli(capsys, "train", "--preset", "smoke", "--data", mario_clips, "--out", tmp_path / "a_file")
    assert code == 2 and "is a file" in err and (tmp_path / "a_file").read_text() == "keep me\n"


@pytest.mark.parametrize("argv, said", [
    (["train", "--preset", "smoke", "--checkpoint-every", "0"], "--checkpoint-every: 0 must be at least 1"),
    (["train", "--preset", "smoke", "--sample-every", "0"], "--sample-every: 0 must be at least 1"),
    (["train", "--preset", "smoke", "--steps", "0"], "--steps: 0 must be at least 1"),
    (["evaluate", "--num", "0"], "--num: 0 must be at least 1"),
    (["evaluate", "--num", "-1"], "--num: -1 must be at least 1"),
    (["generate", "--num", "0"], "--num: 0 must be at least 1"),
    (["train", "--preset", "smoke", "--set", "lr=abc"], "lr takes a float, e.g. lr=0.0001, not 'abc'"),
])
def test_13_bad_numbers_are_refused_with_the_option_named(capsys, argv, said):
    code, err = cli(capsys, *argv)
    assert code == 2 and said in err and "Traceback" not in err, err


def test_13_intervals_are_checked_by_the_library_too(mario_clips, tmp_path):
    for name in ("checkpoint_every", "sample_every"):
        with pytest.raises(ValueError, match=f"--{name.replace('_', '-')} 0"):
            train(preset("smoke"), mario_clips, tmp_path / "run", steps=1, progress=False, **{name: 0})
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_13_cuda_on_a_machine_without_it(smoke_run, tmp_path, capsys):
    code, err = cli(capsys, "generate", "--checkpoint", smoke_run, "--device", "cuda", "--out", tmp_path / "gen")
    assert code == 2 and "no CUDA GPU" in err and "--device cpu" in err
    code, err = cli(capsys, "generate", "--checkpoint", smoke_run, "--device", "gpu", "--out", tmp_path / "gen")
    assert code == 2 and "is not a device" in err
