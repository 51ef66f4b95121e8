"""World model speed: generated frames per second of the model alone and of the whole play loop, and where a
frame's time goes.

    python benchmarks/world_speed.py                           # the shipped world model, on the CPU
    python benchmarks/world_speed.py --checkpoint runs/world   # a run folder, .pt or .safetensors
    python benchmarks/world_speed.py --preset world-gpu        # untrained weights of a preset (speed only), e.g.
                                                               # 240x256 on a GPU
    python benchmarks/world_speed.py --quick --data <clips>    # a tiny untrained world-smoke net, few frames
    python benchmarks/world_speed.py --preset world-gpu --device cuda --bf16   # the same frames under bf16 autocast

Every frame starts from real recorded frames (the context of `--clip` of `--data`) and is made as in play
(mariofm.rollout.World.step at batch 1): play_noise on the K context frames, `steps` Euler steps of the net, the
frame rounded to 8 bits, the context shifted. Rows:

    model alone   World.step with the held buttons, for several step counts; the model's own (as played) is marked
    play loop     mariofm.play.Player.tick: World.step + nearest-neighbour upscale + PNG/JPEG encoding, the whole
                  kernel-side work of one frame of notebook 06; `PlayUI tick` adds the widgets' trait updates
                  (label, image, timer interval) through the very callback the browser's timer drives

Times are medians over `--frames` frames after `--warmup` untimed ones; the rows take turns in `--rounds` rounds,
so that a burst of load on a shared machine slows them alike. The breakdown, a row that takes its turns with the
others, splits played frames into the net's forward calls (timed by forward hooks inside World.step), the rest of
World.step (noise draws, the sampler's arithmetic, rounding, shifting the context), upscaling and encoding; and
the torch operators that take the net's time are listed (torch.profiler, self CPU time). Not measured: sending
the image to the browser and painting it. Play runs in fp32; `--bf16` times every row under bf16 autocast instead,
to show what lower precision would buy (a measurement only: neither World nor notebook 06 uses autocast).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
from harness import header, pick_device, sync, table

from mariofm.checkpoint import WORLD_SHIPPED, load_model
from mariofm.config import preset
from mariofm.play import Player, PlayUI, encode, upscale
from mariofm.rollout import World
from mariofm.sample import nfe
from mariofm.unet import VideoUNet, count_parameters
from mariofm.world_data import recording_start

BUTTONS = 0x41  # right + B held throughout: the commonest buttons in the recordings


def interleaved(cases: dict, frames: int, warmup: int, rounds: int, device: torch.device) -> dict[str, float]:
    """Median seconds per call of each case (name -> fn). The cases take turns, `rounds` times frames/rounds calls
    each, so that a burst of load on a shared machine slows them all alike rather than one row."""
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            for _ in range(max(1, frames // rounds)):
                sync(device)
                begin = time.perf_counter()
                fn()
                sync(device)
                times[name].append(time.perf_counter() - begin)
    return {name: statistics.median(t) for name, t in times.items()}


def net_inputs(model: torch.nn.Module, device: torch.device) -> tuple:
    """One batch-1 call's inputs: a noisy frame, t, K context frames and the button bits, as World.step makes."""
    cfg, g = model.cfg, torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 1, cfg.video_height, cfg.video_width, generator=g).to(device)
    context = (torch.rand(1, 3, cfg.context_frames, cfg.video_height, cfg.video_width, generator=g) * 2 - 1).to(device)
    bits = torch.zeros(1, cfg.context_frames + 1, 8, device=device)
    bits[..., [0, 6]] = 1  # right + B
    return x, torch.full((1,), 0.5, device=device), context, bits


