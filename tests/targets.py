"""What a distiller's next update trains towards, replayed from a copy of its generator (shared by the target tests)."""
import torch


def captured_target(d, teacher_steps, student_steps):
    """The loss's inputs for the next batch: (z_t, t, target, labels, draw), with the batch replayed from a copy
    of the distiller's generator (as `Distiller.loss` draws it)."""
    g = torch.Generator().manual_seed(0)
    g.set_state(d.generator.get_state())
    x, y = d.data.draw(d.cfg.batch_size, g)
    eps = torch.randn((d.cfg.batch_size, *d.data.shape), generator=g)
    draw = d.method.draw(d.cfg.batch_size, d.cfg.schedule[0], teacher_steps, student_steps, g)
    captured = {}

    def loss(family, cfg, t, x_hat, target):
        captured.update(t=t, target=target)
        return (x_hat - target).pow(2).mean()

    d.method.loss = loss  # (this distiller's method object only)
    d.loss(teacher_steps, student_steps)
    z_t = d.family.noise(x, d.family.time(draw["t"], d.cfg.schedule[0]), eps)
    return z_t, captured["target"], y, draw
