"""NVlabs' EDM network pickles read as data: no code from the file ever runs.

NVlabs publishes its EDM teachers as pickles written by `torch_utils.persistence`: each network object
is stored as a call to `_reconstruct_persistent_obj(meta)`, where `meta` holds the *source code of its
module* (`module_src`), its class name and its state (the object's `__dict__`: `_parameters`, `_buffers`,
`_modules`, `init_kwargs`). NVlabs' loader `exec`s `module_src`: loading a file the usual way runs
code from a download. This reader is a `pickle.Unpickler` whose `find_class` answers a short, fixed list
of names and refuses every other with `RefusedGlobal` naming it:

- `torch_utils.persistence._reconstruct_persistent_obj` -> a `Record` (class name, module name, state);
  `module_src` is read as a string and dropped, never compiled;
- `torch.nn.modules.container.ModuleDict` / `ModuleList` / `Sequential` -> a `Record` of that name;
- tensors through torch's own rebuild functions (`torch._utils._rebuild_tensor_v2`, `_rebuild_parameter`),
  their storages through `torch.load(..., weights_only=True)` (a plain pickle stores each storage as
  torch.save bytes, which `torch.storage._load_from_bytes` would load with weights_only=False);
- plain containers and values: `collections.OrderedDict`, `dnnlib.EasyDict` (as a dict), numpy scalars
  and dtypes, torch dtypes and `torch.Size`.

`network(path)` returns what a loader needs: the preconditioning record (the snapshot's `ema`), its
network's class name and constructor arguments, and one flat state dict named as `nn.Module.state_dict`
would name it.
"""
import collections
import io
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch


class RefusedGlobal(ValueError):
    """The pickle asks for a global the reader does not answer (e.g. `os.system`)."""


class NotEDM(ValueError):
    """The file is not a pickle of NVlabs' format (missing, truncated, or another kind of object)."""


@dataclass
class Record:
    """An object as the file records it: never an instance of its class."""
    class_name: str
    module_name: str = ""
    state: dict = field(default_factory=dict)

    @property
    def init_kwargs(self) -> dict:
        return dict(self.state.get("_init_kwargs") or self.state.get("init_kwargs") or {})

    def __setstate__(self, state):  # (a container module's BUILD)
        self.state = dict(state)


def _persistent(meta) -> Record:
    meta = dict(meta)
    if meta.get("type") != "class":
        raise NotEDM(f"a persistent object of type {meta.get('type')!r}; NVlabs' networks are of type 'class'")
    return Record(str(meta["class_name"]), str(meta.get("module_name", "")), dict(meta.get("state") or {}))


def _container(name: str) -> type:
    """A stand-in class for a torch container module (pickle's NEWOBJ needs a class): its instances are Records."""
    return type(name, (Record,), {"__new__": lambda cls, *args: object.__new__(cls), "class_name": name,
                                  "module_name": "torch.nn.modules.container", "state": {}})


def _storage_from_bytes(data: bytes):
    return torch.load(io.BytesIO(data), weights_only=True)


def _numpy_scalar(dtype, data=None):
    return np.frombuffer(data, dtype=dtype)[0] if data is not None else dtype.type()


TORCH_DTYPES = {name: getattr(torch, name) for name in ("float16", "float32", "float64", "bfloat16", "int64",
                                                          "int32", "uint8", "bool")}
ANSWERS = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("dnnlib", "EasyDict"): dict, ("dnnlib.util", "EasyDict"): dict,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("torch", "Size"): torch.Size,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar, ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    **{("torch.nn.modules.container", n): _container(n) for n in ("ModuleDict", "ModuleList", "Sequential")},
    **{("torch", n): v for n, v in TORCH_DTYPES.items()},
}


