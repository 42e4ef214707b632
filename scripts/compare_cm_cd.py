"""Outside the suite: our consistency distillation loss and update against openai/consistency_models'
`KarrasDenoiser.consistency_losses` itself (issue 43), on the same inputs, draws and weights.

One EDM network (an NVlabs file read by our reader, or a random EDM U-Net) is the teacher; the student and the
target network start from it (as CD starts). Both sides see the same batch, noise and grid indices (ours, fed to
openai's `th.randint`). openai's networks take (c_in x, 1000 c_noise); ours take c_noise = ln(sigma) / 4 through
the same weights, so one network serves both. Compared: the loss (l2, their `loss_norm="l2"`, weight "uniform"),
its gradient, and after `--updates` updates with Adam on both sides (openai trains with RAdam: a convention of its
training loop, not of CD) with their plain target EMA (`update_ema`, rate mu) against ours: the student's and the
target network's weights.

    PYTHONPATH=/path/to/consistency_models .venv/bin/python scripts/compare_cm_cd.py --cm /path/to/consistency_models \\
        [--file shared/assets/edm/edm_cifar10_ncsnpp_structure.pkl] [--grid 18] [--updates 10]
"""
import argparse
import copy
import sys
import tempfile
import types
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def import_karras(cm: Path):
    """openai's karras_diffusion without its LPIPS (piq) and MPI (dist_util) imports, which l2 does not use."""
    piq = types.ModuleType("piq")
    piq.LPIPS = object
    sys.modules.setdefault("piq", piq)
    dist = types.ModuleType("cm.dist_util")
    sys.modules["cm.dist_util"] = dist
    sys.path.insert(0, str(cm))
    import cm  # noqa: F401
    from cm import karras_diffusion
    from cm.nn import update_ema
    karras_diffusion.update_ema = update_ema  # (cm/train_util.py's target update)
    return karras_diffusion


class TheirCall(torch.nn.Module):
    """Our EDM network behind openai's interface: model(c_in x, 1000 * c_noise)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x, rescaled_t, **kwargs):
        return self.inner(x, rescaled_t / 1000.0, None)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cm", required=True, type=Path, help="a checkout of openai/consistency_models")
    p.add_argument("--file", default=None, help="an NVlabs EDM network file (default: a random EDM U-Net)")
    p.add_argument("--grid", type=int, default=18)
    p.add_argument("--updates", type=int, default=10)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--mu", type=float, default=0.95)
    a = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from distill_core import data as core_data
    from distill_core import edm_pickle
    from distill_core.distill import DistillConfig, Distiller
    kd = import_karras(a.cm)
    teacher = edm_pickle.load_model(a.file) if a.file else random_teacher()
    images = torch.randint(0, 256, (256, *teacher.data_shape), generator=torch.Generator().manual_seed(5), dtype=torch.uint8)
    data = core_data.TensorData("cifar10", images)
    cfg = DistillConfig(method="cd", schedule=[a.grid, 1], batch_size=a.batch, updates_per_phase=a.updates, lr=4e-4,
                        lr_schedule="constant", grad_clip=float("inf"), mu_s=a.mu, mu_i=0.0, cd_distance="l2",
                        checkpoint_every=0, log_every=1, weighting="edm")
    ours_losses, theirs_losses = [], []
    with tempfile.TemporaryDirectory() as tmp:
        d = Distiller(teacher, data, cfg, Path(tmp), progress=False, eval_noise=torch.randn((2, *teacher.data_shape)))
        # openai's side: the same three networks, their diffusion objects
        student = TheirCall(copy.deepcopy(teacher.net.inner)).train()
        for m in student.modules():  # (the paper's CD student trains without dropout, as ours)
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        target = TheirCall(copy.deepcopy(teacher.net.inner)).eval().requires_grad_(False)
        frozen = TheirCall(copy.deepcopy(teacher.net.inner)).eval().requires_grad_(False)
        consistency = kd.KarrasDenoiser(sigma_data=0.5, sigma_max=80.0, sigma_min=0.002, rho=7.0,
                                        weight_schedule="uniform", distillation=True, loss_norm="l2")
        edm = kd.KarrasDenoiser(sigma_data=0.5, sigma_max=80.0, sigma_min=0.002, rho=7.0, distillation=False,
                                loss_norm="l2")
        opt = torch.optim.Adam(student.parameters(), lr=cfg.lr)
        g = torch.Generator().manual_seed(0)
        g.set_state(d.generator.get_state())
        for _ in range(a.updates):
            x, _ = d.data.draw(a.batch, g)
            noise = torch.randn((a.batch, *d.data.shape), generator=g)
            index = d.method.draw(a.batch, a.grid, a.grid, 1, g)["t"]
            real = kd.th.randint
            kd.th.randint = lambda *args, **kw: a.grid - index  # their j counts down from sigma_max
            try:
                loss = consistency.consistency_losses(student, x, a.grid, target_model=target, teacher_model=frozen,
                                                      teacher_diffusion=edm, noise=noise)["loss"].mean()
            finally:
                kd.th.randint = real
            opt.zero_grad()
            loss.backward()
            opt.step()
            kd.update_ema(target.parameters(), student.parameters(), rate=a.mu)
            theirs_losses.append(float(loss.detach()))

        class Losses:
            def __getattr__(self, name):
                return lambda *args, **kw: None

            def on_metrics(self, metrics, step):
                if "distill/loss" in metrics:
                    ours_losses.append(metrics["distill/loss"])
        d.callback = Losses()
        d.run()
    print(f"CD on an EDM network ({sum(p.numel() for p in teacher.parameters()):,} parameters), grid N={a.grid}, batch "
          f"{a.batch}, l2, target EMA {a.mu}, Adam lr {cfg.lr}")
    print("update | ours | openai's | relative difference")
    for i, (o, t) in enumerate(zip(ours_losses, theirs_losses), 1):
        print(f"{i:6d} | {o:.7g} | {t:.7g} | {abs(o - t) / abs(t):.1e}")
    for name, ours, theirs in (("student", d.student.net.inner, student.inner),
                               ("target network", d.self_teacher.module.net.inner, target.inner)):
        va = torch.cat([q.detach().flatten() for q in ours.parameters()])
        vb = torch.cat([q.detach().flatten() for q in theirs.parameters()])
        moved = torch.cat([q.detach().flatten() for q in teacher.net.inner.parameters()])
        print(f"after {a.updates} updates, {name}: relative L2 distance {float((va - vb).norm() / vb.norm()):.2e} "
              f"(it moved {float((vb - moved).norm() / moved.norm()):.2e} from the teacher)")
    return 0


def random_teacher():
    from distill_core.diffusion import DiffusionModel
    torch.manual_seed(0)
    kwargs = dict(img_resolution=32, model_channels=32, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[16],
                  dropout=0.0, embedding_type="positional")
    model = DiffusionModel("edm", (3, 32, 32), {"family": "edm"},
                           network_overrides={"architecture": "SongUNet", "kwargs": kwargs})
    with torch.no_grad():
        for q in model.parameters():
            q.add_(0.05 * torch.randn_like(q))
    return model.eval()


if __name__ == "__main__":
    sys.exit(main())
