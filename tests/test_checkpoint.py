"""Checkpoints and the run log (mariofm.checkpoint, mariofm.state, mariofm.runlog), in-process and small:
what a run saves is exactly what it resumes from, the files load without unpickling code, and the metrics log
of a resumed run drops the rows written after its checkpoint."""

import json
import os
import pickle
import re
import zipfile

import pytest
import torch
from safetensors.torch import save_file

from mariofm.checkpoint import (
    CHECKPOINT,
    MODEL,
    SHIPPED,
    ConfigMismatchError,
    DamagedFileError,
    check_config,
    ema_weights,
    load_checkpoint,
    load_model,
    save_atomic,
)
from mariofm.config import Config, preset
from mariofm.device import Dist
from mariofm.runlog import MetricsLog, read_metrics
from mariofm.schedule import Budget
from mariofm.state import Run
from mariofm.train import train_step

CPU = torch.device("cpu")


def clips(seed: int) -> dict[str, torch.Tensor]:
    return {"video": torch.rand(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1}


def trained_run(steps: int, **overrides) -> Run:
    run = Run.create(preset("smoke", **overrides), CPU, Budget(steps=10), steps_per_epoch=5)
    for k in range(steps):
        train_step(run.model, run, clips(k), Dist(), CPU)
        run.step += 1
    run.elapsed = 12.5
    return run


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_saved_run_resumes_exactly(tmp_path):
    """Save after 2 steps, load into a fresh Run, take the same third step in both: identical weights, EMA,
    optimizer moments, learning rate and random streams (dropout uses the global RNG, noise its generator)."""
    a = trained_run(2, dropout=0.2, ema_decay=0.5)
    a.hardware = "where it trained"  # the card names the hardware of the first session, not of the last
    a.data = "/data/of/the/run"  # what --resume trains on
    a.save(tmp_path)
    b = Run.create(a.cfg, CPU, Budget(steps=10), steps_per_epoch=5)  # reseeds the global RNG
    saved = load_checkpoint(tmp_path / CHECKPOINT)
    b.load_state_dict(saved)
    assert (b.step, b.elapsed, b.hardware, b.data) == (2, 12.5, "where it trained", "/data/of/the/run")
    assert set(saved) == {"config", "model", "ema", "optimizer", "scheduler", "scaler", "rng", "step", "elapsed",
                          "budget", "hardware", "data"} and saved["budget"] == [None, 10, None]
    assert b.opt.param_groups[0]["lr"] == a.opt.param_groups[0]["lr"]
    rng = torch.get_rng_state()
    assert torch.equal(rng, saved["rng"]["torch"])  # the dropout stream is where the saved run left it
    for run in (a, b):  # both runs live in this one process: give each the global RNG the resumed run has
        torch.set_rng_state(rng)
        train_step(run.model, run, clips(2), Dist(), CPU)
    assert same(a.model.state_dict(), b.model.state_dict()) and same(a.ema.state_dict(), b.ema.state_dict())
    assert same(a.opt.state_dict()["state"][0], b.opt.state_dict()["state"][0])
    assert torch.equal(a.noise_gen.get_state(), b.noise_gen.get_state())
    assert not (tmp_path / (CHECKPOINT + ".tmp")).exists()


def test_the_loss_scaler_and_every_budget_field_resume(tmp_path):
    """An fp16 run's GradScaler (its scale and how many good steps since it last grew) comes back as it was saved,
    and so does each of the three budget fields. A disabled scaler (CPU, bf16) saves nothing, and a run resumed
    with fp16 after it keeps a fresh scaler instead of failing."""
    budget = Budget(epochs=3, steps=10, minutes=2.5)
    a = Run.create(preset("smoke"), CPU, budget, steps_per_epoch=5)
    a.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    for k in range(2):
        train_step(a.model, a, clips(k), Dist(), CPU)
    a.save(tmp_path)
    saved = load_checkpoint(tmp_path / CHECKPOINT)
    assert saved["budget"] == [3, 10, 2.5] and saved["scaler"]["_growth_tracker"] == 2
    b = Run.create(preset("smoke"), CPU, budget, steps_per_epoch=5)
    b.scaler = torch.amp.GradScaler("cpu")
    b.load_state_dict(saved)
    assert b.scaler.state_dict() == a.scaler.state_dict() == {**b.scaler.state_dict(), "scale": 2.0**10}
    cpu_run = trained_run(1)
    cpu_run.save(tmp_path)
    saved = load_checkpoint(tmp_path / CHECKPOINT)
    assert saved["scaler"] == {}
    c = Run.create(preset("smoke"), CPU, Budget(steps=10), steps_per_epoch=5)
    c.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    c.load_state_dict(saved)
    assert c.scaler.get_scale() == 2.0**10 and c.step == 1


def test_the_model_file_holds_config_weights_and_ema(tmp_path):
    run = trained_run(2, ema_decay=0.5)
    run.save(tmp_path)
    state = load_checkpoint(tmp_path / MODEL)
    assert set(state) == {"config", "ema", "model", "step"} and state["step"] == 2
    assert Config.from_dict(state["config"]) == run.cfg
    ema, _ = load_model(tmp_path / MODEL)
    raw, cfg = load_model(tmp_path / MODEL, ema=False)
    assert cfg == run.cfg and not ema.training
    assert same(ema.state_dict(), run.ema.module.state_dict()) and same(raw.state_dict(), run.model.state_dict())
    assert not same(ema.state_dict(), raw.state_dict())
    # checkpoint.pt gives the same EMA weights, without AveragedModel's prefix and counter
    from_checkpoint, _ = load_model(tmp_path / CHECKPOINT)
    assert same(from_checkpoint.state_dict(), ema.state_dict())
    assert same(ema_weights(load_checkpoint(tmp_path)), run.ema.module.state_dict())


def test_a_run_folder_means_its_checkpoint_else_its_model_file(tmp_path):
    run = trained_run(1)
    run.save(tmp_path)
    assert "optimizer" in load_checkpoint(tmp_path)
    (tmp_path / CHECKPOINT).unlink()
    assert "optimizer" not in load_checkpoint(tmp_path) and load_checkpoint(tmp_path)["step"] == 1
    (tmp_path / MODEL).unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(f"no checkpoint at {tmp_path / MODEL}; train one with "
                                                          "`python -m mariofm train`")):
        load_checkpoint(tmp_path)


