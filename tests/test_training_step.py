"""The training step and its schedule, checked by value (mariofm.train.train_step, mariofm.state, mariofm.schedule).

Small and in-process, so `make mutation` can run them for every mutant: the EMA is the recursive average of the
weights after each step, the learning rate follows warmup + cosine at given steps, a step with a non-finite loss
changes nothing, clipping bounds the update, and Ctrl-C/SIGTERM only ask the loop to stop. The clips are seeded
random tensors: what is checked is the arithmetic of the step, not what it learns (test_train.py does that on
real footage).
"""

import copy
import functools
import math
import os
import signal
import threading
import warnings

import pytest
import torch
from torch.nn.parallel import DistributedDataParallel

from mariofm.config import preset
from mariofm.device import Dist
from mariofm.flow import fm_loss, sample_t
from mariofm.schedule import Budget, epoch_batches, epoch_loader, make_scheduler
from mariofm.state import Run
from mariofm.stopping import OutOfMemory, out_of_memory, stop_requests
from mariofm.train import train_step

CPU = torch.device("cpu")


def make_run(budget: Budget | None = None, steps_per_epoch: int = 10, **overrides) -> Run:
    return Run.create(preset("smoke", **overrides), CPU, budget or Budget(steps=10), steps_per_epoch)


def clips(n: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    return {"video": torch.rand(n, 3, 4, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1}


def params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def max_diff(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


# --- EMA ------------------------------------------------------------------------------------------------------
def test_ema_is_the_recursive_average_of_the_weights_after_each_step():
    """θ_EMA = θ_1 after the first step (torch's AveragedModel copies the first weights it sees), then
    θ_EMA ← d·θ_EMA + (1 − d)·θ_k. At d = 0.5 it clearly lags the raw weights, so an EMA that is never updated
    (still the initial weights) or that tracks the raw weights fails."""
    run = make_run(ema_decay=0.5, lr=1e-2, warmup_steps=1)
    initial, after = params(run.model), []
    for k in range(4):
        train_step(run.model, run, clips(seed=k), Dist(), CPU)
        after.append(params(run.model))
    expected = after[0]
    for weights in after[1:]:
        expected = {k: 0.5 * expected[k] + 0.5 * weights[k] for k in expected}
    ema = params(run.ema.module)
    assert max_diff(ema, expected) < 1e-6
    assert max_diff(ema, after[-1]) > 1e-3 and max_diff(ema, initial) > 1e-3
    assert run.ema.n_averaged.item() == 4


# --- the step ---------------------------------------------------------------------------------------------------
def test_the_step_draws_noise_then_t_from_the_run_generator_and_returns_its_losses():
    run = make_run(time_sampling="logit_normal")
    g = torch.Generator().manual_seed(run.cfg.seed + 1)  # Run.create seeds noise_gen with seed + 1
    torch.randn((2, 3, 4, 32, 32), generator=g)
    expected_t = sample_t(2, "logit_normal", generator=g)
    loss, per_sample, t = train_step(run.model, run, clips(), Dist(), CPU)
    assert torch.equal(t, expected_t)
    assert per_sample.shape == (2,) and not per_sample.requires_grad
    assert loss == pytest.approx(per_sample.mean().item(), rel=1e-6)
    # the untrained model outputs 0: its loss is the mean square of the target velocity ε − x0, about 1 + 1/3
    assert 1.0 < loss < 1.7


def perturbed(run: Run) -> Run:
    """The run with its zero-init output conv perturbed: the model's velocity is not 0, so its loss depends on it."""
    with torch.no_grad():
        run.model.head[-1].weight.normal_(std=0.1, generator=torch.Generator().manual_seed(5))
    return run


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.grad.clone() for k, p in model.named_parameters()}


@pytest.mark.parametrize("rank", [0, 1])
def test_each_rank_keeps_its_slice_of_the_global_noise_and_t(rank):
    """A global batch of 4 clips, 2 on this rank: every rank draws all 4 clips' noise and t and keeps rows 2r and
    2r + 1, and its per-sample losses are the flow-matching losses of its 2 clips at those draws, in float32 as
    fm_loss computes them outside the step. (world=1 here: the mean over ranks needs a process group, and the
    two-process run of test_train.py checks it.)"""
    run = perturbed(make_run(batch_size=4))
    before = copy.deepcopy(run.model)
    g = torch.Generator().manual_seed(run.cfg.seed + 1)
    noise = torch.randn((4, 3, 4, 32, 32), generator=g)[2 * rank:2 * rank + 2]
    expected_t = sample_t(4, run.cfg.time_sampling, generator=g)[2 * rank:2 * rank + 2]
    loss, per_sample, t = train_step(run.model, run, clips(), Dist(rank=rank, world=1), CPU)
    _, expected, _ = fm_loss(before, clips()["video"], t=expected_t, noise=noise)
    assert torch.equal(t, expected_t)
    assert per_sample.dtype == torch.float32 and torch.equal(per_sample, expected.detach())
    assert loss == pytest.approx(expected.mean().item(), rel=1e-6)


def test_a_world_model_steps_on_its_own_conditions_in_each_micro_batch():
    """A model that declares conditions (the world model: context frames and buttons) gets the batch's entries
    of those names, sliced like the clips: each micro-batch's clip with its own context and buttons. Its
    per-sample losses are fm_loss's of the model called with them. (context_noise 0: no extra random draws.)"""
    cfg = preset("world-smoke", batch_size=2, grad_accum=2, context_noise=0.0, play_noise=0.0)
    run = perturbed(Run.create(cfg, CPU, Budget(steps=10), 10))
    before = copy.deepcopy(run.model)
    g = torch.Generator().manual_seed(7)
    batch = {"video": torch.rand(2, 3, 1, 32, 32, generator=g) * 2 - 1,
             "context": torch.rand(2, 3, cfg.context_frames, 32, 32, generator=g) * 2 - 1,
             "actions": (torch.rand(2, cfg.context_frames + 1, 8, generator=g) > 0.5).float(),
             "start": torch.tensor([3, 9])}  # an entry the model does not take
    noise_gen = torch.Generator().manual_seed(cfg.seed + 1)
    noise = torch.randn((2, 3, 1, 32, 32), generator=noise_gen)
    expected_t = sample_t(2, cfg.time_sampling, generator=noise_gen)
    _, per_sample, t = train_step(run.model, run, batch, Dist(), CPU)
    velocity = functools.partial(before, context=batch["context"], actions=batch["actions"])
    _, expected, _ = fm_loss(velocity, batch["video"], t=expected_t, noise=noise)
    assert torch.equal(t, expected_t)
    torch.testing.assert_close(per_sample, expected.detach(), rtol=1e-5, atol=1e-7)
    assert (expected[0] - expected[1]).abs() > 1e-3  # two different clips: a swap of conditions would show


@pytest.mark.parametrize("own", [dict(own_frames=1, own_share=0.5), dict(own_frames=2, own_share=1.0, own_draw=True),
                                 dict(own_frames=2, own_share=0.5, own_align=True),
                                 dict(own_frames=2, own_share=0.5, own_align=True, context_frames=3,
                                      moving_weight=8.0, moving_from="target")])
def test_a_world_model_learns_from_its_own_frames_made_in_full_precision_from_the_runs_generator(own):
    """With own_frames = R the step first lets the EMA copy make the last R context frames of the first own_share
    of the batch (mariofm.own_frames.own_context), in float32 and from the run's generator (checkpointed, and not
    torch's global RNG, which the model's context noise draws from); then ε and t come from the same generator.
    With own_draw each own sample's count of frames (1..R) is drawn first, from the same generator. With own_align
    the target and the loss weight are those of mariofm.own_frames.aligned_target, the weight times the moving
    pixels' weight when both are on (three context frames: the last is not the second)."""
    from mariofm.moving import loss_weight
    from mariofm.own_frames import aligned_target, own_context

    cfg = preset("world-smoke", batch_size=4, context_noise=0.0, play_noise=0.0, **own)
    run = perturbed(Run.create(cfg, CPU, Budget(steps=10), 10))
    run.ema.module.load_state_dict(run.model.state_dict())  # the perturbed weights make the own frames too
    before, ema = copy.deepcopy(run.model), copy.deepcopy(run.ema.module)
    g = torch.Generator().manual_seed(7)
    r, n = cfg.own_frames, round(cfg.own_share * 4)
    k = cfg.context_frames + r  # the K + R frames a NextFrames item with own_frames = R holds
    batch = {"video": torch.rand(4, 3, 1, 32, 32, generator=g) * 2 - 1,
             "context": torch.randint(0, 256, (4, 3, k, 32, 32), generator=g) / 127.5 - 1,  # 8-bit frames
             "actions": (torch.rand(4, k + 1, 8, generator=g) > 0.5).float()}
    noise_gen = torch.Generator().manual_seed(cfg.seed + 1)
    counts = torch.randint(1, r + 1, (n,), generator=noise_gen) if cfg.own_draw else None
    if counts is not None:
        assert 0 < counts.min() < counts.max() == r  # the seed draws both counts, so a wrong draw would show
    context, actions, _ = own_context(ema, batch["context"], batch["actions"], n, r, noise_gen, counts)
    noise = torch.randn((4, 3, 1, 32, 32), generator=noise_gen)
    expected_t = sample_t(4, cfg.time_sampling, generator=noise_gen)
    torch.manual_seed(123)  # the global RNG is not what the step draws from
    _, per_sample, t = train_step(run.model, run, batch, Dist(), CPU)
    x0, weight = batch["video"], None
    if cfg.moving_weight:  # moving_from target: the real frame before it, read before own_context replaces it
        weight = loss_weight(torch.cat([batch["context"][:, :, -1:], x0], 2), cfg.moving_weight)
        assert weight.min() == 1 < weight.max()
    if cfg.own_align:
        x0, align = aligned_target(x0, batch["context"][:, :, -1], context[:, :, -1])
        assert (align[:n] == 0).any() and (align[n:] == 1).all()  # an own camera stood elsewhere; real ones did not
        weight = align if weight is None else weight * align
    _, expected, _ = fm_loss(functools.partial(before, context=context, actions=actions), x0, t=expected_t,
                             noise=noise, weight=weight)
    assert torch.equal(t, expected_t)
    torch.testing.assert_close(per_sample, expected.detach(), rtol=1e-6, atol=1e-8)
    assert not torch.equal(context[0, :, -1], batch["context"][0, :, -1])  # sample 0 read a frame of its own


def test_micro_batches_add_up_to_the_gradient_of_the_whole_batch():
    """grad_accum = 2 or 4 splits the 4 clips into micro-batches whose losses are weighted 1/grad_accum: the
    summed gradient, the per-sample losses and the weights after the step are those of one batch of 4. In float64
    (only the order of the sums differs), with clipping out of the way so the gradient is the raw one."""
    torch.set_default_dtype(torch.float64)
    try:
        batch = {"video": clips(4)["video"].double()}
        runs = [perturbed(make_run(batch_size=4, grad_accum=accum, grad_clip=1e9)) for accum in (1, 2, 4)]
        out = [train_step(run.model, run, batch, Dist(), CPU) for run in runs]
    finally:
        torch.set_default_dtype(torch.float32)
    whole, steps = grads(runs[0].model), [params(run.model) for run in runs]
    for run, (loss, per_sample, t) in zip(runs[1:], out[1:]):
        assert max_diff(grads(run.model), whole) < 1e-12 and max_diff(params(run.model), steps[0]) < 1e-12
        assert per_sample.dtype == torch.float32  # for the log, whatever the model computes in
        assert torch.allclose(per_sample, out[0][1], rtol=1e-6) and loss == pytest.approx(out[0][0], rel=1e-6)
        assert torch.equal(t, out[0][2])
    assert max(g.abs().max().item() for g in whole.values()) > 1e-3  # a real gradient, not zeros


def test_under_ddp_the_micro_batches_all_reduce_their_gradients_once():
    """A real DistributedDataParallel model (gloo, one process): its gradients are all-reduced once per step,
    after the last micro-batch (`no_sync` on the others), however many micro-batches there are. A communication
    hook counts the all-reduces of each step: DDP calls it once per gradient bucket it sends."""
    torch.distributed.init_process_group("gloo", store=torch.distributed.HashStore(), rank=0, world_size=1)
    try:
        for accum in (1, 2, 4):
            run = make_run(batch_size=4, grad_accum=accum)
            net, sent = DistributedDataParallel(run.model), []

            def count(state, bucket, sent=sent):
                sent.append(bucket.index())
                done = torch.futures.Future()
                done.set_result(bucket.buffer())  # one process: the sum over ranks is its own gradient
                return done

            net.register_comm_hook(None, count)
            train_step(net, run, clips(4), Dist(), CPU)
            assert sent == [0], (accum, sent)  # the smoke model's gradients fit one bucket
    finally:
        torch.distributed.destroy_process_group()


def test_fp16_loss_scaling_clips_and_steps_on_the_true_gradient():
    """With a GradScaler on (fp16 autocast on older GPUs; here on the CPU, whose scaler works the same), the loss
    is multiplied by 2^16 before backward, and the step must unscale before clipping: the weights end where an
    unscaled run's do. The clip at 1e-6 bites, and Adam's eps (1e-8) makes the size of the clipped gradient show:
    clipping the scaled gradient would leave 2^16 times less. Two steps: the scaler is updated after each."""
    plain, scaled = make_run(lr=1e-2, warmup_steps=1, grad_clip=1e-6), make_run(lr=1e-2, warmup_steps=1,
                                                                                grad_clip=1e-6)
    scaled.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    for k in range(2):
        for run in (plain, scaled):
            train_step(run.model, run, clips(seed=k), Dist(), CPU)
    assert max_diff(params(scaled.model), params(plain.model)) < 1e-6
    assert max_diff(params(scaled.model), params(make_run().model)) > 5e-3  # the steps moved the weights
    assert scaled.scaler.state_dict()["_growth_tracker"] == 2  # update() after each of the 2 good steps


def test_a_non_finite_loss_changes_nothing():
    run = make_run(lr=1e-2, warmup_steps=1)
    train_step(run.model, run, clips(), Dist(), CPU)  # one good step: the EMA and Adam's moments exist
    before = (params(run.model), params(run.ema), run.sched.last_epoch, run.opt.param_groups[0]["lr"])
    bad = clips()
    bad["video"][0, 0, 0, 0, 0] = float("nan")
    loss, _, _ = train_step(run.model, run, bad, Dist(), CPU)
    assert math.isnan(loss)
    assert max_diff(params(run.model), before[0]) == 0 and max_diff(params(run.ema), before[1]) == 0
    assert (run.sched.last_epoch, run.opt.param_groups[0]["lr"]) == before[2:]


def test_gradient_clipping_bounds_the_update():
    """Adam divides by the gradient's size, so a clip at 1e-12 (far under Adam's eps 1e-8) shrinks the first
    update ~10⁴-fold; at the preset's grad_clip = 1 the update is the full lr per weight. (No weight decay here:
    it moves the weights by lr·wd·θ whatever the gradient.)"""
    moved = []
    for clip in (1.0, 1e-12):
        run = make_run(lr=1e-2, warmup_steps=1, grad_clip=clip, weight_decay=0.0)
        before = params(run.model)
        train_step(run.model, run, clips(), Dist(), CPU)
        moved.append(max_diff(params(run.model), before))
    assert moved[0] > 5e-3 and moved[1] < 1e-3 * moved[0], moved


# --- the learning-rate schedule --------------------------------------------------------------------------------
def test_make_scheduler_warms_up_linearly_then_decays_by_a_cosine_to_a_tenth():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = make_scheduler(opt, warmup=4, spent=lambda step: (step - 4) / 6)
    lrs = []
    for _ in range(13):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    warm = [2.0 * (s + 1) / 4 for s in range(4)]  # 0.5, 1.0, 1.5, 2.0
    cosine = [2.0 * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, (s - 4) / 6)))) for s in range(4, 13)]
    assert lrs == pytest.approx(warm + cosine, rel=1e-12)
    assert lrs[4] == pytest.approx(2.0) and lrs[7] == pytest.approx(1.1) and lrs[10:] == pytest.approx([0.2] * 3)


