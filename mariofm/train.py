"""Train a VideoUNet on recorded gameplay with flow matching.

    python -m mariofm train --preset cpu --data data_video/mario --out runs/cpu --minutes 10
    python -m mariofm train --resume runs/cpu            # continue where it stopped, on the run's own data
    python -m mariofm train --resume runs/cpu --steps 5000  # ... or extend its budget
    python -m mariofm train --init runs/world --set own_frames=2 --out runs/tuned   # a new run from a model's weights

One step (`train_step`): draw noise ε and times t, take the flow-matching loss (mariofm.flow), backward, clip the
gradient, step AdamW and the learning-rate schedule (mariofm.schedule), update the EMA copy (mariofm.state). A world
model with cfg.own_frames first lets its EMA copy make part of the context, as it plays (mariofm.own_frames).
Around it (`train`): mixed precision and several GPUs (mariofm.device), checkpoints every N steps, at the end and
on Ctrl-C/SIGTERM (mariofm.checkpoint; the early stops and their errors: mariofm.stopping), the metrics log and
samples after every epoch (mariofm.runlog):

    config.json  run.json (the data folder)  metrics.jsonl  loss_curve.png  checkpoint.pt (to resume)
    video_model.pt (to generate)  sample_epoch{N}.gif  grid_epoch{N}.gif  .lock (mariofm.runfolder)

A run folder holds one run: a new run refuses a folder that is not empty (unless --overwrite), a second process
cannot train into a folder while one does (the lock), and --resume needs nothing but the folder: the checkpoint
stores the config, the budget and the data folder.

Batches are dicts (mariofm.data.collate): the step takes x0 = batch["video"] and passes the entries the model
names in `model.conditions` (none for VideoUNet) as keyword arguments, so a conditioned model trains unchanged.

Determinism: the batch order of epoch e is a permutation seeded by (seed, e), and noise and t come from one
generator whose state is checkpointed, so on the CPU a run with a step or epoch budget that is stopped and
resumed reaches the same weights as one that never stopped. Under `torchrun` every rank draws the same global
batch and noise and keeps its own slice, so N processes compute what one process computes with the same batch.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import shutil
import sys
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from mariofm.checkpoint import CHECKPOINT, MODEL, check_config, load_checkpoint, load_model, require_keys
from mariofm.cli import positive_int
from mariofm.config import Config, parse_overrides, preset
from mariofm.device import Dist, autocast_dtype, pick_device, setup_distributed
from mariofm.flow import conditioning, fm_loss, sample_t
from mariofm.moving import SPREAD, loss_weight
from mariofm.own_frames import aligned_target, own_context
from mariofm.recordings import NoDataError
from mariofm.runfolder import RUN_INFO, RunLock, check_new_run, remove_run_files, resume_data
from mariofm.runlog import LOSS_CURVE, METRICS, EpochEvaluation, MetricsLog, plot_losses, read_metrics
from mariofm.schedule import Budget, epoch_loader
from mariofm.state import RESUMABLE, Run
from mariofm.stopping import diverged, out_of_memory, stop_requests
from mariofm.world_data import training_data

DEFAULT_DATA = "data_video/mario"


# ----------------------------------------------------------------------------------------------- the step
def train_step(net: torch.nn.Module, run: Run, batch: dict[str, torch.Tensor], dist: Dist,
               dev: torch.device) -> tuple[float, torch.Tensor, torch.Tensor]:
    """One optimiser step on this rank's slice of a global batch. Returns the mean loss over all ranks and this
    rank's per-sample losses and t. When the loss is not finite nothing is updated (the caller stops).

    Every rank draws the whole global batch's noise and t and keeps its own slice. The slice is split into
    cfg.grad_accum micro-batches whose gradients add up to the whole slice's (each loss weighted 1/grad_accum)."""
    cfg, batch = run.cfg, dict(batch)
    x0 = batch.pop("video")
    amp_dtype = autocast_dtype(dev, cfg)
    weight = None
    if cfg.moving_weight and cfg.moving_from == "target":  # the real frame before it: before own_context replaces it
        weight = loss_weight(torch.cat([batch["context"][:, :, -1:], x0], 2), cfg.moving_weight)
    if cfg.own_frames:  # a world model reads its own last R context frames in part of the batch (rollout.py)
        real_last = batch["context"][:, :, -1]  # before own_context replaces it
        own = round(cfg.own_share * len(x0))
        counts = torch.randint(1, cfg.own_frames + 1, (own,), generator=run.noise_gen) if cfg.own_draw else None
        with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            batch["context"], batch["actions"], marks = own_context(run.ema.module, batch["context"],
                                                                  batch["actions"], own, cfg.own_frames,
                                                                  run.noise_gen, counts)
    if cfg.moving_weight and cfg.moving_from == "context":  # the last two frames the model reads
        weight = loss_weight(batch["context"], cfg.moving_weight, spread=SPREAD)
    if cfg.own_align:  # the target seen from the own frames' camera (own_frames.aligned_target)
        x0, align = aligned_target(x0, real_last, batch["context"][:, :, -1])
        weight = align if weight is None else weight * align
    cond = conditioning(run.model, batch)  # e.g. actions, for a model that declares them; {} for VideoUNet
    if cfg.mark_own and cfg.own_frames:  # which context frames it made (without own_frames: all real, the default)
        cond["own"] = marks.to(dev)
    n, m = x0.shape[0], x0.shape[0] // cfg.grad_accum  # clips on this rank, per micro-batch
    mine = slice(dist.rank * n, (dist.rank + 1) * n)
    noise = torch.randn((cfg.batch_size, *x0.shape[1:]), generator=run.noise_gen)[mine].to(dev)
    t = sample_t(cfg.batch_size, cfg.time_sampling, generator=run.noise_gen)[mine].to(dev)
    run.opt.zero_grad(set_to_none=True)
    per_sample = []
    for i in range(cfg.grad_accum):
        part, last = slice(i * m, (i + 1) * m), i == cfg.grad_accum - 1
        # under DDP, all-reduce the gradients once, after the last micro-batch
        sync = contextlib.nullcontext() if last or not hasattr(net, "no_sync") else net.no_sync()
        with sync, torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            velocity = functools.partial(net, **{k: v[part] for k, v in cond.items()})
            loss, ps, _ = fm_loss(velocity, x0[part], t=t[part], noise=noise[part],
                                  weight=None if weight is None else weight[part].to(dev))
            run.scaler.scale(loss / cfg.grad_accum).backward()
        per_sample.append(ps.detach().float())
    per_sample = torch.cat(per_sample)
    mean = dist.mean(per_sample.mean()).item()
    if math.isfinite(mean):
        run.scaler.unscale_(run.opt)  # clip the true gradient, not the fp16-scaled one
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        run.scaler.step(run.opt)
        run.scaler.update()
        run.sched.step()
        run.ema.update_parameters(run.model)
    return mean, per_sample, t