class Breakdown:
    """One played frame, part by part, per call: the net's forward calls (timed by hooks inside World.step), the
    rest of World.step, the x4 upscale and the PNG encoding; `parts()` gives their medians in seconds."""

    def __init__(self, model: torch.nn.Module, start: tuple, played: tuple[int, str], device: torch.device):
        self.model, self.device, self.rows = model, device, []
        self.world = World(model, *start, steps=played[0], solver=played[1], seed=0)

    def __call__(self) -> None:
        marks, calls = [], []

        def before(*_) -> None:
            sync(self.device)
            marks.append(time.perf_counter())

        def after(*_) -> None:
            sync(self.device)
            calls.append(time.perf_counter() - marks.pop())

        hooks = [self.model.register_forward_pre_hook(before), self.model.register_forward_hook(after)]
        try:
            t0 = time.perf_counter()
            frame = self.world.step(BUTTONS)
            t1 = time.perf_counter()
        finally:
            for hook in hooks:
                hook.remove()
        big = upscale(frame, 4)
        t2 = time.perf_counter()
        encode(big, "png")
        t3 = time.perf_counter()
        self.rows.append((sum(calls), t1 - t0 - sum(calls), t2 - t1, t3 - t2, len(calls)))

    def parts(self) -> list[tuple[str, float]]:
        net, rest, up, png, n = (statistics.median(column) for column in zip(*self.rows))
        h, w = self.model.cfg.video_height, self.model.cfg.video_width
        return [(f"net forward calls ({n:.0f} per frame)", net),
                ("rest of World.step: noise draws, sampler arithmetic, rounding, context shift", rest),
                ("upscale x4 (nearest)", up), (f"encode PNG (x4: {4 * h}x{4 * w} for {h}x{w} frames)", png)]


