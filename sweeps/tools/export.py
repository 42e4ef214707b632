"""`python -m sweeps.export MODEL_URI OUT_DIR`: a registered model as a stock diffusers pipeline folder.

MODEL_URI is `models:/NAME@ALIAS` or `models:/NAME/VERSION` (a student, or a teacher); its weights are
checked against their recorded sha256 first. OUT_DIR gets what `DDIMPipeline.save_pretrained` writes
(the U-Net in safetensors, a DDIMScheduler config that reproduces the model's own N-step sampler), a
README with the lines that sample it, and `distill_sweeps.json` (its step count and how it was made).
Only models on diffusers' UNet2DModel in the ddpm family export (`distill_core.export`); others get one
line and exit code 2.
"""
import argparse
from pathlib import Path

from ..common.errors import command, fail


@command
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps.export", description=__doc__.splitlines()[0])
    parser.add_argument("model_uri", help="models:/NAME@ALIAS or models:/NAME/VERSION, e.g. models:/distill-students@champion")
    parser.add_argument("out_dir", help="the folder to write (created; an existing non-empty folder is refused)")
    parser.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
    parser.add_argument("--pickle", action="store_true", help="allow a version stored only as a pickle")
    args = parser.parse_args(argv)
    out = Path(args.out_dir)
    if out.exists() and any(out.iterdir()):
        fail(f"out_dir: {out} exists and is not empty; give a new folder")
    import mlflow

    from distill_core.export import export_problem, save_pipeline

    from ..tracking.registry import RegistryError, load
    mlflow.set_tracking_uri(args.tracking_uri or mlflow.get_tracking_uri())
    try:
        model = load(args.model_uri, allow_pickle=args.pickle)
    except (RegistryError, mlflow.exceptions.MlflowException, ValueError) as e:
        fail(f"model_uri: {args.model_uri}: {str(e).splitlines()[0]}")
    problem = export_problem(model)
    if problem:
        fail(f"model_uri: {args.model_uri} is {problem}")
    save_pipeline(model, out)
    steps = model.info.get("steps")
    print(f"wrote {out} (DDIMPipeline; sample with num_inference_steps={steps or 'N'}: see {out / 'README.md'})")
    return 0
