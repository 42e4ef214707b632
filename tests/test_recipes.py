"""The reference presets: `tract_mltract`'s loss, gradient and first update are apple/ml-tract's `train_op`
(tc_distill.py), written out below in its own float64 arithmetic on the same batch, times and noise."""
import copy

import processes
import pytest
import torch

from distill_core import data as D
from distill_core.diffusion import DiffusionModel
from distill_core.distill import DistillConfig, Distiller
from distill_core.loop import LoopSettings, run_updates
from distill_core.methods.tract import tract_draw

T, SCHEDULE, BATCH = 8, [8, 4, 1], 16


def logsnr_schedule_cosine(t, logsnr_min=-20.0, logsnr_max=20.0):  # tc_distill.py:132-136
    b = torch.arctan(torch.exp(-0.5 * torch.tensor(logsnr_max, dtype=t.dtype)))
    a = torch.arctan(torch.exp(-0.5 * torch.tensor(logsnr_min, dtype=t.dtype))) - b
    return -2.0 * torch.log(torch.tan(a * t + b))


def call_model(model, xt, logsnr):  # tc_distill.py:108-111 (the network conditions on log-SNR here)
    return model.net(xt.float(), logsnr.float()).double()


def post_xt_x0(xt, out, g, g1):  # tc_distill.py:143-155 (x-prediction: the CIFAR-10 teacher)
    x0 = torch.clip(out, -1.0, 1.0)
    eps = (xt - x0 * g.sqrt()) * (1 - g).rsqrt()
    return torch.nan_to_num(x0 * g1.sqrt() + eps * (1 - g1).sqrt())


def mltract_loss(student, teacher, self_teacher, x, noise, index, semi_index, semi, step):
    """train_op's target and loss (tc_distill.py:170-197), phase 0."""
    with torch.no_grad():
        ix = index - semi_index, index - semi_index - semi, index - step
        logsnr = tuple(logsnr_schedule_cosine(i.double() / T) for i in ix)
        g = tuple(torch.sigmoid(v).view(-1, 1, 1, 1) for v in logsnr)
        xt0 = x.double() * g[0].sqrt() + noise.double() * (1 - g[0]).sqrt()
        xt1 = post_xt_x0(xt0, call_model(teacher, xt0, logsnr[0]), g[0], g[1])
        xt2 = post_xt_x0(xt1, call_model(self_teacher, xt1, logsnr[1]), g[1], g[2])
        xt2 += (semi_index + semi == step).view(-1, 1, 1, 1) * (xt1 - xt2)
        target = ((xt0 * (1 - g[2]).sqrt() - xt2 * (1 - g[0]).sqrt()) /
                  ((g[0] * (1 - g[2])).sqrt() - (g[2] * (1 - g[0])).sqrt()))
    pred_x = call_model(student, xt0, logsnr[0])
    return ((g[0] / (1 - g[0])).clamp(1) * (pred_x - target).square()).mean(0).sum()


@pytest.fixture
def setup(tmp_path):
    torch.manual_seed(0)
    data = D.load("digits")
    teacher = DiffusionModel("unet_tiny", data.shape, {"family": "vp", "parameterization": "x", "t0": "clipped"})
    with torch.no_grad():  # a teacher that says something (the fresh U-Net's output layer is zero)
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    cfg = DistillConfig(method="tract", schedule=SCHEDULE, mu_s=0.5, mu_i=0.0, mu_i_residual=1e-3, weighting="truncated_snr",
                        updates_per_phase=10, batch_size=BATCH, lr=2e-4, lr_schedule="constant", grad_clip=1.0,
                        loss_reduction="sum", ema_reset="none", target_precision="float64", clip_x=True,
                        checkpoint_every=0)
    d = Distiller(teacher, data, cfg, tmp_path, progress=False)
    return d, data


def replay(d, data):
    """The batch, noise and times `d.loss` draws next, from a copy of its generator, in ml-tract's terms:
    `index` the group's upper end, `semi_index` the offset below it (tc_distill.py:171-173)."""
    g = torch.Generator().manual_seed(0)
    g.set_state(d.generator.get_state())
    x = data.batch(BATCH, g)
    noise = torch.randn((BATCH, *data.shape), generator=g)
    t, _, start = tract_draw(BATCH, T, SCHEDULE[0], SCHEDULE[1], g)
    semi, step = T // SCHEDULE[0], T // SCHEDULE[1]
    index = start + step
    return x, noise, index, index - t, semi, step


