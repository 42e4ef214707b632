"""NVlabs' EDM network pickles read as data, the way a format parser reads its format: no code from the file ever
runs, and nothing a file holds can crash, poison or exhaust the process.

NVlabs publishes its EDM teachers as pickles written by `torch_utils.persistence`: each network object is stored
as a call to `_reconstruct_persistent_obj(meta)`, where `meta` holds the *source code of its module*
(`module_src`), its class name and its state (the object's `__dict__`: `_parameters`, `_buffers`, `_modules`,
`_init_kwargs`). NVlabs' loader `exec`s `module_src`. This reader accepts what NVlabs' `persistence` +
`pickle.dump` write and nothing else (`distill_core.edm_file`):

- a closed grammar (`grammar`): the opcode stream is scanned first and any opcode outside NVlabs' format, or any
  global the reader does not answer, is refused by name before anything is built; REDUCE and NEWOBJ call only
  the reader's own per-read answers, BUILD gives state only to its own records (never to a function, a dtype, a
  tensor), containers are filled only when they are plain;
- tensors proved against their storages before they exist (`storage`): storages parsed from torch's legacy
  layout by the reader itself, dtypes from a list, sizes and strides checked, every tensor within its storage,
  the tensors' bytes no more than the storages' (the file's own size bounds everything: at most MAX_FILE_BYTES);
- the network proved against its tensors before it is built (`arguments`): its recorded constructor arguments
  type- and range-checked against the architecture, the network built on the meta device and compared parameter
  by parameter with the file's tensors, only then allocated;
- bounded work: names are strings of at most 256 characters, the module tree at most MAX_DEPTH deep and a tree
  (a record met twice is refused), so any file is read or refused in time and memory proportional to its size.

Every failure is one `EDMFileError` line (a ValueError). Needs torch >= 2.6 (pyproject): the reader never calls
`torch.load` on the file, and older weights-only loaders have known bypasses elsewhere in the project.

`network(path)` returns what a loader needs: the preconditioning record (the snapshot's `ema`), its network's
class name and constructor arguments, and one flat state dict named as `nn.Module.state_dict` names it.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from .edm_file.arguments import check_arguments, check_fit
from .edm_file.errors import EDMFileError, NotEDM, Refused, RefusedGlobal, short
from .edm_file.grammar import Strict, scan
from .edm_file.values import Record, answers

MAX_FILE_BYTES = 1536 * 2 ** 20  # a published EDM file is under 1.2 GB
MAX_DEPTH = 32  # levels of modules below the preconditioning (EDM's are 4)

__all__ = ["EDMFileError", "NotEDM", "Refused", "RefusedGlobal", "Record", "EDMFile", "read", "state_dict",
           "network", "model_config", "build_model", "load_model", "MAX_FILE_BYTES"]


def read(path) -> object:
    """The file's top-level object with every network as a `Record`; EDMFileError (one line) otherwise."""
    path = Path(path)
    if not path.is_file():
        raise NotEDM(f"{path}: no such file")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise Refused(f"{path}: {size / 2 ** 20:.0f} MB, more than an EDM network file holds "
                      f"({MAX_FILE_BYTES / 2 ** 20:.0f} MB at most)")
    table, _ = answers()
    try:
        with open(path, "rb") as f:
            if f.read(4) == b"PK\x03\x04":
                raise NotEDM("a zip archive (torch.save's format), not NVlabs' pickle")
            f.seek(0)
            scan(f, table)
            return Strict(f, table).load()
    except EDMFileError as e:
        raise type(e)(f"{path}: {e}") from None
    except RecursionError:
        raise Refused(f"{path}: nested deeper than any NVlabs file") from None
    except Exception as e:  # noqa: BLE001 (a truncated or foreign file fails in many ways)
        raise NotEDM(f"{path}: not a readable NVlabs pickle ({type(e).__name__}: {short(str(e), 100)})") from None


def _entries(record: Record, kind: str) -> dict:
    value = record.state.get(kind) or {}
    if type(value) is not dict:
        raise Refused(f"{record.class_name}'s {kind} is a {type(value).__name__}, not a dict")
    return value


