"""NVlabs' EDM file format written by our own code: a small pickle assembler over `pickletools`' opcodes, and a
writer that lays one of our EDM networks out as NVlabs' `persistence` + `pickle.dump(dict(ema=net, ...))` would.

The assembler writes exactly the opcodes it is given, so the reader's tests can also craft what no pickler
writes (a BUILD on a function, a memo re-used a million times, a stride of 0, an object dtype). Values:
None/bool/int/float/str/bytes/tuple/list/dict/set as themselves; `Global(module, name)` (STACK_GLOBAL, or the
GLOBAL opcode with `opcode="GLOBAL"`), `Call(fn, args)` (REDUCE), `New(cls, args)` (NEWOBJ), `Build(obj, state)`
(BUILD), `Memo(value)` / `Get(index)` (MEMOIZE / BINGET), `Ops(bytes)` (raw opcodes).
"""
import io
import pickle
import struct
import warnings
from collections import OrderedDict
from typing import Any, NamedTuple

import torch
from torch import nn


class Global(NamedTuple):
    module: str
    name: str
    opcode: str = "STACK_GLOBAL"


class Call(NamedTuple):
    fn: Any
    args: tuple


class New(NamedTuple):
    cls: Any
    args: tuple


class Build(NamedTuple):
    obj: Any
    state: Any


class Memo(NamedTuple):
    value: Any
    label: str = ""  # a name for `Get` (the memo's index is the assembler's to count)


class Get(NamedTuple):
    index: Any  # a memo index, or a `Memo`'s label


class Ops(NamedTuple):
    raw: bytes


class Assembler:
    def __init__(self, protocol: int = 4):
        self.out, self.protocol, self.memo = io.BytesIO(), protocol, 0
        self.globals = {}  # (module, name) -> memo index: each global written once, then fetched (as pickle does)
        self.labels = {}  # Memo label -> memo index

    def op(self, code: bytes, arg: bytes = b"") -> None:
        self.out.write(code + arg)

    def emit(self, v) -> None:  # noqa: C901 (one branch per kind of value)
        if isinstance(v, Ops):
            self.op(v.raw)
        elif v is None:
            self.op(pickle.NONE)
        elif v is True or v is False:
            self.op(pickle.NEWTRUE if v else pickle.NEWFALSE)
        elif isinstance(v, int):
            self.emit_int(v)
        elif isinstance(v, float):
            self.op(pickle.BINFLOAT, struct.pack(">d", v))
        elif isinstance(v, str):
            data = v.encode("utf-8", "surrogatepass")
            self.op(pickle.BINUNICODE, struct.pack("<I", len(data)) + data)
        elif isinstance(v, bytes):
            self.op(pickle.BINBYTES, struct.pack("<I", len(v)) + v)
        elif isinstance(v, Global):
            self.emit_global(v)
        elif isinstance(v, Call):
            self.emit(v.fn), self.emit(tuple(v.args)), self.op(pickle.REDUCE)
        elif isinstance(v, New):
            self.emit(v.cls), self.emit(tuple(v.args)), self.op(pickle.NEWOBJ)
        elif isinstance(v, Build):
            self.emit(v.obj), self.emit(v.state), self.op(pickle.BUILD)
        elif isinstance(v, Memo):
            self.emit(v.value)
            self.labels[v.label] = self.memoize()
        elif isinstance(v, Get):
            self.op(pickle.LONG_BINGET, struct.pack("<I", self.labels.get(v.index, v.index)))
        elif isinstance(v, tuple):
            self.op(pickle.MARK), [self.emit(x) for x in v], self.op(pickle.TUPLE)
        elif isinstance(v, list):
            self.op(pickle.EMPTY_LIST)
            if v:
                self.op(pickle.MARK), [self.emit(x) for x in v], self.op(pickle.APPENDS)
        elif isinstance(v, (set, frozenset)):
            self.op(pickle.EMPTY_SET)
            if v:
                self.op(pickle.MARK), [self.emit(x) for x in v], self.op(pickle.ADDITEMS)
        elif isinstance(v, dict):
            self.op(pickle.EMPTY_DICT)
            if v:
                self.op(pickle.MARK)
                for key, value in v.items():
                    self.emit(key), self.emit(value)
                self.op(pickle.SETITEMS)
        else:
            raise TypeError(f"the assembler has no opcode for {type(v).__name__}")

    def emit_int(self, v: int) -> None:
        if -2 ** 31 <= v < 2 ** 31:
            self.op(pickle.BININT, struct.pack("<i", v))
        else:
            data = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
            self.op(pickle.LONG1, bytes([len(data)]) + data)

    def memoize(self) -> int:
        self.op(pickle.MEMOIZE)
        self.memo += 1
        return self.memo - 1

    def emit_global(self, g: Global) -> None:
        if g.opcode == "GLOBAL":
            self.op(pickle.GLOBAL, f"{g.module}\n{g.name}\n".encode())
            return
        key = (g.module, g.name)
        if key in self.globals:
            self.emit(Get(self.globals[key]))
            return
        self.emit(g.module), self.emit(g.name), self.op(pickle.STACK_GLOBAL)
        self.globals[key] = self.memoize()

    def dumps(self, top) -> bytes:
        self.op(pickle.PROTO, bytes([self.protocol]))
        self.emit(top)
        self.op(pickle.STOP)
        return self.out.getvalue()


