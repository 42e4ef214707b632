"""A small diffusers DDPM teacher made here, as a published one is: a `UNet2DModel` (preset ddpm_tiny) trained
on digits in the DDPM family (epsilon prediction, linear betas, 1000 steps), then written as
`DDPMPipeline.save_pretrained` writes a model folder (unet/ in safetensors, scheduler/ with a DDPMScheduler
config). Shared by the tests of the diffusers teacher source, the family and the export."""
from pathlib import Path


def train(updates: int = 400, parameterization: str = "eps", seed: int = 0):
    from distill_core import data
    from distill_core.teacher import TeacherConfig, train_teacher
    cfg = TeacherConfig(preset="ddpm_tiny", parameterization=parameterization, weighting="snr_plus_one",
                        updates=updates, batch_size=128, lr=2e-3, warmup=50, ema=0.99, seed=seed,
                        family={"family": "ddpm"})
    return train_teacher(data.load("digits", seed=seed), cfg, progress=False)


def save_folder(model, out: Path) -> Path:
    """`model` (ddpm family, a UNet2DModel network) as a DDPMPipeline folder."""
    from diffusers import DDPMPipeline, DDPMScheduler
    f = model.family
    scheduler = DDPMScheduler(num_train_timesteps=f.num_train_timesteps, beta_schedule=f.beta_schedule,
                              beta_start=f.beta_start, beta_end=f.beta_end, prediction_type=f.prediction_type)
    DDPMPipeline(unet=model.net.unet.eval(), scheduler=scheduler).save_pretrained(out, safe_serialization=True)
    return Path(out)