# ----------------------------------------------------------------------------------------------- the loop
def train(cfg: Config | None, data: str | Path | None, out: str | Path, *, epochs: int | None = None,
          steps: int | None = None, minutes: float | None = None, resume: bool = False, overwrite: bool = False,
          device: str | None = None, checkpoint_every: int = 200, sample_every: int = 1, log_every: int = 10,
          workers: int = 0, compile: bool = False, progress: bool = True,
          stop_at: int | None = None, keep_snapshots: bool = False, init: str | Path | None = None) -> Path:
    """Train and return the run folder. The budget is whichever of epochs/steps/minutes ends first
    (cfg.epochs when none is given; a resumed run keeps its own unless given a new one). `stop_at` ends this
    session after that step with a checkpoint, as Ctrl-C does: split a long run over several sessions (Colab)
    and continue with `resume=True`. `keep_snapshots` also keeps each periodic video_model.pt as
    video_model_step{N}.pt, to score one run at several training lengths. `init` starts a new run from the
    (EMA) weights of another model file (fine-tuning); its net must be the one `cfg` builds.

    The folder belongs to one run: a new run refuses a folder that is not empty unless `overwrite` (which
    removes the earlier run's files, saying which), and the run holds the folder's lock while it trains. A
    resumed run trains on the data folder stored with it (`data=None`); a `data` given on resume replaces it."""
    for name, value in (("checkpoint_every", checkpoint_every), ("sample_every", sample_every),
                        ("log_every", log_every)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"--{name.replace('_', '-')} {value}: must be a positive number of "
                             f"{'epochs' if name == 'sample_every' else 'steps'}")
    if workers < 0:
        raise ValueError(f"--workers {workers}: must be 0 (load in this process) or more")
    out, dev, budget = Path(out), pick_device(device), Budget(epochs, steps, minutes)
    if resume and init is not None:
        raise ValueError(f"--init {init} with --resume: a resumed run continues from its own checkpoint")
    if resume and not (out / CHECKPOINT).is_file():
        raise FileNotFoundError(f"nothing to resume: no {CHECKPOINT} in {out}")
    dist = setup_distributed(dev)
    with RunLock(out) if dist.main else contextlib.nullcontext():  # the other ranks write nothing there
        return _train(cfg, data, out, dev, dist, budget, resume=resume, overwrite=overwrite,
                      checkpoint_every=checkpoint_every, sample_every=sample_every, log_every=log_every,
                      workers=workers, compile=compile, progress=progress, stop_at=stop_at,
                      keep_snapshots=keep_snapshots, init=init)