def state_dict(record: Record, prefix: str = "", seen: Optional[set] = None, depth: int = 0) -> dict:
    """The flat `{name: tensor}` of a recorded module tree, named as `nn.Module.state_dict` names it; the tree is
    walked once (a record met twice, or deeper than MAX_DEPTH, is refused)."""
    seen = set() if seen is None else seen
    if id(record) in seen or depth > MAX_DEPTH:
        raise Refused(f"the module tree {'re-uses a record' if id(record) in seen else 'is too deep'} at "
                      f"{short(prefix) or 'its root'}: NVlabs' networks are trees of a few levels")
    seen.add(id(record))
    skip = record.state.get("_non_persistent_buffers_set") or set()
    if type(skip) is not set:
        raise Refused(f"{record.class_name}'s _non_persistent_buffers_set is not a set")
    out = {}
    for kind in ("_parameters", "_buffers"):
        for name, value in _entries(record, kind).items():
            if type(name) is not str or len(name) > 256:
                raise Refused(f"a {kind[1:-1]} name that is not a short string under {short(prefix) or 'the root'}")
            if value is not None and name not in skip:
                if not isinstance(value, torch.Tensor):
                    raise Refused(f"{short(prefix + name)} is a {type(value).__name__}, not a tensor")
                out[prefix + name] = value
    for name, child in _entries(record, "_modules").items():
        if type(name) is not str or len(name) > 256:
            raise Refused(f"a module name that is not a short string under {short(prefix) or 'the root'}")
        if isinstance(child, Record):
            out.update(state_dict(child, f"{prefix}{name}.", seen, depth + 1))
        elif child is not None:
            raise Refused(f"{short(prefix + name)} is a {type(child).__name__}, not a recorded module")
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
    """The preconditioned network of an EDM snapshot (`pickle.dump(dict(ema=net, ...))`, or the net itself), its
    tensors named and checked to be a tree; EDMFileError (one line) otherwise."""
    top = read(path)
    precond = top.get(key) if type(top) is dict else top
    if not isinstance(precond, Record):
        raise NotEDM(f"{path}: no NVlabs network under {key!r} (found a {type(precond).__name__})")
    try:
        inner = _entries(precond, "_modules").get("model")
        if not isinstance(inner, Record):
            raise NotEDM(f"{precond.class_name} holds no network under 'model'")
        own = {k: v for k, v in precond.state.items() if type(k) is str and not k.startswith("_") and k != "training"
               and type(v) in (int, float, str, bool, type(None))}  # sigma_data, label_dim, ... (plain values only)
        return EDMFile(precond.class_name, own, inner.class_name, inner.init_kwargs, state_dict(inner))
    except EDMFileError as e:
        raise type(e)(f"{path}: {e}") from None


SUPPORTED_PRECONDITIONING = ("EDMPrecond",)


def model_config(f: EDMFile) -> tuple:
    """(data_shape, family, network_overrides) of a DiffusionModel for the file: EDMPrecond on the `edm` family
    with the file's sigma_data; EDMFileError (one line) for another preconditioning, an unknown network or
    arguments outside the architecture's."""
    from .models.edm_nets import ARCHITECTURES
    if f.precond not in SUPPORTED_PRECONDITIONING:
        raise EDMFileError(f"the file's preconditioning is {short(f.precond)}; supported: "
                           f"{', '.join(SUPPORTED_PRECONDITIONING)} (EDM's own, the edm family; VP/VE-preconditioned "
                           f"files are refused)")
    if f.network not in ARCHITECTURES:
        raise EDMFileError(f"the file's network is {short(f.network)}, not known here (known: {', '.join(ARCHITECTURES)})")
    full = check_arguments(ARCHITECTURES[f.network], f.network_kwargs)
    sigma_data = f.precond_kwargs.get("sigma_data", 0.5)
    if type(sigma_data) not in (int, float) or not 0 < sigma_data <= 10:
        raise Refused("the preconditioning's sigma_data is not a number in (0, 10]")
    kwargs = {k: v for k, v in full.items() if k not in ("in_channels", "out_channels")}
    if full["out_channels"] != full["in_channels"]:
        raise Refused(f"a network of {full['in_channels']} input and {full['out_channels']} output channels "
                      f"(EDM's denoisers give back what they take)")
    shape = (full["in_channels"], kwargs["img_resolution"], kwargs["img_resolution"])
    return shape, {"family": "edm", "sigma_data": float(sigma_data)}, {"architecture": f.network, "kwargs": kwargs}


def build_model(f: EDMFile, family: Optional[dict] = None, info: Optional[dict] = None, where: str = "the file"):
    """A `DiffusionModel` carrying `f`'s network and weights, on the edm family (`family`: its sampler settings;
    default: the file's sigma_data and EDM's defaults). The network is proved against the tensors on the meta
    device before it is allocated; EDMFileError (one line) where they do not fit."""
    from .diffusion import DiffusionModel
    from .models.edm_nets import ARCHITECTURES
    shape, own, overrides = model_config(f)
    check_fit(ARCHITECTURES[f.network], check_arguments(ARCHITECTURES[f.network], f.network_kwargs), f.state, where)
    model = DiffusionModel("edm", shape, family or own, network_overrides=overrides, info=info)
    try:
        model.net.inner.load_state_dict(f.state, strict=True)
    except RuntimeError as e:  # (a dtype the parameters cannot take)
        first = str(e).split("\n\t")[1] if "\n\t" in str(e) else str(e)
        raise EDMFileError(f"{where}: the file's tensors do not fit the {f.network} its arguments describe "
                           f"({short(first, 200)})") from None
    return model.eval()


def load_model(path, key: Optional[str] = "ema"):
    """A `DiffusionModel` (edm family) carrying the file's network and weights; nothing from the file runs."""
    return build_model(network(path, key), info={"role": "teacher", "source": f"edm:{path}"}, where=str(path))
