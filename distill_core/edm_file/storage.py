"""Storages and tensors of an EDM file, proved before they exist.

A plain `pickle.dump` stores each tensor's storage as `torch.storage._load_from_bytes(b)`, where `b` is torch's
legacy serialisation of the storage alone: three small pickles (a magic number, protocol 1001, the writer's
byte order and type sizes), a fourth naming the storage (`('storage', torch.FloatStorage, key, 'cpu', numel)` as a
persistent id), a fifth listing its one key, then an int64 element count and the raw little-endian bytes.
`torch.load` would accept far more (zip archives, deflated entries, other pickles); `storage` parses exactly this
layout itself, with the same strict grammar, so the byte count is read from the file before any buffer exists and
the data are the file's own bytes (nothing inflates).

`Tensors.rebuild` is `_rebuild_tensor_v2` proved first: a dtype from the list, sizes non-negative, strides
positive, offset + extent within the storage's elements; the tensor is then a copy of exactly that extent
(torch's own rebuild would resize a storage that is too small, reading the process's memory). Every tensor's
bytes count against the file's storages: tensors that re-use one storage to multiply it are refused.
"""
import io
import struct
from dataclasses import dataclass

import torch

from .errors import Refused, short
from .grammar import Answer, Strict, scan

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
DTYPES = {"FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
          "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
          "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool}
MAX_DIMS = 8


@dataclass(frozen=True)
class Storage:
    dtype: torch.dtype
    numel: int
    data: memoryview  # (of the file's own bytes: nothing is copied until a tensor is made)

    @property
    def nbytes(self) -> int:
        return len(self.data)


class _StorageType:
    def __init__(self, name: str):
        self.dtype = DTYPES[name]


def _storage_answers() -> dict:
    return {("torch", name): _StorageType(name) for name in DTYPES}


def _persistent(pid):
    """('storage', torch.FloatStorage, key, 'cpu', numel[, view metadata None]) -> (dtype, key, numel)."""
    if type(pid) is not tuple or len(pid) not in (5, 6) or pid[0] != "storage" or not isinstance(pid[1], _StorageType):
        raise Refused("a storage whose persistent id is not torch's ('storage', type, key, location, count)")
    _, kind, key, location, numel = pid[:5]
    if type(key) is not str or len(key) > 64 or type(location) is not str or not location.startswith(("cpu", "cuda")):
        raise Refused("a storage with a malformed key or location")
    if type(numel) is not int or numel < 0 or (len(pid) == 6 and pid[5] is not None):
        raise Refused("a storage with a malformed element count or a view")
    return (kind.dtype, key, numel)


def _small(f, persistent=None):
    """One of the legacy layout's small pickles, under the strict grammar."""
    start = f.tell()
    scan(f, _storage_answers(), extra=frozenset({"BINPERSID"}) if persistent else frozenset(), whole=False)
    f.seek(start)
    return Strict(f, _storage_answers(), persistent).load()


def storage(data) -> Storage:
    """`torch.storage._load_from_bytes(data)`, parsed: the legacy layout and nothing else."""
    if type(data) is not bytes:
        raise Refused(f"a storage given as a {type(data).__name__}, not bytes")
    if data[:2] == b"PK":
        raise Refused("a storage in torch.save's zip format (NVlabs' files hold the legacy layout): refused")
    f = io.BytesIO(data)
    try:
        header = [_small(f) for _ in range(3)]
        if header[0] != LEGACY_MAGIC or header[1] != LEGACY_PROTOCOL or type(header[2]) is not dict \
                or header[2].get("little_endian") is not True:
            raise Refused("a storage without torch's legacy header (magic number, protocol 1001, little-endian)")
        dtype, key, numel = _small(f, _persistent)
        if _small(f) != [key]:
            raise Refused("a storage whose key list is not its one key")
        count = f.read(8)
    except Refused:
        raise
    except Exception as e:  # noqa: BLE001 (a malformed small pickle: many exception types)
        raise Refused(f"a malformed storage ({type(e).__name__}: {short(str(e), 80)})") from None
    if len(count) != 8 or struct.unpack("<q", count)[0] != numel:
        raise Refused("a storage whose element count disagrees with its header")
    size = numel * torch.empty((), dtype=dtype).element_size()
    rest = memoryview(data)[f.tell():]
    if len(rest) != size:
        raise Refused(f"a storage of {numel} elements with {len(rest)} bytes of data (expected {size})")
    return Storage(dtype, numel, rest)


def extent(size: tuple, stride: tuple, offset: int) -> int:
    """Elements a strided view reaches: offset + the farthest element + 1 (0 for an empty tensor)."""
    if any(n == 0 for n in size):
        return 0
    return offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1


def _ints(value, what: str, minimum: int) -> tuple:
    if type(value) is not tuple or len(value) > MAX_DIMS or any(type(v) is not int or v < minimum for v in value):
        raise Refused(f"a tensor's {what} is not a tuple of at most {MAX_DIMS} integers >= {minimum}")
    return value


class Tensors:
    """The tensor and storage answers of one read, with its byte budget: the tensors' bytes may not exceed the
    storages' bytes the file holds."""

    def __init__(self):
        self.storage_bytes, self.tensor_bytes = 0, 0

    def answers(self) -> dict:
        return {("torch._utils", "_rebuild_tensor_v2"): Answer("_rebuild_tensor_v2", self.rebuild),
                ("torch._utils", "_rebuild_parameter"): Answer("_rebuild_parameter", self.parameter),
                ("torch.storage", "_load_from_bytes"): Answer("_load_from_bytes", self.storage)}

    def storage(self, data=None, *extra) -> Storage:
        if extra:
            raise Refused("_load_from_bytes called with more than its bytes")
        s = storage(data)
        self.storage_bytes += s.nbytes
        return s

    def rebuild(self, stored=None, offset=None, size=None, stride=None, requires_grad=False, hooks=None, *extra):
        if not isinstance(stored, Storage) or extra or type(offset) is not int or offset < 0:
            raise Refused("_rebuild_tensor_v2 called with something other than (storage, offset, size, stride, ...)")
        size, stride = _ints(size, "size", 0), _ints(stride, "stride", 1)
        if len(size) != len(stride) or type(requires_grad) is not bool or not (hooks is None or hooks == {}):
            raise Refused("a tensor with mismatched size and stride, or with backward hooks")
        reach = extent(size, stride, offset)
        if reach > stored.numel:
            raise Refused(f"a tensor of size {list(size)}, stride {list(stride)}, offset {offset} reaches {reach} "
                          f"elements of a storage of {stored.numel}: refused (torch would read beyond it)")
        numel = 1
        for n in size:
            numel *= n
        self.tensor_bytes += numel * torch.empty((), dtype=stored.dtype).element_size()
        if self.tensor_bytes > self.storage_bytes:
            raise Refused("the file's tensors add up to more bytes than its storages hold (a storage re-used to "
                          "multiply it): refused")
        if reach == 0:
            return torch.empty(size, dtype=stored.dtype)
        element = torch.empty((), dtype=stored.dtype).element_size()
        base = torch.frombuffer(bytearray(stored.data[offset * element:reach * element]), dtype=stored.dtype)
        view = base.as_strided(size, stride, 0)
        return view if view.is_contiguous() and view.numel() == base.numel() else view.clone()  # (a fresh buffer)

    def parameter(self, tensor=None, requires_grad=None, hooks=None, *extra):
        if not isinstance(tensor, torch.Tensor) or type(requires_grad) is not bool or extra or not (hooks is None or hooks == {}):
            raise Refused("_rebuild_parameter called with something other than (tensor, requires_grad, hooks)")
        return tensor
