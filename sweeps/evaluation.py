"""Per-phase evaluation beyond the gap: FID/KID when enabled (see distill_core.fid)."""


def phase_metrics(cfg, data, device):
    """A function (phase, steps, model) -> metrics, or None when no FID/KID is asked for."""
    if not (cfg.eval.fid or cfg.eval.kid):
        return None
    from distill_core import fid as core_fid
    evaluator = core_fid.Evaluator.from_config(data, fid=cfg.eval.fid, kid=cfg.eval.kid,
                                               num_samples=cfg.eval.num_samples, weights=cfg.eval.inception_weights,
                                               device=device, seed=cfg.seed)
    return lambda phase, steps, model: evaluator(model, steps)
