"""Train a VideoUNet on recorded gameplay with flow matching — the whole loop in one file.

    python -m mariofm train --preset cpu --data data_video/mario --out runs/cpu --minutes 10
    python -m mariofm train --resume runs/cpu            # continue where it stopped
    python -m mariofm train --resume runs/cpu --steps 5000  # ... or extend its budget

One step: draw a batch of real clips x0, noise ε and times t, take the flow-matching loss (mariofm.flow), step
AdamW, update the EMA copy. Around it: linear warmup then cosine decay of the learning rate, gradient clipping,
mixed precision on CUDA, atomic checkpoints (every N steps, at the end, on Ctrl-C/SIGTERM), samples from the EMA
model with fixed noise after every epoch, and a metrics log. The run folder holds:

    config.json  metrics.jsonl  loss_curve.png  checkpoint.pt (to resume)  video_model.pt (to generate)
    sample_epoch{N}.gif  grid_epoch{N}.gif

Determinism: the batch order of epoch e is a permutation seeded by (seed, e), and noise and t come from one
generator whose state is checkpointed, so on the CPU a run with a step or epoch budget that is stopped and
resumed reaches the same weights as one that never stopped. Under `torchrun` every rank draws the same global
batch and noise and keeps its own slice, so N processes compute what one process computes with the same batch.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import pickle
import platform
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mariofm.config import Config, parse_overrides, preset
from mariofm.flow import fm_loss, loss_by_t, sample_t
from mariofm.unet import VideoUNet

CHECKPOINT = "checkpoint.pt"  # everything needed to resume
MODEL = "video_model.pt"  # config + weights, all that generation needs
NUM_SAMPLES = 4  # clips in grid_epoch{N}.gif


class ConfigMismatchError(ValueError):
    """A checkpoint was made with another config than the one asked for."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


# ----------------------------------------------------------------------------------------------- checkpoints
def save_atomic(obj: dict, path: Path) -> None:
    """Write to a temporary file, then rename: a crash mid-write never leaves a half checkpoint behind."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint as plain tensors and containers; never run code stored in the file."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT if (path / CHECKPOINT).exists() else path / MODEL
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}; train one with `python -m mariofm train`")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise pickle.UnpicklingError(
            f"refusing to load {path}: it holds objects other than tensors and plain data, and loading it "
            f"could run arbitrary code. Only load checkpoints written by mariofm. ({err})") from None


def ema_weights(state: dict) -> dict[str, torch.Tensor]:
    """The EMA model's weights from a checkpoint, without AveragedModel's `module.` prefix and counter."""
    ema = state["ema"]
    return {k.removeprefix("module."): v for k, v in ema.items() if k != "n_averaged"}


def check_config(saved: dict, cfg: Config, where: str | Path) -> None:
    differing = Config.from_dict(saved).diff(cfg)
    if differing:
        lines = ", ".join(f"{k}: checkpoint {a!r} vs requested {b!r}" for k, (a, b) in differing.items())
        raise ConfigMismatchError(f"{where} was trained with a different config ({lines}). Resume without "
                                  f"--preset/--set to use the checkpoint's config, or start a new run folder.")


def hardware() -> str:
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}){gpu}, " \
           f"{torch.get_num_threads()} torch threads; torch {torch.__version__}"


# ----------------------------------------------------------------------------------------------- the pieces
@dataclass
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean over all ranks (the value itself in a single process)."""
        if self.world > 1:
            value = value.clone()
            torch.distributed.all_reduce(value)
            value /= self.world
        return value


def setup_distributed(device: torch.device) -> Dist:
    """Join the process group when started by torchrun (gloo on CPU, nccl on CUDA)."""
    if int(os.environ.get("WORLD_SIZE", 1)) == 1:
        return Dist()
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(torch.distributed.get_rank(), torch.distributed.get_world_size())


