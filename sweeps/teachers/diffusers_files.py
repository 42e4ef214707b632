"""A diffusers model folder read as a teacher: where its U-Net and scheduler are, what they say, and
every check that can be made before any run exists (each a `TeacherError`, one line).

Folders as `UNet2DModel.save_pretrained` writes them (config.json + weights at the top, the
scheduler's config beside them) and as `DDPMPipeline.save_pretrained` writes them (`unet/` and
`scheduler/` subfolders) are both read. Weights come from safetensors; a pickled `.bin` only when the
user allows pickles (`registry.pickle=true`), and then through `torch.load(weights_only=True)`.
"""
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from distill_core.families.ddpm import BETA_SCHEDULES, PREDICTION_TYPES

from .reference import TeacherError

SAFETENSORS, PICKLED = "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"
SCHEDULER_KEYS = ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "trained_betas",
                  "rescale_betas_zero_snr", "prediction_type")


@dataclass(frozen=True)
class Folder:
    source: str  # as the user gave it (diffusers:PATH or hf:REPO@REVISION)
    unet_dir: Path
    scheduler_file: Path
    revision: str = ""  # the hub commit of an hf: source

    def unet_config(self) -> dict:
        return read_json(self.unet_dir / "config.json", self.source)

    def scheduler_config(self) -> dict:
        return read_json(self.scheduler_file, self.source)

    def weights(self, allow_pickle: bool) -> Path:
        path = self.unet_dir / SAFETENSORS
        if path.is_file():
            return path
        if (self.unet_dir / PICKLED).is_file():
            if allow_pickle:
                return self.unet_dir / PICKLED
            raise TeacherError(f"teacher.source={self.source}: the U-Net's weights are only a pickled {PICKLED}; "
                               f"save them as safetensors (save_pretrained's default), or set registry.pickle=true if you trust it")
        raise TeacherError(f"teacher.source={self.source}: no {SAFETENSORS} in {self.unet_dir}")


def read_json(path: Path, source: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise TeacherError(f"teacher.source={source}: cannot read {path} ({type(e).__name__})") from None


def locate(source: str, root: Path, revision: str = "") -> Folder:
    """The U-Net folder and the scheduler config in `root` (top level or `unet/` and `scheduler/`)."""
    if not root.is_dir():
        raise TeacherError(f"teacher.source={source}: no folder at {root} (expected a diffusers model folder "
                           f"as save_pretrained writes it)")
    unet = next((d for d in (root / "unet", root) if (d / "config.json").is_file()), None)
    if unet is None:
        raise TeacherError(f"teacher.source={source}: no U-Net config in {root} (config.json or unet/config.json)")
    scheduler = next((f for f in (root / "scheduler" / "scheduler_config.json", root / "scheduler_config.json")
                      if f.is_file()), None)
    if scheduler is None:
        raise TeacherError(f"teacher.source={source}: no scheduler config in {root} "
                           f"(scheduler_config.json or scheduler/scheduler_config.json)")
    return Folder(source, unet, scheduler, revision)


def family_config(folder: Folder) -> dict:
    """The DDPM family the teacher's scheduler config describes (as the core's plain config)."""
    sc = folder.scheduler_config()
    prediction = sc.get("prediction_type", "epsilon")
    if prediction not in PREDICTION_TYPES:
        raise TeacherError(f"teacher.source={folder.source}: prediction_type must be one of "
                           f"{', '.join(PREDICTION_TYPES)}; its scheduler says {prediction!r}")
    if sc.get("trained_betas") is None and sc.get("beta_schedule", "linear") not in BETA_SCHEDULES:
        raise TeacherError(f"teacher.source={folder.source}: beta_schedule must be one of {', '.join(BETA_SCHEDULES)} "
                           f"(or trained_betas); its scheduler says {sc.get('beta_schedule')!r}")
    spec = {k: sc[k] for k in SCHEDULER_KEYS[:-1] if sc.get(k) is not None}
    return {"family": "ddpm", **spec, "parameterization": PREDICTION_TYPES[prediction]}


def image_shape(folder: Folder) -> tuple:
    """(C, H, W) of the teacher's images; only a UNet2DModel predicting one image is read."""
    uc = folder.unet_config()
    if uc.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise TeacherError(f"teacher.source={folder.source}: the network is a {uc.get('_class_name')}; only "
                           f"diffusers' UNet2DModel (unconditional images) can teach here")
    channels, size = uc.get("in_channels", 3), uc.get("sample_size")
    if uc.get("out_channels", channels) != channels:
        raise TeacherError(f"teacher.source={folder.source}: out_channels={uc.get('out_channels')} differs from "
                           f"in_channels={channels} (a learned-variance model); only one image per call can teach here")
    h, w = (size, size) if isinstance(size, int) else tuple(size or (0, 0))
    return int(channels), int(h), int(w)


def fingerprint(folder: Folder, weights: Path) -> tuple[str, str]:
    """(sha256 of the weights, the teacher's key: a hash of the weights' sha256 and both configs)."""
    h = hashlib.sha256()
    with open(weights, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    spec = {"weights": h.hexdigest(), "unet": folder.unet_config(),
            "scheduler": {k: folder.scheduler_config().get(k) for k in SCHEDULER_KEYS}}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    return h.hexdigest(), f"diffusers-{key}"
