"""Noise families (DESIGN 2, "Two axes, one runner"): `vp` (the papers' cosine VP process),
`edm` (the variance-exploding EDM process) and `ddpm` (a diffusers teacher's discrete table). Teacher training, the
distillation methods, the samplers, the evaluations and the registered models are written against `NoiseFamily`; a
new family is one new module here plus its entry in FAMILIES. `consistency` is not a process but a reading of
one (a consistency-distilled student's network over its teacher's family): it rebuilds from a saved config like
the others, but is not a `diffusion.family` to train a teacher on.
"""
from .base import Denoiser, NoiseFamily
from .consistency import Consistency
from .ddpm import DDPM
from .ddpm import PARAMETERIZATIONS as DDPM_PARAMETERIZATIONS
from .edm import EDM
from .vp import VP

FAMILIES = {"vp": VP, "edm": EDM, "ddpm": DDPM}
READINGS = {"consistency": Consistency}  # (a student's reading of a family: rebuilt from saved configs only)


def build(config=None) -> NoiseFamily:
    """A family from its plain config ({"family": "edm", "sigma_max": 80.0, ...}); VP v by default.
    Bad values raise one ValueError naming the public config key."""
    if isinstance(config, NoiseFamily):
        return config
    spec = dict(config or {})
    name = spec.pop("family", "vp")
    if name not in FAMILIES and name not in READINGS:
        raise ValueError(f"diffusion.family must be one of {', '.join(FAMILIES)}; got {name!r}")
    try:
        return {**FAMILIES, **READINGS}[name](**spec)
    except TypeError as e:  # a key this family does not have
        raise ValueError(f"diffusion: {e}".replace("__init__() ", "")) from None


def legacy_config(model_config: dict) -> dict:
    """The family of a model saved before families existed (always VP; its keys sat in the model config)."""
    return {"family": "vp", "parameterization": model_config.get("parameterization", "v"),
            **{k: model_config[k] for k in ("logsnr_min", "logsnr_max") if k in model_config}}


__all__ = ["Denoiser", "NoiseFamily", "VP", "EDM", "DDPM", "Consistency", "DDPM_PARAMETERIZATIONS", "FAMILIES",
           "READINGS", "build", "legacy_config"]