def test_a_failed_save_leaves_the_old_file_whole(tmp_path):
    path = tmp_path / CHECKPOINT
    save_atomic({"step": 1}, path)
    with pytest.raises(AttributeError):  # a local function cannot be pickled
        save_atomic({"step": 2, "bad": lambda: None}, path)
    assert load_checkpoint(path) == {"step": 1}
    assert (tmp_path / (CHECKPOINT + ".tmp")).exists()  # the half-written file went beside it, under another name


def test_config_mismatch_lists_every_differing_field():
    saved = preset("smoke").to_dict()
    with pytest.raises(ConfigMismatchError, match=re.escape(
            "run/checkpoint.pt was trained with a different config (base_ch: checkpoint 8 vs requested 16, "
            "lr: checkpoint 0.0001 vs requested 0.001). Resume without --preset/--set to use the checkpoint's "
            "config, or start a new run folder.")):
        check_config(saved, preset("smoke", base_ch=16, lr=1e-3), "run/checkpoint.pt")
    check_config(saved, preset("smoke"), "run/checkpoint.pt")  # the same config passes


def test_safetensors_files_load_with_their_config(tmp_path, capsys):
    run = trained_run(1)
    path = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in run.ema.module.state_dict().items()}, path,
              metadata={"config": json.dumps(run.cfg.to_dict())})
    model, cfg = load_model(path, ema=False)
    assert cfg == run.cfg and same(model.state_dict(), run.ema.module.state_dict())
    assert "m.safetensors holds EMA weights only; using them" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="no model at .*missing.safetensors"):
        load_model(tmp_path / "missing.safetensors")
    shipped, shipped_cfg = load_model()  # no path: the shipped model
    card = json.loads(SHIPPED.with_suffix(".json").read_text())
    assert shipped_cfg == Config.from_dict(card["config"]) and not shipped.training


