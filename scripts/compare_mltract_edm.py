"""Outside the suite: the TRACT-EDM experiment's update, composed from its own config, against apple/ml-tract's
`tc_distill_edm.py` train_op itself, on an NVlabs EDM network file (issue 41).

Our side: `+experiment=tract_edm_cifar10` composed by Hydra, checked by `check_keys` (clips, precision, gradient
handling, lr, EMAs: all from the experiment's file), the teacher read from the file by our reader, then our
Distiller. Their side: `EluDDIM05TCMultiStepx0.train_op` from a checkout of apple/ml-tract, its networks loaded by
NVlabs' own pickle loader from a checkout of NVlabs/edm (their code runs: this is why it is not in the suite).
Both see the same batches, noise and time draws (ours, fed to their `torch.randint` / `randn_like` calls); only
the budget is cut (`--updates`, `--batch`: the EMA momenta follow from the update count on both sides, as
ml-tract derives them). Prints each update's loss on both sides and the weights' distance after the last one.

    pip install --target /tmp/refdeps absl-py imageio tensorboard   # ml-tract's imports (not the project's)
    ML_DATA=/tmp PYTHONPATH=/tmp/refdeps .venv/bin/python scripts/compare_mltract_edm.py \\
        --mltract /path/to/ml-tract --edm /path/to/NVlabs-edm --file edm_cifar10_ncsnpp_structure.pkl
"""
import argparse
import copy
import functools
import pickle
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch

REPO = Path(__file__).resolve().parents[1]


def our_settings(file: str, updates: int, batch: int):
    """The experiment's DistillConfig and the teacher's family, composed as a job composes them."""
    from hydra import compose, initialize_config_dir
    from sweeps.settings.checks import check_keys, family_config
    overrides = ["+experiment=tract_edm_cifar10", f"teacher.source=edm:{file}", "device=cpu",
                 f"distill.updates_per_phase={updates}", f"distill.batch_size={batch}", "distill.log_every=1"]
    with initialize_config_dir(str(REPO / "conf")):
        cfg = compose("config", overrides=overrides)
    _, dc = check_keys(cfg)
    return dc, family_config(cfg)


def draws(d, n: int) -> list:
    """The next `n` updates' (x, noise, t, prev, start), replayed from a copy of the distiller's generator."""
    g = torch.Generator().manual_seed(0)
    g.set_state(d.generator.get_state())
    out = []
    for _ in range(n):
        x, _ = d.data.draw(d.cfg.batch_size, g)
        noise = torch.randn((d.cfg.batch_size, *d.data.shape), generator=g)
        dr = d.method.draw(d.cfg.batch_size, d.cfg.schedule[0], d.cfg.schedule[0], d.cfg.schedule[1], g)
        out.append((x, noise, dr))
    return out


def theirs(mltract: Path, edm: Path, file: str, dc, updates: int):
    """ml-tract's model object, built as its __init__ builds it (no flags, no download: the file given)."""
    sys.path[:0] = [str(mltract), str(edm)]
    import lib
    import tc_distill_edm as tc
    tc.device = lambda: "cpu"
    with open(file, "rb") as f:
        pretrained = pickle.load(f)["ema"]  # NVlabs' loader (runs the file's module source: outside the suite only)
    import dnnlib
    from torch_utils import misc
    kwargs = dict(pretrained.init_kwargs)
    kwargs.update(class_name="training.networks.EDMPrecond", dropout=0.0, use_fp16=False)  # ml-tract's overrides
    model = dnnlib.util.construct_class_by_name(**kwargs)
    model.train().requires_grad_(True)
    misc.copy_params_and_buffers(src_module=pretrained, dst_module=model, require_all=False)
    m = tc.EluDDIM05TCMultiStepx0.__new__(tc.EluDDIM05TCMultiStepx0)
    torch.nn.Module.__init__(m)
    m.params = SimpleNamespace(lr=dc.lr, lr_warmup=None, dropout=0.0)
    m.use_imagenet, m.num_classes, m.time_schedule, m.timesteps = False, 10, tuple(dc.schedule), dc.schedule[0]
    ema = dc.mu_i_residual ** (1 / updates)  # ema_residual ** (1 / steps_per_phase)
    model.apply(functools.partial(lib.nn.functional.set_dropout, p=0.0))
    m.model = lib.distributed.WrapModel(model)
    m.model_eval = lib.optim.ModuleEMA(model, momentum=ema).eval().requires_grad_(False)
    m.self_teacher = lib.optim.ModuleEMA(model, momentum=dc.mu_s).eval().requires_grad_(False)
    m.teacher = copy.deepcopy(model).eval().requires_grad_(False)
    m.opt = torch.optim.Adam(m.model.parameters(), lr=dc.lr, weight_decay=0.0)
    sigma = torch.linspace(m.SIGMA_MIN ** (1 / m.RHO), m.SIGMA_MAX ** (1 / m.RHO), m.timesteps, dtype=torch.double).pow(m.RHO)
    m.register_buffer("sigma", torch.cat([torch.zeros_like(sigma[:1]), sigma]))
    return m, lib


