"""A model as a stock diffusers pipeline folder: the way every student built on `UNet2DModel` leaves the toolkit.

The folder is what `DDIMPipeline.save_pretrained` writes: the U-Net in safetensors and a `DDIMScheduler`
config that reproduces the model's own N-step sampler (DESIGN 3.9): the teacher's noise table, the model's
prediction type, diffusers' "trailing" grid, the clean end at abar = 1 and x_hat clipped as our sampler
clips it. For the same noise, `pipe(batch_size=B, generator=torch.Generator().manual_seed(s),
num_inference_steps=N, output_type="np")` returns `(model.sample(noise, N) + 1) / 2` for
`noise = torch.randn((B, C, H, W), generator=torch.Generator().manual_seed(s))`. That holds when N divides
the teacher's K steps: for other N, DDIMScheduler steps by K // N rather than along the grid, so such a
model is refused.

A class-conditional model (`UNet2DModel` with `num_class_embeds`) leaves as a `ConsistencyModelPipeline` folder
with the same `DDIMScheduler`: diffusers' only stock unconditional-image pipeline that passes `class_labels` to
the U-Net, and it drives any scheduler through `scale_model_input` (the identity for DDIM) and `step`, the loop
DDIMPipeline runs. `pipe(batch_size=B, class_labels=labels, generator=..., num_inference_steps=N,
output_type="np")` then returns `(model.sample(noise, N, labels=labels) + 1) / 2` for the same noise.
"""
import copy
import json
from pathlib import Path
from typing import Optional

EXPORTING_PRESETS = ("ddpm_tiny", "ddpm_small", "ddpm_cifar10", "diffusers")


def export_problem(model, steps: Optional[int] = None) -> Optional[str]:
    """Why `model` cannot be exported (one line), or None."""
    family, preset = model.family, model.config["preset"]
    if preset not in EXPORTING_PRESETS or family.name != "ddpm":
        return (f"a {preset} model of the {family.name} family, which does not export: only models on diffusers' UNet2DModel "
                f"(model.preset={', '.join(EXPORTING_PRESETS[:3])}, or a teacher.source=diffusers: teacher's own) "
                f"with the ddpm family do")
    steps = steps or model.info.get("steps")
    if steps and family.num_train_timesteps % int(steps):
        return (f"a {steps}-step model on a {family.num_train_timesteps}-step teacher does not export: diffusers' "
                f"DDIMScheduler steps by {family.num_train_timesteps} // {steps}, off the grid the model learnt "
                f"(distil to a step count that divides {family.num_train_timesteps})")
    return None


def scheduler(family):
    from diffusers import DDIMScheduler
    return DDIMScheduler(num_train_timesteps=family.num_train_timesteps, beta_schedule=family.beta_schedule,
                         beta_start=family.beta_start, beta_end=family.beta_end, trained_betas=family.trained_betas,
                         rescale_betas_zero_snr=family.rescale_betas_zero_snr, prediction_type=family.prediction_type,
                         clip_sample=True, clip_sample_range=1.0, set_alpha_to_one=True, steps_offset=0,
                         timestep_spacing="trailing")


def save_pipeline(model, out, card: str = "") -> Path:
    """Write `model` as a DDIMPipeline folder at `out` (plus `distill_sweeps.json`: what it is, its step
    count); ValueError (one line) when it does not export."""
    problem = export_problem(model)
    if problem:
        raise ValueError(problem)
    out = Path(out)
    unet = copy.deepcopy(model.net.unet).cpu().float().eval()
    pipeline_class(model)(unet=unet, scheduler=scheduler(model.family)).save_pretrained(out, safe_serialization=True)
    steps = model.info.get("steps")
    (out / "distill_sweeps.json").write_text(json.dumps({"steps": steps, "num_classes": model.num_classes,
                                                         "info": model.info}, indent=1, default=str))
    (out / "README.md").write_text(card or usage(steps, model.num_classes))
    return out


def pipeline_class(model):
    """DDIMPipeline for an unconditional model; ConsistencyModelPipeline (it takes `class_labels`) for a
    class-conditional one."""
    from diffusers import ConsistencyModelPipeline, DDIMPipeline
    return ConsistencyModelPipeline if model.num_classes else DDIMPipeline


def usage(steps, num_classes=None) -> str:
    n = steps or "N"
    labels = f"class_labels=torch.arange(16) % {num_classes}, " if num_classes else ""
    text = (f"# A distill-sweeps model as a diffusers pipeline\n\n```python\nimport torch\n"
            f"from diffusers import DiffusionPipeline\n\npipe = DiffusionPipeline.from_pretrained(\".\", "
            f"local_files_only=True)\nimages = pipe(batch_size=16, {labels}generator=torch.Generator().manual_seed(0), "
            f"num_inference_steps={n}, output_type=\"np\").images  # (16, H, W, C) in [0, 1]\n```\n\n"
            f"`num_inference_steps={n}` is the step count it was distilled for.\n")
    if num_classes:
        text += (f"\nThe model is class-conditional on {num_classes} classes: `class_labels` gives one class index "
                 f"per image (a ConsistencyModelPipeline driving a DDIMScheduler, the DDIM loop with labels).\n")
    return text