class _Reader(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return ANSWERS[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"the pickle asks for {module}.{name}, which is refused: an EDM network file holds only "
                                f"NVlabs' persistent records, tensors and plain values, and nothing from it runs") from None

    def persistent_load(self, pid):
        raise RefusedGlobal(f"the pickle holds a persistent id {str(pid)[:60]!r} (torch.save's format, not NVlabs')")


def read(path) -> object:
    """The file's top-level object with every network as a `Record`; RefusedGlobal / NotEDM (one line)."""
    path = Path(path)
    if not path.is_file():
        raise NotEDM(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            return _Reader(f).load()
    except (RefusedGlobal, NotEDM):
        raise
    except Exception as e:  # noqa: BLE001 (a truncated or foreign file fails in many ways)
        raise NotEDM(f"{path}: not a readable NVlabs pickle ({type(e).__name__}: {str(e)[:120]})") from None


def state_dict(record: Record, prefix: str = "") -> dict:
    """The flat `{name: tensor}` of a recorded module tree, named as `nn.Module.state_dict` names it."""
    out = {}
    for kind in ("_parameters", "_buffers"):
        for name, value in (record.state.get(kind) or {}).items():
            if value is not None and name not in set(record.state.get("_non_persistent_buffers_set") or ()):
                out[prefix + name] = value.detach().clone() if isinstance(value, torch.Tensor) else value
    for name, child in (record.state.get("_modules") or {}).items():
        if isinstance(child, Record):
            out.update(state_dict(child, f"{prefix}{name}."))
    return out


@dataclass
class EDMFile:
    """What a snapshot holds for a loader: the preconditioning (class and arguments), its network's."""
    precond: str
    precond_kwargs: dict  # its own values (img_resolution, label_dim, sigma_data, beta_d, ...)
    network: str
    network_kwargs: dict
    state: dict  # the network's tensors (names without the preconditioning's `model.` prefix)


def network(path, key: Optional[str] = "ema") -> EDMFile:
    """The preconditioned network of an EDM snapshot (`pickle.dump(dict(ema=net, ...))`, or the net itself)."""
    top = read(path)
    precond = top.get(key) if isinstance(top, dict) else top
    if not isinstance(precond, Record):
        raise NotEDM(f"{path}: no NVlabs network under {key!r} (found {type(precond).__name__})")
    inner = (precond.state.get("_modules") or {}).get("model")
    if not isinstance(inner, Record):
        raise NotEDM(f"{path}: {precond.class_name} holds no network under 'model'")
    own = {k: v for k, v in precond.state.items() if not k.startswith("_") and k != "training"}  # sigma_data, ...
    return EDMFile(precond.class_name, own, inner.class_name, inner.init_kwargs, state_dict(inner))


SUPPORTED_PRECONDITIONING = ("EDMPrecond",)


def model_config(f: EDMFile) -> tuple:
    """(data_shape, family, network_overrides) of a DiffusionModel for the file: EDMPrecond on the `edm` family
    with the file's sigma_data; ValueError (one line) for another preconditioning or an unknown network."""
    from .models.edm_nets import ARCHITECTURES
    if f.precond not in SUPPORTED_PRECONDITIONING:
        raise ValueError(f"the file's preconditioning is {f.precond}; supported: {', '.join(SUPPORTED_PRECONDITIONING)} "
                         f"(EDM's own, the edm family; VP/VE-preconditioned files are refused)")
    if f.network not in ARCHITECTURES:
        raise ValueError(f"the file's network is {f.network}, not known here (known: {', '.join(ARCHITECTURES)})")
    kwargs = {k: v for k, v in f.network_kwargs.items() if k not in ("in_channels", "out_channels")}
    shape = (int(f.network_kwargs["in_channels"]), int(kwargs["img_resolution"]), int(kwargs["img_resolution"]))
    family = {"family": "edm", "sigma_data": float(f.precond_kwargs.get("sigma_data", 0.5))}
    return shape, family, {"architecture": f.network, "kwargs": kwargs}


def build_model(f: EDMFile, family: Optional[dict] = None, info: Optional[dict] = None, where: str = "the file"):
    """A `DiffusionModel` carrying `f`'s network and weights, on the edm family (`family`: its sampler settings;
    default: the file's sigma_data and EDM's defaults); ValueError (one line) where the tensors do not fit."""
    from .diffusion import DiffusionModel
    shape, own, overrides = model_config(f)
    model = DiffusionModel("edm", shape, family or own, network_overrides=overrides, info=info)
    try:
        model.net.inner.load_state_dict(f.state, strict=True)
    except RuntimeError as e:
        first = str(e).split("\n\t")[1] if "\n\t" in str(e) else str(e)
        raise ValueError(f"{where}: the file's tensors do not fit the {f.network} its arguments describe ({first[:200]})") from None
    return model.eval()


def load_model(path, key: Optional[str] = "ema"):
    """A `DiffusionModel` (edm family) carrying the file's network and weights; nothing from the file runs."""
    return build_model(network(path, key), info={"role": "teacher", "source": f"edm:{path}"}, where=str(path))