def their_update(m, lib, x, noise, dr, step: int):
    """One train_op with our draws in place of its `torch.randint` and `torch.randn_like` calls."""
    index = dr["start"] + step  # the group's upper end
    queued = [index // step, index - dr["t"]]  # randint(1, 1 + T // step) * step, then randint(step): the offset
    real_randint, real_randn_like = torch.randint, torch.randn_like
    torch.randint = lambda *a, **k: queued.pop(0)
    torch.randn_like = lambda *a, **k: noise.clone()
    try:
        out = m.train_op(lib.train.TrainInfo(samples=0, progress=0.0), x.clone(), None)
    finally:
        torch.randint, torch.randn_like = real_randint, real_randn_like
    return float(out["loss/global"].detach())


def distance(a: torch.nn.Module, b: torch.nn.Module) -> float:
    va = torch.cat([p.detach().double().flatten() for p in a.parameters()])
    vb = torch.cat([p.detach().double().flatten() for p in b.parameters()])
    return float((va - vb).norm() / vb.norm())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mltract", required=True, type=Path)
    p.add_argument("--edm", required=True, type=Path)
    p.add_argument("--file", required=True)
    p.add_argument("--updates", type=int, default=10)
    p.add_argument("--batch", type=int, default=8)
    a = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from distill_core import data as core_data
    from distill_core import edm_pickle
    from distill_core.callbacks import Callback
    from distill_core.distill import Distiller

    dc, family = our_settings(a.file, a.updates, a.batch)
    print(f"ours, from +experiment=tract_edm_cifar10: schedule {dc.schedule}, lr {dc.lr} ({dc.lr_schedule}), mu_s {dc.mu_s}, "
          f"mu_i_residual {dc.mu_i_residual}, grad_clip {dc.grad_clip}, nonfinite_grads {dc.nonfinite_grads}, "
          f"clip_teacher {dc.clip_teacher}, clip_self_teacher {dc.clip_self_teacher}, weighting {dc.weighting}, "
          f"targets {dc.target_precision}, precision {dc.precision}")
    teacher = edm_pickle.build_model(edm_pickle.network(a.file), family=family)
    images = torch.randint(0, 256, (256, *teacher.data_shape), generator=torch.Generator().manual_seed(5), dtype=torch.uint8)
    data = core_data.TensorData("cifar10", images)
    losses = []

    class Losses(Callback):
        def on_metrics(self, metrics, step):
            if "distill/loss" in metrics:
                losses.append(metrics["distill/loss"])

    with tempfile.TemporaryDirectory() as tmp:
        d = Distiller(teacher, data, dc, Path(tmp), callback=Losses(), progress=False,
                      eval_noise=torch.randn((2, *teacher.data_shape)))
        batches = draws(d, a.updates)
        m, lib = theirs(a.mltract, a.edm, a.file, dc, a.updates)
        print(f"start: ours vs theirs, student {distance(d.student.net.inner, m.model.module.model):.2e}")
        step = dc.schedule[0] // dc.schedule[1]
        their_losses = [their_update(m, lib, x, noise, dr, step) for x, noise, dr in batches]
        d.run()
    print("update | ours | theirs | relative difference")
    for i, (o, t) in enumerate(zip(losses, their_losses), 1):
        print(f"{i:6d} | {o:.7g} | {t:.7g} | {abs(o - t) / abs(t):.1e}")
    print(f"after {a.updates} updates (relative L2 distance of the weights): student "
          f"{distance(d.student.net.inner, m.model.module.model):.2e}, self-teacher "
          f"{distance(d.self_teacher.module.net.inner, m.self_teacher.module.model):.2e}, inference EMA "
          f"{distance(d.ema_i.module.net.inner, m.model_eval.module.model):.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
