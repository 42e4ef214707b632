"""The names an EDM file may ask for, answered by per-read objects (`answers()`): nothing a file does touches a
function, a class or a default that outlives its read.

- `torch_utils.persistence._reconstruct_persistent_obj(meta)` -> a `Record` (class name, state); the module source
  in `meta` is checked to be a string and dropped, never compiled;
- torch's container modules (`ModuleDict`, `ModuleList`, `Sequential`) -> `Record`s made by NEWOBJ, given their
  state by BUILD;
- tensors and storages (`storage.Tensors`), proved against each other;
- `collections.OrderedDict()` and `dnnlib.EasyDict()` -> plain dicts; `torch.Size` -> a tuple of integers; torch's
  dtypes as values;
- numpy scalars of plain numeric dtypes (`numpy.dtype('f8', False, True)` with BUILD state
  `(3, '<', None, None, None, -1, -1, 0)`), decoded with `struct` into Python numbers (no structured or object
  dtype ever reaches numpy).
"""
import struct
from dataclasses import dataclass, field

import torch

from .errors import NotEDM, Refused
from .grammar import MAX_NAME, Answer, Buildable
from .storage import Tensors

CONTAINERS = ("ModuleDict", "ModuleList", "Sequential")
NUMPY = {"f2": "<e", "f4": "<f", "f8": "<d", "i1": "<b", "i2": "<h", "i4": "<i", "i8": "<q", "u1": "<B", "u2": "<H",
         "u4": "<I", "u8": "<Q", "b1": "<?"}  # plain numeric dtypes -> struct formats
TORCH_DTYPES = ("float16", "float32", "float64", "bfloat16", "int64", "int32", "uint8", "bool")


@dataclass
class Record(Buildable):
    """An object as the file records it: never an instance of its class."""
    class_name: str
    state: dict = field(default_factory=dict)

    @property
    def init_kwargs(self) -> dict:
        kwargs = self.state.get("_init_kwargs") or self.state.get("init_kwargs") or {}
        if type(kwargs) is not dict:
            raise Refused(f"{self.class_name}'s recorded arguments are a {type(kwargs).__name__}, not a dict")
        return dict(kwargs)

    def build(self, state) -> None:  # (a container module's BUILD)
        if type(state) is not dict or self.state:
            raise Refused(f"a BUILD on {self.class_name} with a {type(state).__name__} (or a second one)")
        self.state = state


def name(value, what: str) -> str:
    if type(value) is not str or not 0 < len(value) <= MAX_NAME:
        raise Refused(f"{what} is not a name (a string of 1 to {MAX_NAME} characters)")
    return value


def persistent(meta=None, *extra) -> Record:
    if type(meta) is not dict or extra:
        raise Refused("_reconstruct_persistent_obj called with something other than one dict")
    if meta.get("type") != "class":
        raise NotEDM("a persistent object whose type is not 'class' (NVlabs' networks are)")
    if type(meta.get("module_src", "")) is not str or type(meta.get("state")) is not dict:
        raise Refused("a persistent record whose module source is not a string or whose state is not a dict")
    return Record(name(meta.get("class_name"), "a persistent record's class name"), meta["state"])


def container(kind: str):
    def make(*args):
        if args:
            raise Refused(f"{kind} made with arguments")
        return Record(kind)
    return make


def empty(kind: str):
    def make(*args):
        if args:
            raise Refused(f"{kind} called with arguments (NVlabs' files fill them by SETITEMS)")
        return {}
    return make


def size(dims=None, *extra) -> tuple:
    if extra or type(dims) is not tuple or len(dims) > 8 or any(type(d) is not int or d < 0 for d in dims):
        raise Refused("torch.Size of something other than up to 8 non-negative integers")
    return dims


class DType(Buildable):
    """`numpy.dtype(name, align, copy)` of a plain numeric dtype; its BUILD state must be the plain one."""

    def __init__(self, kind=None, align=False, copy=True, *extra):
        if type(kind) is not str or kind.lstrip("<|=") not in NUMPY or extra or type(align) is not bool:
            raise Refused("a numpy dtype outside the plain numeric ones (f2 f4 f8 i1 i2 i4 i8 u1 u2 u4 u8 b1)")
        self.format, self.built = NUMPY[kind.lstrip("<|=")], False

    def build(self, state) -> None:
        if self.built or type(state) is not tuple or len(state) != 8 or state[0] != 3 or state[1] not in "<|=" \
                or state[2:5] != (None, None, None) or state[5:] != (-1, -1, 0):
            raise Refused("a numpy dtype whose state is not a plain numeric dtype's (fields, subarrays, flags)")
        self.built = True


def scalar(dtype=None, data=None, *extra):
    """numpy's scalar(dtype, bytes) as a Python number."""
    if not isinstance(dtype, DType) or type(data) is not bytes or extra or len(data) != struct.calcsize(dtype.format):
        raise Refused("a numpy scalar whose dtype is not a plain numeric one, or whose bytes do not fit it")
    return struct.unpack(dtype.format, data)[0]


def answers() -> tuple[dict, Tensors]:
    """({(module, name): value} for one read, and its tensors' byte budget)."""
    tensors = Tensors()
    table = {("torch_utils.persistence", "_reconstruct_persistent_obj"): Answer("persistent", persistent),
             ("collections", "OrderedDict"): Answer("OrderedDict", empty("OrderedDict")),
             **{(module, "EasyDict"): Answer("EasyDict", empty("EasyDict"), new=True)  # (a dict subclass: NEWOBJ)
                for module in ("dnnlib", "dnnlib.util")},
             ("torch", "Size"): Answer("Size", size),
             ("numpy", "dtype"): Answer("dtype", DType),
             **{(module, "scalar"): Answer("scalar", scalar) for module in ("numpy.core.multiarray",
                                                                            "numpy._core.multiarray")},
             **{("torch.nn.modules.container", kind): Answer(kind, container(kind), new=True) for kind in CONTAINERS},
             **{("torch", kind): getattr(torch, kind) for kind in TORCH_DTYPES},
             **tensors.answers()}
    return table, tensors