def _train(cfg, data, out, dev, dist, budget, *, resume, overwrite, checkpoint_every, sample_every, log_every,
           workers, compile, progress, stop_at, keep_snapshots=False, init=None) -> Path:
    """`train` once its arguments are checked, its device picked and its folder locked."""
    earlier = check_new_run(out, overwrite) if dist.main and not resume else []
    saved = require_keys(load_checkpoint(out / CHECKPOINT), RESUMABLE, out / CHECKPOINT,
                         "checkpoint to resume (video_model.pt files only generate)") if resume else None
    if saved is not None:
        if cfg is not None:
            check_config(saved["config"], cfg, out / CHECKPOINT)
        cfg = Config.from_dict(saved["config"])
        if budget == Budget():
            budget = Budget(*saved["budget"])
        data = resume_data(saved.get("data"), data, out / CHECKPOINT)
    cfg = cfg or preset("cpu")
    data = Path(data if data is not None else DEFAULT_DATA).resolve()
    if budget == Budget():
        budget = Budget(epochs=cfg.epochs)
    if cfg.batch_size % (dist.world * cfg.grad_accum):
        raise ValueError(f"batch_size={cfg.batch_size} must be divisible by the {dist.world} processes times "
                         f"grad_accum={cfg.grad_accum}")

    train_set = training_data(cfg, data, "train", progress=progress and dist.main)
    try:
        held_out = training_data(cfg, data, "val", progress=False)
    except NoDataError:  # a folder with a single video has no validation file: watch the training clips
        held_out = training_data(cfg, data, "all", progress=False)
    steps_per_epoch = len(train_set) // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train_set)} training clips in {data} is fewer than one batch of "
                         f"{cfg.batch_size}; record more clips or lower --set batch_size=...")
    run = Run.create(cfg, dev, budget, steps_per_epoch, data=str(data))
    if init is not None:
        run.start_from(init)
    if saved is not None:
        run.load_state_dict(saved)
        run.data = str(data)  # the stored folder, or the one that replaced it
        if run.finished():
            raise ValueError(f"the run in {out} already finished at step {run.step}; give a larger --steps, "
                             f"--epochs or --minutes to train it further")
    if stop_at is not None and stop_at <= run.step:
        raise ValueError(f"--stop-at {stop_at} must come after the step the run is at ({run.step})")

    net = run.model  # what the loss calls: the model, or a wrapper that shares its weights
    if dist.world > 1:
        net = DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None)
    if compile:
        net = torch.compile(net)
    if dist.main:
        remove_run_files(out, earlier)  # every input is checked by now: only now does the earlier run go
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        info = dict(data=run.data) | ({"init": str(Path(init).resolve())} if init is not None else {})
        (out / RUN_INFO).write_text(json.dumps(info, indent=2))
    log = MetricsLog(out / METRICS if dist.main else None, log_every, saved and run.step)
    evaluator = EpochEvaluation(cfg, held_out, out, dev, log) if dist.main else None
    bar = tqdm(total=run.max_steps, initial=run.step, disable=not (progress and dist.main), unit="step",
               dynamic_ncols=True)
    start = time.perf_counter() - run.elapsed
    last_saved = run.step if saved is not None else None  # the step checkpoint.pt holds, if any
    try:
        with stop_requests() as asked:
            while not (run.finished() or run.step == stop_at or asked["stop"]):
                epoch = run.step // steps_per_epoch
                for batch in epoch_loader(train_set, cfg, epoch, run.step % steps_per_epoch, dist, workers, dev):
                    lr = run.opt.param_groups[0]["lr"]
                    try:
                        loss, per_sample, t = train_step(net, run, batch, dist, dev)
                    except torch.cuda.OutOfMemoryError:
                        raise out_of_memory(cfg, dist, dev) from None
                    if not math.isfinite(loss):
                        raise diverged(loss, run.step + 1, out, last_saved, checkpoint_every)
                    run.step += 1
                    run.elapsed = time.perf_counter() - start
                    bar.update(1)
                    if row := log.add(run.step, epoch + 1, lr, t, per_sample, run.elapsed, run.finished()):
                        bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{lr:.1e}", clips_s=f"{row['clips_per_s']:.1f}")
                    if run.step % checkpoint_every == 0 and dist.main:
                        run.save(out)
                        last_saved = run.step
                        if keep_snapshots:
                            shutil.copyfile(out / MODEL, out / f"video_model_step{run.step}.pt")
                    if run.finished() or run.step == stop_at or asked["stop"]:
                        break
                epoch_done = run.step % steps_per_epoch == 0
                if evaluator and ((epoch_done and (epoch + 1) % sample_every == 0) or run.finished()):
                    val_loss = evaluator(run.ema.module, run.step, epoch + 1)
                    bar.write(f"epoch {epoch + 1}: validation loss {val_loss:.4f}")
            if dist.main:
                run.save(out)
            if asked["stop"]:
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        bar.write(f"interrupted at step {run.step}; {out / CHECKPOINT} holds the last saved step. Continue with: "
                  f"python -m mariofm train --resume {out}", file=sys.stderr)
        raise
    finally:
        bar.close()
        log.close()
        if dist.main and (out / METRICS).exists():
            plot_losses(read_metrics(out / METRICS), out / LOSS_CURVE)
    return out