# --- the metrics log -------------------------------------------------------------------------------------------
def log_steps(log: MetricsLog, steps: range, every_eval: int = 4) -> None:
    for step in steps:
        t = torch.tensor([0.05, 0.95]) if step % 2 else torch.tensor([0.15, 0.25])
        log.add(step, 1, 1e-3, t, torch.tensor([float(step), 2.0 * step]), elapsed=step * 0.5, last=step == 10)
        if step % every_eval == 0:
            log.write(dict(step=step, epoch=step // every_eval, val_loss=1.0 / step))


def test_metrics_rows_average_the_steps_since_the_last_row(tmp_path):
    log = MetricsLog(tmp_path / "m.jsonl", every=3)
    log_steps(log, range(1, 11))
    log.close()
    rows = [r for r in read_metrics(tmp_path / "m.jsonl") if "loss" in r]
    assert [r["step"] for r in rows] == [3, 6, 9, 10]  # every 3 steps, and the last
    assert rows[0]["loss"] == pytest.approx((1 + 2 + 3) * 3 / 6) and rows[-1]["loss"] == pytest.approx(15.0)
    assert rows[0]["elapsed_s"] == 1.5 and rows[0]["lr"] == 1e-3 and rows[0]["clips_per_s"] > 0
    # steps 1 and 3: t 0.05, 0.95 with losses (1, 2) and (3, 6); step 2: t 0.15, 0.25 with (2, 4); empty bins: null
    assert rows[0]["loss_by_t"][:3] == pytest.approx([2.0, 2.0, 4.0]) and rows[0]["loss_by_t"][9] == 4.0
    assert rows[0]["loss_by_t"][3:9] == [None] * 6


def test_a_resumed_log_drops_the_rows_after_its_checkpoint(tmp_path):
    """The run stopped at step 10 but its checkpoint holds step 6: rows 7..10 will be redone, so they go,
    and the resumed session's rows follow the kept ones once each."""
    path = tmp_path / "m.jsonl"
    log = MetricsLog(path, every=2)
    log_steps(log, range(1, 11))
    log.close()
    resumed = MetricsLog(path, every=2, resume_step=6)
    assert [r["step"] for r in read_metrics(path)] == [2, 4, 4, 6]  # training rows 2, 4, 6 and val at 4
    log_steps(resumed, range(7, 11))
    resumed.close()
    rows = read_metrics(path)
    assert [r["step"] for r in rows if "loss" in r] == [2, 4, 6, 8, 10]
    assert [r["step"] for r in rows if "val_loss" in r] == [4, 8]
    assert rows[-1]["loss"] == pytest.approx((9 * 3 + 10 * 3) / 4)  # only the resumed steps 9 and 10
    fresh = MetricsLog(path, every=2)  # a fresh run starts the file anew
    fresh.close()
    assert read_metrics(path) == []


def test_clips_per_second_count_the_clips_since_the_last_row(tmp_path, monkeypatch):
    clock = iter([100.0, 103.0, 103.0, 104.0, 104.0])  # the log starts at 100 s; rows at 103 s and 104 s
    monkeypatch.setattr("mariofm.runlog.time.perf_counter", lambda: next(clock))
    log = MetricsLog(tmp_path / "m.jsonl", every=2)
    rows = [log.add(step, 7, 1e-3, torch.tensor([0.5, 0.6]), torch.tensor([1.0, 3.0]), elapsed=step + 0.1234)
            for step in (1, 2, 3, 4)]
    log.close()
    assert rows[0] is None and rows[1]["clips_per_s"] == 4 / 3 and rows[3]["clips_per_s"] == 4 / 1
    assert read_metrics(tmp_path / "m.jsonl") == rows[1::2]  # the rows returned are the rows written
    loss_by_t = [None] * 5 + [1.0, 3.0] + [None] * 3  # t = 0.5 in the bin [0.5, 0.6), t = 0.6 in the next
    assert rows[3] == dict(step=4, epoch=7, loss=2.0, lr=1e-3, clips_per_s=4.0, elapsed_s=4.12, loss_by_t=loss_by_t)


def test_read_metrics_of_a_run_folder_reads_its_metrics_file(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n\n{"step": 2, "val_loss": 0.4}\n')
    assert read_metrics(tmp_path) == read_metrics(tmp_path / "metrics.jsonl") == [
        {"step": 1, "loss": 0.5}, {"step": 2, "val_loss": 0.4}]


def test_a_log_without_a_path_writes_nothing(tmp_path):
    log = MetricsLog(None, every=1)
    row = log.add(1, 1, 1e-3, torch.tensor([0.5]), torch.tensor([2.0]), elapsed=1.0)
    log.write({"step": 1, "val_loss": 1.0})
    log.close()
    assert row["loss"] == 2.0 and list(tmp_path.iterdir()) == []


# --- files that are not what they should be ---------------------------------------------------------------------
def damaged(path, problem: str) -> str:
    return "^" + re.escape(f"{path} is damaged or not a mariofm checkpoint: {problem}. Copy or export it again, "
                           "or point to another file") + "$"


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A real checkpoint.pt and video_model.pt (1 smoke step), to copy and damage."""
    folder = tmp_path_factory.mktemp("saved")
    trained_run(1).save(folder)
    return folder


def test_damaged_checkpoints_say_what_is_wrong(saved_run, tmp_path):
    data = (saved_run / CHECKPOINT).read_bytes()
    cases = {"empty.pt": (b"", "it is empty (0 bytes)"),
             "cut.pt": (data[:1000], "it is truncated (1000 bytes; the end of its zip archive is missing, as after "
                                     "an interrupted write or copy)"),
             "text.pt": (b"hello, I am not weights\n", "it is not a PyTorch file (it begins with b'hello, I')")}
    for name, (content, problem) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DamagedFileError, match=damaged(tmp_path / name, problem)):
            load_checkpoint(tmp_path / name)
    # a (legacy) pickle that is broken: torch's own words, the first line's first 200 characters
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"\x80\x02garbage that is not a pickle")
    with pytest.raises(pickle.UnpicklingError) as raised:
        torch.load(broken, weights_only=True)
    first = str(raised.value).splitlines()[0]
    assert first.startswith("Weights only load failed.") and len(first) > 200
    with pytest.raises(DamagedFileError, match=damaged(broken, f"torch cannot read it (UnpicklingError: "
                                                               f"{first[:200]})")):
        load_checkpoint(broken)
    # a whole zip archive, but not one torch wrote: torch's words, not "not a PyTorch file"
    with zipfile.ZipFile(tmp_path / "other.pt", "w") as archive:
        archive.writestr("hello.txt", "hi")
    with pytest.raises(DamagedFileError, match=re.escape(f"{tmp_path / 'other.pt'} is damaged or not a mariofm "
                                                         "checkpoint: torch cannot read it (RuntimeError: ")):
        load_checkpoint(tmp_path / "other.pt")


def test_a_cut_old_format_checkpoint_is_named_as_damaged(saved_run, tmp_path):
    """torch.save's legacy (pickle) format cut short fails inside torch as EOFError, IndexError (1 byte left) or
    struct.error (18 bytes): each is the same DamagedFileError, naming the file and what to do."""
    path = tmp_path / MODEL
    torch.save(load_checkpoint(saved_run / MODEL), path, _use_new_zipfile_serialization=False)
    full = path.read_bytes()
    assert load_checkpoint(path)["step"] == 1  # the whole file loads
    for size in [*range(1, 80), len(full) // 2, len(full) - 1]:  # its header byte by byte, then the tensors
        path.write_bytes(full[:size])
        with pytest.raises(DamagedFileError, match=damaged(path, f"it ends before the data it announces ({size} "
                                                                 "bytes of an old-format PyTorch file: cut short, "
                                                                 "as after an interrupted write or copy, or "
                                                                 "damaged)")):
            load_checkpoint(path)


def test_a_checkpoint_that_carries_code_is_refused_and_never_run(tmp_path, monkeypatch):
    """Refused even where TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (set to read old files) turns torch.load's default
    to unpickling anything: mariofm asks for weights_only=True itself, which the variable does not override."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"config": Evil()}, tmp_path / MODEL)
    with pytest.raises(pickle.UnpicklingError, match=f"^refusing to load {re.escape(str(tmp_path / MODEL))}: it "
                                                     "holds objects other than tensors and plain data"):
        load_model(tmp_path / MODEL)
    assert not marker.exists()


def test_checkpoints_load_onto_the_requested_device(saved_run):
    state = load_checkpoint(saved_run / CHECKPOINT, map_location="meta")  # meta: a stand-in for a GPU
    assert all(v.device.type == "meta" for v in state["model"].values())
    assert all(v.device.type == "cpu" for v in load_checkpoint(saved_run / CHECKPOINT)["model"].values())
    model, _ = load_model(saved_run / MODEL, device="meta")  # the model is built there too, and its weights fit
    assert {p.device.type for p in model.parameters()} == {"meta"}


def test_files_of_another_program_or_shape_are_named(saved_run, tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(DamagedFileError, match=damaged(tmp_path / "foreign.pt", "it holds no config, ema, so it is "
                                                                               "not a mariofm checkpoint")):
        load_model(tmp_path / "foreign.pt")
    with pytest.raises(DamagedFileError, match="it holds no config, model, so"):
        load_model(tmp_path / "foreign.pt", ema=False)
    state = load_checkpoint(saved_run / MODEL)
    state["config"]["base_ch"] = 16  # weights of base_ch 8 under a config that says 16
    torch.save(state, tmp_path / MODEL)
    with pytest.raises(DamagedFileError, match=damaged(tmp_path / MODEL, "its weights do not fit the model its "
                       "config describes (size mismatch for head.2.weight: copying a param with shape "
                       "torch.Size([3, 8, 1, 1, 1]) from checkpoint, the shape in current model is "
                       "torch.Size([3, 16, 1, 1, 1]).)")):
        load_model(tmp_path / MODEL)


def test_damaged_safetensors_files_say_what_is_wrong(tmp_path):
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(DamagedFileError, match=damaged(tmp_path / "empty.safetensors", "it is empty (0 bytes)")):
        load_model(tmp_path / "empty.safetensors")
    (tmp_path / "text.safetensors").write_bytes(b"hello, I am not weights\n")
    with pytest.raises(DamagedFileError, match="text.safetensors is damaged or not a mariofm checkpoint: "
                                               "safetensors cannot read it"):
        load_model(tmp_path / "text.safetensors")
    save_file({"w": torch.zeros(2)}, tmp_path / "bare.safetensors")
    with pytest.raises(DamagedFileError, match=damaged(tmp_path / "bare.safetensors", "its metadata holds no "
                                                       "config (files from `mariofm export` do)")):
        load_model(tmp_path / "bare.safetensors")
