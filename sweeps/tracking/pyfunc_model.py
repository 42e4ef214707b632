"""MLflow models-from-code: the pyfunc of every registered teacher and student.

MLflow copies this file into each logged model and runs it on `mlflow.pyfunc.load_model(uri)`. It
rebuilds the model from the model's two artifacts, `weights.pt` (plain config + tensors, read with
torch.load(weights_only=True) after its sha256 is checked) and `config.json`: nothing is unpickled.
`predict(noise)` samples from noise of shape (B, *data_shape) at the model's own step count (a
student's distilled steps; `params={"steps": N}` for another), with the model's own sampler. A class-conditional
model takes two named inputs, `noise` and `labels` (one class index per sample): `predict({"noise": ...,
"labels": ...})`, or `{"inputs": {"noise": ..., "labels": ...}}` in a request to `mlflow models serve`.
"""
import json
from pathlib import Path

import mlflow
from mlflow.pyfunc import PythonModel


TEACHER_STEPS = 64  # a teacher's default number of steps in `predict` (it has no distilled count)


class DiffusionPyfunc(PythonModel):
    _skip_type_hint_validation = True  # the input is described by the signature (MLflow would warn at each load)

    def load_context(self, context):
        from distill_core.checkpoint import load_checked
        from distill_core.diffusion import DiffusionModel
        config = json.loads(Path(context.artifacts["config"]).read_text())
        state = load_checked(context.artifacts["weights"], expected_sha256=config["weights_sha256"])
        self.model = DiffusionModel.from_state(state)

    def predict(self, context, model_input, params=None):
        import numpy as np
        import torch
        steps = int((params or {}).get("steps") or self.model.info.get("steps") or TEACHER_STEPS)
        labels = None
        if isinstance(model_input, dict):  # named inputs, e.g. from a REST request's "inputs"
            labels = model_input.get("labels")
            model_input = model_input["noise"] if "noise" in model_input else next(iter(model_input.values()))
        noise = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        if labels is not None:
            labels = torch.as_tensor(np.asarray(labels).reshape(-1).astype(np.int64))
        return self.model.sample(noise, steps, labels=labels).cpu().numpy()


mlflow.models.set_model(DiffusionPyfunc())