def top_ops(model: torch.nn.Module, inputs: tuple, calls: int) -> list[dict]:
    """The operators of `calls` net forwards by self CPU time (torch.profiler), with their share."""
    from torch.profiler import ProfilerActivity, profile

    x, t, context, bits = inputs
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            model(x, t, context=context, actions=bits)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return [dict(op=e.key, ms=e.self_cpu_time_total / 1e3 / calls, share=e.self_cpu_time_total / total)
            for e in events[:8]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--checkpoint", default=None, help=f"world model (default: {WORLD_SHIPPED})")
    parser.add_argument("--preset", default=None, help="instead: untrained weights of this world preset")
    parser.add_argument("--data", default="data_video/mario", help="recordings to take the real start from")
    parser.add_argument("--clip", type=int, default=0, help="which recording (split 'all')")
    parser.add_argument("--frames", type=int, default=60, help="timed frames per row")
    parser.add_argument("--warmup", type=int, default=5, help="untimed frames first")
    parser.add_argument("--rounds", type=int, default=4, help="the rows take turns this many times (load bursts)")
    parser.add_argument("--steps", type=int, nargs="*", default=[1, 2, 4, 8], help="step counts of the model rows")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--quick", action="store_true", help="a tiny untrained world-smoke net, 4 frames per row")
    parser.add_argument("--bf16", action="store_true", help="time every row under bf16 autocast (play runs fp32)")
    args = parser.parse_args()
    if args.quick:
        args.preset, args.frames, args.warmup, args.rounds, args.steps = args.preset or "world-smoke", 4, 1, 2, [1, 2]
    torch.set_num_threads(args.threads)
    dev, load0 = pick_device(args.device), os.getloadavg()
    if args.preset:
        cfg = preset(args.preset)
        if not cfg.context_frames:
            parser.error(f"--preset {args.preset} is not a world preset; use world-smoke, world-cpu or world-gpu")
        torch.manual_seed(cfg.seed)
        model = VideoUNet(cfg).to(dev).eval()
        source = f"untrained {args.preset} weights (speed does not depend on them)"
    else:
        path = args.checkpoint or WORLD_SHIPPED
        model, cfg = load_model(path, device=dev)
        source = str(path)
    context, actions = recording_start(args.data, cfg, args.clip, split="all")
    start = (context, actions[:cfg.context_frames])
    played = (cfg.sample_steps, cfg.solver)

    print("timing ...", file=sys.stderr, flush=True)
    cases, rows = {}, []
    for steps in sorted(set(args.steps) | {cfg.sample_steps}):
        world = World(model, *start, steps=steps, solver=cfg.solver, seed=0)
        mark = " (as played)" if (steps, cfg.solver) == played else ""
        cases[f"model alone{mark}", steps] = lambda world=world: world.step(BUTTONS)
    players = {}
    for fmt, zoom in (("png", 4), ("jpeg", 4), ("png", 1)):
        players[fmt, zoom] = player = Player(model, *start, zoom=zoom, fmt=fmt)
        player.hold("right"), player.hold("b")
        cases[f"play loop: step + x{zoom} + {fmt.upper()}", cfg.sample_steps] = player.tick
    ui = PlayUI(Player(model, *start))
    ui.buttons["right"].value = ui.buttons["b"].value = True

    def ui_tick() -> None:
        ui.play.value += 1

    cases["PlayUI tick (play loop + widget updates)", cfg.sample_steps] = ui_tick
    split = cases["breakdown", 0] = Breakdown(model, start, played, dev)  # a row of its own table, below
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.bf16):
        seconds = interleaved(cases, args.frames, args.warmup, args.rounds, dev)
        ops = top_ops(model, net_inputs(model, dev), max(2, args.frames // 4)) if dev.type == "cpu" else []
    del seconds["breakdown", 0]
    split.rows = split.rows[args.warmup:]
    image_kb = {f"play loop: step + x{z} + {f.upper()}": len(p.render(p.frame)) / 1e3 for (f, z), p in players.items()}
    image_kb["PlayUI tick (play loop + widget updates)"] = len(ui.image.value) / 1e3
    for (what, steps), s in seconds.items():
        rows.append(dict(what=what, steps=f"{cfg.solver} {steps}", nfe=nfe(steps, cfg.solver), ms=1e3 * s, fps=1 / s,
                         kb=image_kb.get(what)))
    loop_png = seconds["play loop: step + x4 + PNG", cfg.sample_steps]

    # one played frame, part by part
    parts = split.parts()
    total = sum(s for _, s in parts)
    parts_rows = [dict(part=p, ms=1e3 * s, share=s / total) for p, s in parts]

    goal = next(r for r in rows if r["what"].endswith("(as played)"))
    note = (f"Model: {source}, {count_parameters(model) / 1e6:.2f}M parameters, {cfg.video_height}x{cfg.video_width}, "
            f"K={cfg.context_frames}, played with {cfg.solver} {cfg.sample_steps} steps, "
            f"{'under bf16 autocast' if args.bf16 else 'fp32'}; start: clip {args.clip} of "
            f"{args.data}; buttons right + B; medians of {args.frames} frames per row after {args.warmup} warm-up, "
            f"the rows taking turns in {args.rounds} rounds")
    print("\n" + header("World model speed: model alone and the play loop", dev, load0, note))
    print(table(rows, [("what", "what", "s"), ("steps", "solver, steps", "s"), ("nfe", "NFE", "d"),
                       ("ms", "ms/frame", ".1f"), ("fps", "frames/s", ".1f"), ("kb", "image kB", ".1f")]))
    print(f"\nModel alone as played: {goal['fps']:.1f} frames/s (goal >= 15 on 2 CPU cores); play loop (x4 PNG): "
          f"{1 / loop_png:.1f} frames/s; the notebook's timer asks for {cfg.fps} frames/s.\n")
    print(table(parts_rows, [("part", "one played frame, part by part", "s"), ("ms", "ms", ".2f"),
                             ("share", "share", ".0%")]))
    if ops:
        print()
        print(table(ops, [("op", "torch operator (net forward)", "s"), ("ms", "ms/call", ".2f"),
                          ("share", "share of self CPU", ".0%")]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