def pick_device(name: str | None = None) -> torch.device:
    """`name`, else CUDA if present; under torchrun each rank takes the GPU of its LOCAL_RANK."""
    dev = torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda":
        dev = torch.device("cuda", dev.index if dev.index is not None else int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(dev)
    return dev


def autocast_dtype(device: torch.device, cfg: Config) -> torch.dtype | None:
    """bf16 on GPUs that have it in hardware (Ampere and later), fp16 with a GradScaler on older ones (Colab's
    T4); fp32 on the CPU, where bf16 autocast measured no faster for these convolutions."""
    if device.type != "cuda" or not cfg.amp:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16


@dataclass
class Budget:
    """How long to train: whichever of epochs, steps and minutes runs out first."""
    epochs: int | None = None
    steps: int | None = None
    minutes: float | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "steps", "minutes"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"--{name}={value} must be positive")

    def max_steps(self, steps_per_epoch: int) -> int | None:
        return min((n for n in (self.steps, self.epochs and self.epochs * steps_per_epoch) if n), default=None)


def make_scheduler(opt: torch.optim.Optimizer, warmup: int, progress) -> LambdaLR:
    """Linear warmup to the full learning rate over `warmup` steps, then cosine decay to a tenth of it as the
    rest of the budget is spent. `progress(step)` in [0, 1] says how much of it is spent: a fraction of the steps,
    or of the seconds for a wall-clock budget, whose step count nobody knows in advance. That is why this is
    torch's LambdaLR with the cosine written out, not CosineAnnealingLR, which needs the step count up front."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, progress(step))))
    return LambdaLR(opt, factor)


def epoch_batches(n: int, batch: int, seed: int, epoch: int) -> list[list[int]]:
    """The global batches of one epoch: a permutation seeded by (seed, epoch), the ragged tail dropped."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    return [perm[i:i + batch] for i in range(0, n - batch + 1, batch)]


def stack_videos(items: list[dict]) -> torch.Tensor:
    return torch.stack([item["video"] for item in items])


@torch.no_grad()
def validation_loss(model: torch.nn.Module, clips: torch.Tensor, t_grid: int = 8, seed: int = 0,
                    batch_size: int = 4) -> float:
    """FM loss averaged over a fixed t grid (midpoints of [0, 1]) with fixed noise: comparable across runs."""
    was_training = model.training
    model.eval()
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    for t_value in (torch.arange(t_grid) + 0.5) / t_grid:
        noise = torch.randn(clips.shape, generator=g).to(clips.device)
        for x0, eps in zip(clips.split(batch_size), noise.split(batch_size)):
            t = torch.full((x0.shape[0],), float(t_value), device=clips.device)
            total += fm_loss(model, x0, t=t, noise=eps)[0].item() * x0.shape[0]
    model.train(was_training)
    return total / (t_grid * clips.shape[0])


def plot_losses(log_path: Path, out: Path) -> None:
    # a bare Figure, not pyplot: no global backend switch, so a notebook's own plots keep showing
    from matplotlib.figure import Figure

    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    if train:
        ax.plot(*zip(*train), label="train (running mean)")
    if val:
        ax.plot(*zip(*val), "o-", label="validation (EMA, fixed t grid)")
    ax.set(xlabel="step", ylabel="flow-matching loss", yscale="log", title="mariofm training")
    if train or val:
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)