def test_a_run_warms_up_over_at_most_half_its_steps_and_train_step_advances_the_schedule():
    run = make_run(Budget(steps=10), lr=1e-3, warmup_steps=100)
    assert run.warmup == 5 and run.max_steps == 10
    assert [run.spent(s) for s in (5, 7, 10)] == pytest.approx([0.0, 0.4, 1.0])
    assert run.opt.param_groups[0]["lr"] == pytest.approx(1e-3 / 5)
    train_step(run.model, run, clips(), Dist(), CPU)
    assert run.opt.param_groups[0]["lr"] == pytest.approx(2e-3 / 5)
    short = make_run(Budget(steps=10), warmup_steps=3)
    assert short.warmup == 3 and make_run(Budget(steps=1), warmup_steps=3).warmup == 1


def test_a_wall_clock_budget_spends_seconds():
    run = make_run(Budget(minutes=2), warmup_steps=7)
    assert run.max_steps is None and run.warmup == 7
    run.elapsed = 30.0
    assert run.spent(100) == pytest.approx(0.25) and not run.finished()
    run.elapsed = 120.0
    assert run.finished()
    both = make_run(Budget(steps=20, minutes=1), warmup_steps=4)  # whichever is further along
    both.elapsed = 45.0
    assert both.spent(12) == pytest.approx(0.75) and both.spent(20) == pytest.approx(1.0)