# --- NVlabs' layout ---
RECONSTRUCT = Global("torch_utils.persistence", "_reconstruct_persistent_obj")
ORDERED = Global("collections", "OrderedDict")
REBUILD_TENSOR = Global("torch._utils", "_rebuild_tensor_v2")
REBUILD_PARAMETER = Global("torch._utils", "_rebuild_parameter")
STORAGE = Global("torch.storage", "_load_from_bytes")
HOOKS = ("_backward_pre_hooks", "_backward_hooks", "_forward_hooks", "_forward_hooks_with_kwargs",
         "_forward_hooks_always_called", "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_state_dict_hooks",
         "_state_dict_pre_hooks", "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks")


def storage_bytes(t: torch.Tensor) -> bytes:
    """A tensor's storage as `pickle.dump` writes it: torch's legacy serialisation of the storage alone."""
    buf = io.BytesIO()
    with warnings.catch_warnings():  # (TypedStorage is deprecated; it is what NVlabs' files hold: torch.FloatStorage)
        warnings.simplefilter("ignore")
        torch.save(t.detach().contiguous().cpu().storage(), buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


def tensor(t: torch.Tensor, storage=None, offset=0, size=None, stride=None):
    """`_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)`, a real tensor's by default."""
    t = t.detach().contiguous()
    storage = Call(STORAGE, (storage_bytes(t),)) if storage is None else storage
    return Call(REBUILD_TENSOR, (storage, offset, tuple(t.shape if size is None else size),
                                 tuple(t.stride() if stride is None else stride), False, Call(ORDERED, ())))


def parameter(t: torch.Tensor):
    return Call(REBUILD_PARAMETER, (tensor(t), True, Call(ORDERED, ())))


def module_state(m: nn.Module, extra: dict, children: dict) -> dict:
    state = {"training": False, "_parameters": {n: parameter(p) for n, p in m._parameters.items() if p is not None},
             "_buffers": {n: tensor(b) for n, b in m._buffers.items() if b is not None},
             "_non_persistent_buffers_set": set(m._non_persistent_buffers_set)}
    state.update({h: Call(ORDERED, ()) for h in HOOKS})
    state["_modules"] = children
    state.update(extra)
    return state


def persistent(class_name: str, state: dict):
    return Call(RECONSTRUCT, ({"type": "class", "version": 6, "module_src": "# (not NVlabs' source: never read)\n",
                               "class_name": class_name, "state": state},))


def record(m: nn.Module, extra: dict = None):
    """`m` as NVlabs writes a module: torch's containers as themselves (NEWOBJ + BUILD), every other module as a
    persistent record of its class."""
    children = {name: record(child) for name, child in m._modules.items() if child is not None}
    if isinstance(m, (nn.ModuleDict, nn.ModuleList, nn.Sequential)):
        cls = Global("torch.nn.modules.container", type(m).__name__)
        return Build(New(cls, ()), module_state(m, {}, children))
    return persistent(type(m).__name__, module_state(m, {"_init_args": (), "_init_kwargs": {}, **(extra or {})},
                                                     children))


def edm_file(model, sigma_data: float = 0.5, kwargs: dict = None, top=None, network_class: str = None) -> bytes:
    """One of our EDM DiffusionModels (`model.net.inner`: SongUNet or DhariwalUNet) as NVlabs' snapshot file:
    `{"ema": EDMPrecond(model=<the network>), "augment_pipe": None}`. `kwargs`: recorded constructor arguments in
    place of the network's own; `top(ema)`: what the file holds around the preconditioning record; `network_class`:
    the network's recorded class name in place of its own."""
    net = model.net.inner
    kwargs = kwargs if kwargs is not None else \
        {"in_channels": model.data_shape[0], "out_channels": model.data_shape[0], **model.net.kwargs}
    inner = record(net, {"_init_kwargs": kwargs})
    if network_class:
        inner = persistent(network_class, inner.args[0]["state"])
    label_dim = int(model.net.kwargs.get("label_dim") or 0)
    precond = {"img_resolution": model.data_shape[-1], "img_channels": model.data_shape[0], "label_dim": label_dim,
               "use_fp16": False, "sigma_min": 0, "sigma_max": float("inf"), "sigma_data": sigma_data}
    state = module_state(nn.Module(), {**precond, "_init_args": (),
                                       "_init_kwargs": {**precond, "model_type": type(net).__name__}}, {"model": inner})
    ema = persistent("EDMPrecond", state)
    return Assembler().dumps(top(ema) if top else {"ema": ema, "augment_pipe": None})


def write_edm_file(path, model, sigma_data: float = 0.5):
    path.write_bytes(edm_file(model, sigma_data))
    return path


def random_edm_model(preset: str, seed: int = 0, scale: float = 0.05):
    """A published-size EDM network (`edm_ncsnpp_cifar10`, ...) with random weights (every parameter perturbed,
    so no zero-initialised layer hides a mapping mistake)."""
    from distill_core.diffusion import DiffusionModel
    from distill_core.models import PRESETS
    spec = PRESETS[preset]
    shape = (3, spec["kwargs"]["img_resolution"], spec["kwargs"]["img_resolution"])
    torch.manual_seed(seed)
    model = DiffusionModel("edm", shape, {"family": "edm"},
                           network_overrides={"architecture": spec["architecture"], "kwargs": dict(spec["kwargs"])})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model.eval()


__all__ = ["Assembler", "Global", "Call", "New", "Build", "Memo", "Get", "Ops", "OrderedDict", "edm_file",
           "write_edm_file", "random_edm_model", "tensor", "parameter", "storage_bytes", "persistent", "record"]