# ----------------------------------------------------------------------------------------------- run state
@dataclass
class Run:
    """What changes while training — exactly what a checkpoint stores, so resuming is `load_state_dict`."""
    cfg: Config
    model: VideoUNet  # the raw model; `net` in train() may wrap it (DDP, torch.compile)
    ema: AveragedModel
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    noise_gen: torch.Generator  # draws ε and t for every step: the same stream on every rank
    budget: Budget
    max_steps: int | None  # from the epochs or steps budget
    warmup: int
    sched: LambdaLR | None = None
    step: int = 0
    micro_batches: int = 1  # > 1 after a CUDA out-of-memory error
    elapsed: float = 0.0  # seconds of training so far, over all sessions
    hardware: str = ""  # where it trained, for the model card

    @classmethod
    def create(cls, cfg: Config, dev: torch.device, budget: Budget, steps_per_epoch: int) -> Run:
        torch.manual_seed(cfg.seed)
        model = VideoUNet(cfg).to(dev)
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
        scaler = torch.amp.GradScaler(dev.type, enabled=autocast_dtype(dev, cfg) == torch.float16)
        max_steps = budget.max_steps(steps_per_epoch)
        warmup = max(1, min(cfg.warmup_steps, max_steps // 2)) if max_steps else cfg.warmup_steps
        run = cls(cfg, model, ema, opt, scaler, torch.Generator().manual_seed(cfg.seed + 1), budget, max_steps,
                  warmup, hardware=hardware())
        run.sched = make_scheduler(opt, warmup, run.progress)
        return run

    def progress(self, step: int) -> float:
        """The fraction of the budget spent after warmup (of steps or of seconds: the larger, if both are set)."""
        spent = [(step - self.warmup) / max(1, self.max_steps - self.warmup)] if self.max_steps else []
        if self.budget.minutes:
            spent.append(self.elapsed / (self.budget.minutes * 60))
        return max(spent, default=0.0)

    def finished(self) -> bool:
        out_of_steps = self.max_steps is not None and self.step >= self.max_steps
        return out_of_steps or bool(self.budget.minutes and self.elapsed >= self.budget.minutes * 60)

    def state_dict(self) -> dict:
        return dict(config=self.cfg.to_dict(), model=self.model.state_dict(), ema=self.ema.state_dict(),
                    optimizer=self.opt.state_dict(), scheduler=self.sched.state_dict(),
                    scaler=self.scaler.state_dict(), rng=dict(noise=self.noise_gen.get_state(),
                                                              torch=torch.get_rng_state()),
                    step=self.step, micro_batches=self.micro_batches, elapsed=self.elapsed,
                    budget=[self.budget.epochs, self.budget.steps, self.budget.minutes], hardware=self.hardware)

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        if state["scaler"]:  # a disabled scaler (CPU, bf16) saves nothing: a CPU run may go on with fp16
            self.scaler.load_state_dict(state["scaler"])
        self.noise_gen.set_state(state["rng"]["noise"])
        torch.set_rng_state(state["rng"]["torch"])
        self.step, self.micro_batches, self.elapsed = state["step"], state["micro_batches"], state["elapsed"]
        self.hardware = state.get("hardware") or self.hardware

    def save(self, out: Path) -> None:
        """checkpoint.pt to resume; video_model.pt with just the config and weights, to generate."""
        save_atomic(self.state_dict(), out / CHECKPOINT)
        save_atomic(dict(config=self.cfg.to_dict(), ema=self.ema.module.state_dict(),
                         model=self.model.state_dict(), step=self.step), out / MODEL)


class MetricsLog:
    """metrics.jsonl: a row every `every` steps (running loss, lr, clips/s, loss by t) and one per evaluation.
    A fresh run starts a new log; a resumed one drops the rows written after its checkpoint (they are redone)."""

    def __init__(self, path: Path | None, every: int, resume_step: int | None = None):
        self.path, self.every = path, every
        if path and resume_step is not None and path.exists():
            rows = [r for r in path.read_text().splitlines() if r.strip() and json.loads(r)["step"] <= resume_step]
            path.write_text("".join(r + "\n" for r in rows))
        self.file = open(path, "a" if resume_step is not None else "w") if path else None  # noqa: SIM115
        self._reset()

    def _reset(self) -> None:
        self.t, self.losses, self.clips, self.began = [], [], 0, time.perf_counter()

    def add(self, run: Run, epoch: int, lr: float, t: torch.Tensor, per_sample: torch.Tensor) -> dict | None:
        self.t.append(t.cpu())
        self.losses.append(per_sample.cpu())
        self.clips += len(per_sample)
        if run.step % self.every and not run.finished():
            return None
        t, losses = torch.cat(self.t), torch.cat(self.losses)
        row = dict(step=run.step, epoch=epoch, loss=losses.mean().item(), lr=lr,
                   clips_per_s=self.clips / (time.perf_counter() - self.began), elapsed_s=round(run.elapsed, 2),
                   loss_by_t=[None if math.isnan(v) else v for v in loss_by_t(t, losses)[1].tolist()])
        self.write(row)
        self._reset()
        return row

    def write(self, row: dict) -> None:
        if self.file:
            self.file.write(json.dumps(row) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file:
            self.file.close()
            plot_losses(self.path, self.path.with_name("loss_curve.png"))


class EpochEvaluation:
    """After an epoch: samples from the EMA model with fixed noise (comparable across epochs and runs) as
    sample_epoch{N}.gif / grid_epoch{N}.gif, and the validation loss at a fixed t grid with fixed noise."""

    def __init__(self, run: Run, held_out, out: Path, dev: torch.device, log: MetricsLog, clips: int = 16):
        cfg = run.cfg
        shape = (NUM_SAMPLES, cfg.video_channels, cfg.sequence_length, cfg.video_height, cfg.video_width)
        self.noise = torch.randn(shape, generator=torch.Generator().manual_seed(cfg.seed + 2))
        self.val_clips = stack_videos([held_out[i] for i in range(min(len(held_out), clips))]).to(dev)
        self.run, self.out, self.dev, self.log = run, out, dev, log

    def __call__(self, epoch: int) -> float:
        from mariofm.generate import sample_videos
        from mariofm.video import video_grid, write_gif

        cfg, model = self.run.cfg, self.run.ema.module
        videos = sample_videos(model, self.noise, cfg.sample_steps, cfg.solver, device=self.dev)
        write_gif(self.out / f"sample_epoch{epoch}.gif", videos[0], cfg.fps)
        write_gif(self.out / f"grid_epoch{epoch}.gif", video_grid(videos), cfg.fps)
        val_loss = validation_loss(model, self.val_clips, seed=cfg.seed, batch_size=cfg.batch_size)
        self.log.write(dict(step=self.run.step, epoch=epoch, val_loss=val_loss))
        return val_loss


@contextlib.contextmanager
def stop_requests():
    """While training, Ctrl-C and SIGTERM ask the loop to stop after the current step (so a checkpoint never
    holds half a step); a second Ctrl-C stops at once. Yields a dict whose "stop" turns True when asked."""
    asked = {"stop": False}

    def handler(signum, frame):
        if asked["stop"]:
            raise KeyboardInterrupt
        asked["stop"] = True
        tqdm.write("stopping after this step (Ctrl-C again to stop at once)")

    try:
        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread (some notebook runners): leave signals alone
        yield asked
        return
    try:
        yield asked
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


# ----------------------------------------------------------------------------------------------- training
def train(cfg: Config | None, data: str | Path, out: str | Path, *, epochs: int | None = None,
          steps: int | None = None, minutes: float | None = None, resume: bool = False,
          device: str | None = None, checkpoint_every: int = 200, sample_every: int = 1, log_every: int = 10,
          workers: int = 0, compile: bool = False, progress: bool = True,
          stop_at: int | None = None, keep_snapshots: bool = False) -> Path:
    """Train and return the run folder. The budget is whichever of epochs/steps/minutes ends first
    (cfg.epochs when none is given; a resumed run keeps its own unless given a new one). `stop_at` ends this
    session after that step with a checkpoint, as Ctrl-C does: split a long run over several sessions (Colab)
    and continue with `resume=True`. `keep_snapshots` also keeps each periodic video_model.pt as
    video_model_step{N}.pt, to score one run at several training lengths."""
    from mariofm.data import MarioClips, NoDataError

    out, dev = Path(out), pick_device(device)
    dist = setup_distributed(dev)
    saved = load_checkpoint(out / CHECKPOINT) if resume else None
    budget = Budget(epochs, steps, minutes)
    if saved is not None:
        if cfg is not None:
            check_config(saved["config"], cfg, out / CHECKPOINT)
        cfg = Config.from_dict(saved["config"])
        if budget == Budget():
            budget = Budget(*saved["budget"])
    cfg = cfg or preset("cpu")
    if budget == Budget():
        budget = Budget(epochs=cfg.epochs)
    if cfg.batch_size % dist.world:
        raise ValueError(f"batch_size={cfg.batch_size} must be divisible by the {dist.world} processes")

    train_set = MarioClips.from_config(cfg, data, split="train", progress=progress and dist.main)
    try:
        held_out = MarioClips.from_config(cfg, data, split="val", progress=False)
    except NoDataError:  # a folder with a single video has no validation file: watch the training clips
        held_out = train_set
    steps_per_epoch = len(train_set) // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train_set)} training clips in {data} is fewer than one batch of "
                         f"{cfg.batch_size}; record more clips or lower --set batch_size=...")
    run = Run.create(cfg, dev, budget, steps_per_epoch)
    if saved is not None:
        run.load_state_dict(saved)
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
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        if saved is None:  # a fresh run: no samples of an earlier run in the same folder
            for old in [*out.glob("sample_epoch*.gif"), *out.glob("grid_epoch*.gif")]:
                old.unlink()
    log = MetricsLog(out / "metrics.jsonl" if dist.main else None, log_every, saved and run.step)
    evaluator = EpochEvaluation(run, held_out, out, dev, log) if dist.main else None
    bar = tqdm(total=run.max_steps, initial=run.step, disable=not (progress and dist.main), unit="step",
               dynamic_ncols=True)
    start = time.perf_counter() - run.elapsed
    try:
        with stop_requests() as asked:
            while not (run.finished() or run.step == stop_at or asked["stop"]):
                epoch = run.step // steps_per_epoch
                for x0 in epoch_loader(train_set, cfg, epoch, run.step % steps_per_epoch, dist, workers, dev):
                    lr = run.opt.param_groups[0]["lr"]
                    loss, per_sample, t = train_step(net, run, x0, dist, dev)
                    if not math.isfinite(loss):
                        raise TrainingDiverged(
                            f"the loss became {loss} at step {run.step + 1}; stopping. The last good checkpoint "
                            f"({out / CHECKPOINT}, step {run.step - run.step % checkpoint_every}) is untouched. "
                            f"Try a lower --set lr=... or --set grad_clip=...")
                    run.sched.step()
                    run.ema.update_parameters(run.model)
                    run.step += 1
                    run.elapsed = time.perf_counter() - start
                    bar.update(1)
                    if row := log.add(run, epoch + 1, lr, t, per_sample):
                        bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{lr:.1e}", clips_s=f"{row['clips_per_s']:.1f}")
                    if run.step % checkpoint_every == 0 and dist.main:
                        run.save(out)
                        if keep_snapshots:
                            shutil.copyfile(out / MODEL, out / f"video_model_step{run.step}.pt")
                    if run.finished() or run.step == stop_at or asked["stop"]:
                        break
                epoch_done = run.step % steps_per_epoch == 0
                if evaluator and ((epoch_done and (epoch + 1) % sample_every == 0) or run.finished()):
                    bar.write(f"epoch {epoch + 1}: validation loss {evaluator(epoch + 1):.4f}")
            if dist.main:
                run.save(out)
            if asked["stop"]:
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        bar.write(f"interrupted at step {run.step}; {out / CHECKPOINT} holds the last saved step. Continue with: "
                  f"python -m mariofm train --resume {out}")
        raise
    finally:
        bar.close()
        log.close()
    return out


def epoch_loader(train_set, cfg: Config, epoch: int, skip: int, dist: Dist, workers: int, dev: torch.device):
    """This rank's batches of `epoch`, from batch `skip` on (a resumed run skips those it has done)."""
    local = cfg.batch_size // dist.world
    batches = epoch_batches(len(train_set), cfg.batch_size, cfg.seed, epoch)[skip:]
    rank_batches = [b[dist.rank * local:(dist.rank + 1) * local] for b in batches]
    # its own generator: making a DataLoader must not draw from the global RNG (dropout uses it)
    loader = DataLoader(train_set, batch_sampler=rank_batches, num_workers=workers, collate_fn=stack_videos,
                        pin_memory=dev.type == "cuda", generator=torch.Generator())
    return (x0.to(dev, non_blocking=True) for x0 in loader)


def train_step(net: torch.nn.Module, run: Run, x0: torch.Tensor, dist: Dist,
               dev: torch.device) -> tuple[float, torch.Tensor, torch.Tensor]:
    """One optimiser step: draw noise and t, take the loss, backward, clip, step. Returns the mean loss over
    all ranks, this rank's per-sample losses and its t. The update is skipped when the loss is not finite.

    Every rank draws the whole global batch's noise and t and keeps its own slice. The batch is split into
    `run.micro_batches` pieces whose gradients accumulate; on a CUDA out-of-memory error it is split in twice as
    many and tried again, so the effective batch size never changes."""
    cfg = run.cfg
    local = slice(dist.rank * x0.shape[0], (dist.rank + 1) * x0.shape[0])
    shape = (cfg.batch_size, *x0.shape[1:])
    noise = torch.randn(shape, generator=run.noise_gen)[local].to(dev)
    t = sample_t(cfg.batch_size, cfg.time_sampling, generator=run.noise_gen)[local].to(dev)
    amp_dtype = autocast_dtype(dev, cfg)
    while True:
        try:
            run.opt.zero_grad(set_to_none=True)
            per_sample = []
            pieces = list(zip(x0.chunk(run.micro_batches), noise.chunk(run.micro_batches), t.chunk(run.micro_batches)))
            for i, (x, n, tt) in enumerate(pieces):
                # under DDP, all-reduce the gradients once, after the last micro-batch
                last = i == len(pieces) - 1
                sync = contextlib.nullcontext() if last or not hasattr(net, "no_sync") else net.no_sync()
                with sync, torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    loss, ps, _ = fm_loss(net, x, t=tt, noise=n)
                run.scaler.scale(loss * x.shape[0] / x0.shape[0]).backward()
                per_sample.append(ps.detach().float())
            per_sample = torch.cat(per_sample)
            mean = dist.mean(per_sample.mean()).item()
            if math.isfinite(mean):
                run.scaler.unscale_(run.opt)
                torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
                run.scaler.step(run.opt)
                run.scaler.update()
            return mean, per_sample, t
        except torch.cuda.OutOfMemoryError:
            if run.micro_batches >= x0.shape[0]:
                raise
            run.micro_batches *= 2
            run.opt.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            tqdm.write(f"CUDA out of memory: splitting each batch into {run.micro_batches} micro-batches "
                       f"(gradient accumulation keeps the batch size at {x0.shape[0]})")


# ----------------------------------------------------------------------------------------------- CLI
def add_cli(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a video model on recorded clips",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", default=None, help="smoke | cpu | colab | seed (default: cpu, or the resumed run's)")
    p.add_argument("--data", default="data_video/mario", help="folder of recorded clips")
    p.add_argument("--out", default=None, help="run folder (default runs/<preset>)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=int)
    budget.add_argument("--steps", type=int)
    budget.add_argument("--minutes", type=float, help="wall-clock budget")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this folder")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config fields")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda if available)")
    p.add_argument("--checkpoint-every", type=int, default=200, help="steps between checkpoints")
    p.add_argument("--sample-every", type=int, default=1, help="epochs between sample GIFs")
    p.add_argument("--workers", type=int, default=0, help="data loading processes (0: in the training process)")
    p.add_argument("--stop-at", type=int, metavar="STEP", help="checkpoint and stop after this step (resume later)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--keep-snapshots", action="store_true",
                   help="keep every periodic checkpoint's weights as video_model_step{N}.pt")
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    cfg = None
    if args.preset or args.set or not args.resume:
        cfg = preset(args.preset or "cpu", **parse_overrides(args.set))
    out = args.resume or args.out or f"runs/{args.preset or 'cpu'}"
    try:
        run = train(cfg, args.data, out, epochs=args.epochs, steps=args.steps, minutes=args.minutes,
                    resume=bool(args.resume), device=args.device, checkpoint_every=args.checkpoint_every,
                    sample_every=args.sample_every, workers=args.workers, compile=args.compile,
                    stop_at=args.stop_at, keep_snapshots=args.keep_snapshots)
    except TrainingDiverged as err:
        print(f"error: {err}")
        return 3
    print(f"run folder: {run}  (generate with: python -m mariofm generate --checkpoint {run / MODEL})")
    return 0