def test_tract_mltract_loss_and_gradient_are_mltracts(setup):
    d, data = setup
    x, noise, index, semi_index, semi, step = replay(d, data)

    reference_student = copy.deepcopy(d.student)
    ours = d.loss(SCHEDULE[0], SCHEDULE[1])
    theirs = mltract_loss(reference_student, d.teacher, d.self_teacher.module, x, noise, index, semi_index, semi, step)
    assert float(ours.detach()) == pytest.approx(float(theirs.detach()), rel=1e-5)

    ours.backward()
    theirs.backward()
    g_ours = torch.cat([p.grad.flatten() for p in d.student.parameters()])
    g_theirs = torch.cat([p.grad.flatten() for p in reference_student.parameters()])
    assert float(g_theirs.norm()) > 10.0  # summed over pixels: far above the clip at 1, which is active
    assert torch.allclose(g_ours, g_theirs, rtol=1e-4, atol=1e-6 * float(g_theirs.norm()))


def test_tract_mltract_first_update_is_mltracts(setup):
    d, data = setup
    x, noise, index, semi_index, semi, step = replay(d, data)

    reference = copy.deepcopy(d.student)
    teacher, self_teacher = copy.deepcopy(d.teacher), copy.deepcopy(d.self_teacher.module)
    opt = torch.optim.Adam(reference.parameters(), lr=2e-4)  # tc_distill.py:88, then train_op:196-199
    opt.zero_grad(set_to_none=True)
    mltract_loss(reference, teacher, self_teacher, x, noise, index, semi_index, semi, step).backward()
    torch.nn.utils.clip_grad_norm_(reference.parameters(), 1.0)
    clipped = torch.cat([p.grad.flatten() for p in reference.parameters()])
    opt.step()

    before = [p.detach().clone() for p in d.student.parameters()]
    run_updates(d.student, d.optimizer, lambda: d.loss(SCHEDULE[0], SCHEDULE[1]),
                LoopSettings(updates=1, lr=2e-4, anneal=False, grad_clip=1.0, progress=False))
    moved = torch.cat([(p.detach() - b).flatten() for p, b in zip(d.student.parameters(), before)])
    moved_ref = torch.cat([(p.detach() - b).flatten() for p, b in zip(reference.parameters(), before)])
    # Adam's first step is lr * g / (|g| + 1e-8): equal wherever the gradient is well above float32's
    # rounding of the loss (ours sums float32 errors, ml-tract float64 ones: ~3e-8 apart at most here)
    clear = clipped.abs() > 1e-6
    assert float(clear.double().mean()) > 0.5
    assert torch.allclose(moved[clear], moved_ref[clear], rtol=0, atol=1e-3 * 2e-4)
    assert float(moved_ref.abs().max()) == pytest.approx(2e-4, rel=1e-3)


@pytest.mark.slow
def test_both_reference_presets_run_end_to_end(tmp_path):
    from test_sweeps import runs
    proc = processes.cli("sweeps.run", ["-m", "distill=tract_mltract,btd_pd", "+debug=tiny", "distill.batch_size=16",
                                  f"hydra.sweep.dir={tmp_path}/multirun"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    students = {r.data.tags["method"]: r for r in runs(tmp_path) if r.data.tags.get("method")}
    assert set(students) == {"tract", "btd"} and all(r.info.status == "FINISHED" for r in students.values())
    tract, btd = students["tract"].data.params, students["btd"].data.params
    assert (tract["distill.loss_reduction"], tract["distill.lr_schedule"], tract["distill.target_precision"],
            tract["diffusion.t0"], tract["distill.lr"]) == ("sum", "constant", "float64", "clipped", "0.0002")
    assert (btd["distill.loss_reduction"], btd["distill.lr_schedule"], btd["distill.mu_i"], btd["distill.lr"]) == \
        ("mean", "linear", "0.0", "5e-05")
    assert students["tract"].data.tags["teacher_version"] == students["btd"].data.tags["teacher_version"]