def test_budgets_end_on_the_first_limit():
    assert Budget(steps=30, epochs=2).max_steps(10) == 20 and Budget(steps=15, epochs=2).max_steps(10) == 15
    assert Budget(epochs=3).max_steps(10) == 30 and Budget(minutes=5).max_steps(10) is None
    run = make_run(Budget(epochs=2), steps_per_epoch=3)
    assert run.max_steps == 6 and not run.finished()
    run.step = 6
    assert run.finished()
    with pytest.raises(ValueError, match=r"^--steps=0 must be positive$"):
        Budget(steps=0)
    with pytest.raises(ValueError, match=r"^--minutes=-1 must be positive$"):
        Budget(minutes=-1)


def test_epoch_batches_are_a_seeded_permutation_without_the_ragged_tail():
    batches = epoch_batches(10, 3, seed=2, epoch=5)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(2 * 100_003 + 5)).tolist()
    assert batches == [perm[0:3], perm[3:6], perm[6:9]]
    assert epoch_batches(10, 3, seed=2, epoch=6) != batches and epoch_batches(9, 3, 2, 5) != []
    assert epoch_batches(2, 3, 0, 0) == [] and len(epoch_batches(9, 3, 0, 0)) == 3


class Items(torch.utils.data.Dataset):
    """Item i: a clip filled with i, the id of the DataLoader worker process that loaded it (-1: this process),
    and a file name (not a tensor: collate drops it)."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int) -> dict:
        worker = torch.utils.data.get_worker_info()
        return {"video": torch.full((3, 1, 2, 2), float(i)), "worker": torch.tensor(worker.id if worker else -1),
                "name": f"clip{i}"}


@pytest.mark.parametrize("rank, workers", [(0, 0), (1, 1)])
def test_epoch_loader_gives_this_rank_its_part_of_each_batch_from_the_skipped_one_on(rank, workers):
    """10 items, global batches of 4 over 2 ranks: rank r gets items 2r and 2r + 1 of each of the epoch's batches
    after the first `skip`, collated, loaded by `workers` worker processes (0: in this one). Making it draws
    nothing from the global RNG (dropout's stream, which a resumed run restores), and on the CPU it asks for no
    pinned memory (which only a GPU has: DataLoader would warn)."""
    cfg = preset("smoke", batch_size=4, seed=3)
    torch.manual_seed(0)
    rng = torch.get_rng_state()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = list(epoch_loader(Items(), cfg, epoch=2, skip=1, dist=Dist(rank=rank, world=2), workers=workers,
                                dev=CPU))
    assert torch.equal(torch.get_rng_state(), rng)
    order = epoch_batches(10, 4, seed=3, epoch=2)[1:]  # 2 whole batches, the first one skipped: 1 left
    assert len(order) == 1 and [sorted(b) for b in got] == [["video", "worker"]]
    assert got[0]["video"][:, 0, 0, 0, 0].tolist() == [float(i) for i in order[0][2 * rank:2 * rank + 2]]
    assert got[0]["video"].shape == (2, 3, 1, 2, 2) and got[0]["worker"].tolist() == [workers - 1] * 2
    on_gpu = next(epoch_loader(Items(), cfg, epoch=2, skip=0, dist=Dist(), workers=0, dev=torch.device("meta")))
    assert on_gpu["video"].device.type == "meta"  # meta: a stand-in for a GPU


# --- errors and signals ------------------------------------------------------------------------------------------
def test_out_of_memory_suggests_the_next_grad_accum_that_divides_the_batch():
    err = out_of_memory(preset("smoke", batch_size=6), Dist(), CPU)
    assert isinstance(err, OutOfMemory)
    assert str(err) == ("cpu ran out of memory on micro-batches of 6 clips. Try --set grad_accum=2 (micro-batches "
                        "of 3 clips whose gradients add up to the same step), or a smaller --set batch_size=..., "
                        "or --set recompute_activations=true")
    single = out_of_memory(preset("smoke", batch_size=2, grad_accum=2), Dist(), CPU)
    assert str(single) == ("cpu ran out of memory on micro-batches of 1 clips. Try a smaller --set batch_size=..., "
                           "or --set recompute_activations=true")
    prime = out_of_memory(preset("smoke", batch_size=3), Dist(), CPU)  # only the whole batch divides it
    assert "--set grad_accum=3 (micro-batches of 1 clips" in str(prime)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_the_first_signal_asks_to_stop_the_second_interrupts(signum, capsys):
    previous = signal.getsignal(signum)
    with stop_requests() as asked:
        assert asked == {"stop": False}
        os.kill(os.getpid(), signum)
        assert asked["stop"] is True
        assert "stopping after this step" in capsys.readouterr().err
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signum)
    assert signal.getsignal(signum) is previous  # restored


def test_outside_the_main_thread_signals_are_left_alone():
    seen = {}

    def body():
        with stop_requests() as asked:
            seen["asked"], seen["handler"] = asked, signal.getsignal(signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen["asked"] == {"stop": False} and seen["handler"] is before


# --- what a fresh run is made of ---------------------------------------------------------------------------------
def test_a_fresh_run_is_seeded_and_uses_the_configured_optimiser():
    a, b, other = make_run(), make_run(), make_run(seed=1)
    assert max_diff(params(a.model), params(b.model)) == 0 and max_diff(params(a.model), params(other.model)) > 0
    assert max_diff(params(a.ema.module), params(a.model)) == 0  # the EMA starts as a copy
    group = make_run(lr=3e-4, weight_decay=0.05).opt.param_groups[0]
    assert isinstance(a.opt, torch.optim.AdamW) and group["betas"] == (0.9, 0.99)
    assert group["initial_lr"] == 3e-4 and group["weight_decay"] == 0.05
    assert not a.scaler.is_enabled()  # fp16 loss scaling is for CUDA's fp16 autocast only
    assert (a.step, a.elapsed, a.max_steps) == (0, 0.0, 10) and a.hardware
    assert torch.equal(a.noise_gen.get_state(), torch.Generator().manual_seed(a.cfg.seed + 1).get_state())


def test_a_run_is_built_on_its_device_and_remembers_its_data():
    run = Run.create(preset("smoke"), torch.device("meta"), Budget(steps=10), 5, data="/data/mario")  # a GPU stand-in
    assert {p.device.type for p in [*run.model.parameters(), *run.ema.module.parameters()]} == {"meta"}
    assert run.data == "/data/mario" and make_run().data is None


def test_warmup_is_a_whole_number_of_steps_and_spent_reaches_one_at_the_last_step():
    """An odd budget still warms up over a whole number of steps (11 steps: 5), and a budget one step longer
    than its warmup spends it all in that step. A run with no budget at all (stepped by hand) never decays."""
    assert make_run(Budget(steps=11), warmup_steps=100).warmup == 5
    two = make_run(Budget(steps=2), warmup_steps=100)
    assert two.warmup == 1 and two.spent(1) == 0.0 and two.spent(2) == 1.0
    unbounded = make_run(Budget(), warmup_steps=2)
    assert unbounded.max_steps is None and unbounded.spent(1000) == 0.0


def test_a_one_step_budget_warms_up_in_one_step():
    run = make_run(Budget(steps=1), warmup_steps=50)
    assert run.warmup == 1 and run.spent(1) == 0.0 and run.opt.param_groups[0]["lr"] == pytest.approx(run.cfg.lr)
