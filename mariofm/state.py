"""The state of a training run: everything that changes while it trains, and exactly what its checkpoint holds.

    run = Run.create(cfg, device, Budget(steps=1000), steps_per_epoch=250)   # a fresh model, EMA, AdamW, ...
    run.save(folder)                                                        # checkpoint.pt + video_model.pt
    run.load_state_dict(load_checkpoint(folder / CHECKPOINT))               # ... and back: resuming is this
    run.start_from("runs/world/video_model.pt")         # a new run that begins with another model's weights

The EMA copy averages the weights after every step, θ_EMA ← d·θ_EMA + (1 − d)·θ with d = cfg.ema_decay; it is
what generation uses. The generator `noise_gen` draws every step's noise and t, and its state is saved with the
rest, so a resumed run draws the numbers the uninterrupted run would have drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.optim.lr_scheduler import LambdaLR
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from mariofm.checkpoint import CHECKPOINT, MODEL, load_model, save_atomic
from mariofm.conditioning import widen_context
from mariofm.config import Config
from mariofm.device import autocast_dtype, hardware
from mariofm.schedule import Budget, make_scheduler
from mariofm.unet import VideoUNet, finer_patches

# what a checkpoint must hold to resume from (video_model.pt holds only config, weights and step)
# parts a model may gain when a run starts from it (--init): their output starts at zero, so it computes what it did
ADDED_AT_ZERO = ("world.own_embed.", "space_attn.")
RESUMABLE = ("config", "model", "ema", "optimizer", "scheduler", "scaler", "rng", "step", "elapsed", "budget")


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
    elapsed: float = 0.0  # seconds of training so far, over all sessions
    hardware: str = ""  # where it trained, for the model card
    data: str | None = None  # the data folder it trains on, so that --resume needs only the run folder

    @classmethod
    def create(cls, cfg: Config, dev: torch.device, budget: Budget, steps_per_epoch: int,
               data: str | None = None) -> Run:
        torch.manual_seed(cfg.seed)
        model = VideoUNet(cfg).to(dev)
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
        scaler = torch.amp.GradScaler(dev.type, enabled=autocast_dtype(dev, cfg) == torch.float16)
        max_steps = budget.max_steps(steps_per_epoch)
        warmup = max(1, min(cfg.warmup_steps, max_steps // 2)) if max_steps else cfg.warmup_steps
        run = cls(cfg, model, ema, opt, scaler, torch.Generator().manual_seed(cfg.seed + 1), budget, max_steps,
                  warmup, hardware=hardware(), data=data)
        run.sched = make_scheduler(opt, warmup, run.spent)
        return run

    def spent(self, step: int) -> float:
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
                    step=self.step, elapsed=self.elapsed,
                    budget=[self.budget.epochs, self.budget.steps, self.budget.minutes], hardware=self.hardware,
                    data=self.data)

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        if state["scaler"]:  # a disabled scaler (CPU, bf16) saves nothing: a CPU run may go on with fp16
            self.scaler.load_state_dict(state["scaler"])
        self.noise_gen.set_state(state["rng"]["noise"])
        torch.set_rng_state(state["rng"]["torch"])
        self.step, self.elapsed = state["step"], state["elapsed"]
        self.hardware = state.get("hardware") or self.hardware
        self.data = state.get("data") or self.data

    def start_from(self, path: str | Path) -> None:
        """Take the EMA weights of the model in `path` as this new run's weights and its EMA's (fine-tuning). A world
        model may be given a longer context (`--set context_frames=8`: mariofm.conditioning.widen_context), and any
        model finer patches for larger frames (`--set patch_size=4 ...`: mariofm.unet.finer_patches)."""
        model, cfg = load_model(path)  # on the CPU: load_state_dict copies to the run's device
        weights = model.state_dict()
        if cfg.context_frames and self.cfg.context_frames != cfg.context_frames:
            try:
                weights = widen_context(weights, cfg.context_frames, self.cfg.context_frames, cfg.video_channels,
                                        cfg.patch_size)
            except ValueError as err:
                raise ValueError(f"--init {path}: {err}") from None
        if self.cfg.patch_size != cfg.patch_size:
            try:
                weights = finer_patches(weights, cfg.patch_size, self.cfg.patch_size)
            except ValueError as err:
                raise ValueError(f"--init {path}: {err}") from None
        # a part this config adds whose output starts at zero (mark_own's embedding, spatial_attention's block) may
        # be missing: it starts as built
        added = {k: v for k, v in self.model.state_dict().items() if k.startswith(ADDED_AT_ZERO) and k not in weights}
        try:
            self.model.load_state_dict(weights | added)
        except RuntimeError as err:
            raise ValueError(f"--init {path}: its weights do not fit the net this run's config builds "
                             f"({str(err).splitlines()[-1].strip()}); give the architecture fields it was "
                             f"trained with (--preset/--set)") from None
        self.ema.module.load_state_dict(weights | added)

    def save(self, out: Path) -> None:
        """checkpoint.pt to resume; video_model.pt with just the config and weights, to generate."""
        save_atomic(self.state_dict(), out / CHECKPOINT)
        save_atomic(dict(config=self.cfg.to_dict(), ema=self.ema.module.state_dict(),
                         model=self.model.state_dict(), step=self.step), out / MODEL)


__all__ = ["RESUMABLE", "Run"]