# ----------------------------------------------------------------------------------------------- CLI
def add_cli(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a video model on recorded clips",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", default=None, help="smoke | cpu | colab | seed | world-smoke | world-cpu | world-gpu "
                                                  "(default: cpu, or the resumed run's)")
    p.add_argument("--data", default=None,
                   help=f"folder of recorded clips (default: {DEFAULT_DATA}; on --resume, the run's own)")
    p.add_argument("--out", default=None, help="run folder (default runs/<preset>); it must be empty or new")
    p.add_argument("--overwrite", action="store_true", help="start a new run in --out even if it holds one "
                                                            "(deletes that run's checkpoints, metrics and GIFs)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=positive_int)
    budget.add_argument("--steps", type=positive_int)
    budget.add_argument("--minutes", type=float, help="wall-clock budget")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this folder (it stays in that folder)")
    p.add_argument("--init", metavar="MODEL", help="start a new run from this model's weights (a run folder, "
                                                   "video_model.pt or .safetensors) and, without --preset, its "
                                                   "config, --set on top")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config fields")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda if available)")
    p.add_argument("--checkpoint-every", type=positive_int, default=200, help="steps between checkpoints")
    p.add_argument("--sample-every", type=positive_int, default=1, help="epochs between sample GIFs")
    p.add_argument("--workers", type=int, default=0, help="data loading processes (0: in the training process)")
    p.add_argument("--stop-at", type=positive_int, metavar="STEP",
                   help="checkpoint and stop after this step (resume later)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--keep-snapshots", action="store_true",
                   help="keep every periodic checkpoint's weights as video_model_step{N}.pt")
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    if args.resume and args.out:
        raise ValueError(f"--out {args.out} with --resume {args.resume}: a resumed run stays in its own folder. "
                         f"Drop --out, or copy {args.resume} to {args.out} and resume the copy")
    if args.resume and args.overwrite:
        raise ValueError("--overwrite starts a new run and --resume continues one: give one of them")
    cfg = None
    if args.init and not args.preset and not args.resume:  # fine-tuning: the model's own config, --set on top
        cfg = load_model(args.init)[1].replace(**parse_overrides(args.set))
    elif args.preset or args.set or not args.resume:
        cfg = preset(args.preset or "cpu", **parse_overrides(args.set))
    out = args.resume or args.out or f"runs/{args.preset or ('tuned' if args.init else 'cpu')}"
    run = train(cfg, args.data, out, epochs=args.epochs, steps=args.steps, minutes=args.minutes,
                resume=bool(args.resume), overwrite=args.overwrite, device=args.device,
                checkpoint_every=args.checkpoint_every, sample_every=args.sample_every, workers=args.workers,
                compile=args.compile, stop_at=args.stop_at,
                keep_snapshots=args.keep_snapshots, init=args.init)
    print(f"run folder: {run}  (generate with: python -m mariofm generate --checkpoint {run / MODEL})")
    return 0
