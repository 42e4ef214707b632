"""Hostile EDM files, one per class of attack on a pickle reader (issue 42), written with our own assembler
(`edm_files`), and the process-side harness that reads them under a memory limit.

`FILES` maps a name to (a function writing the file's bytes, a fragment of the one line that must refuse it).
`read_all(folder, out)` runs in a fresh process (`processes.call`): it caps the address space at what the process
holds now plus `HEADROOM` (`resource.setrlimit`), reads every file with the library call a job makes
(`edm_pickle.network`, `model_config`, `build_model`) and writes one JSON line per file: the error's type, its
message, the seconds and the peak memory growth.
"""
import json
import pickle
import resource
import time

import torch

from edm_files import (REBUILD_TENSOR, STORAGE, Assembler, Build, Call, Get, Global, Memo, New, ORDERED,
                       edm_file, persistent, storage_bytes, tensor)

HEADROOM = 1536 * 2 ** 20  # the address space a read may add to the process (bytes)
SMALL = dict(img_resolution=8, model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4],
             dropout=0.0, embedding_type="positional", encoder_type="standard", decoder_type="standard",
             channel_mult_noise=1, resample_filter=[1, 1])


def small_model():
    from distill_core.diffusion import DiffusionModel
    torch.manual_seed(0)
    return DiffusionModel("edm", (1, 8, 8), {"family": "edm"},
                          network_overrides={"architecture": "SongUNet", "kwargs": dict(SMALL)}).eval()


def good() -> bytes:
    return edm_file(small_model())


def wrapped(value) -> bytes:
    """`value` where a snapshot keeps its network."""
    return Assembler().dumps({"ema": value, "augment_pipe": None})


def call(module, name, *args, opcode="STACK_GLOBAL"):
    return Call(Global(module, name, opcode), args)


def with_kwargs(**changes) -> bytes:
    """The small network with its recorded constructor arguments changed (None: left out)."""
    kwargs = {"in_channels": 1, "out_channels": 1, **SMALL, **changes}
    return edm_file(small_model(), kwargs={k: v for k, v in kwargs.items() if v is not None})


def laughs(levels: int = 40):
    """A list whose `str()` is 2 ** levels long: each level holds the one before twice (memo re-use, 410 bytes)."""
    node = Memo([], "l0")
    for i in range(1, levels + 1):
        node = Memo([node, Get(f"l{i - 1}")], f"l{i}")  # (the level below written once, then fetched)
    return node


def laughs_class_name() -> bytes:
    return wrapped(Call(Global("torch_utils.persistence", "_reconstruct_persistent_obj"),
                        ({"type": "class", "version": 6, "module_src": "", "class_name": laughs(), "state": {}},)))


def shared_storage_bomb() -> bytes:
    """One 4 MB storage, memoised, re-used by 1,000 tensors: 4 GB of copies if each were made."""
    a = Assembler()
    a.op(pickle.PROTO, bytes([4]))
    a.op(pickle.EMPTY_LIST)
    a.emit(Call(STORAGE, (storage_bytes(torch.zeros(2 ** 20)),)))
    index = a.memoize()
    a.op(pickle.MARK)
    for _ in range(1000):
        a.emit(Call(REBUILD_TENSOR, (Get(index), 0, (2 ** 20,), (1,), False, Call(ORDERED, ()))))
    a.op(pickle.APPENDS)
    a.op(pickle.STOP)
    return a.out.getvalue()


def shared_record() -> bytes:
    """The same module record under two names (memo re-use): a DAG, not NVlabs' tree."""
    child = Memo(persistent("Conv", {"_parameters": {}, "_buffers": {}, "_modules": {}}), "child")
    net = persistent("SongUNet", {"_parameters": {}, "_buffers": {}, "_modules": {"a": child, "b": Get("child")},
                                  "_init_kwargs": {}})
    return Assembler().dumps({"ema": persistent("EDMPrecond", {"_modules": {"model": net}, "sigma_data": 0.5})})


def deep_chain(levels: int = 40) -> bytes:
    node = persistent("Conv", {"_parameters": {}, "_buffers": {}, "_modules": {}})
    for _ in range(levels):
        node = persistent("Block", {"_parameters": {}, "_buffers": {}, "_modules": {"inner": node}})
    net = persistent("SongUNet", {"_parameters": {}, "_buffers": {}, "_modules": {"enc": node}, "_init_kwargs": {}})
    return Assembler().dumps({"ema": persistent("EDMPrecond", {"_modules": {"model": net}})})


def numpy_object_dtype() -> bytes:
    """numpy's scalar over a dtype whose BUILD hides an object field: np.frombuffer would dereference the file's
    pointer (a segfault under the old reader)."""
    dtype = Build(call("numpy", "dtype", "f8", False, True),
                  (3, "|", None, ("p",), {"p": (call("numpy", "dtype", "O8", False, True), 0)}, 8, 1, 0x3F))
    return wrapped(call("numpy._core.multiarray", "scalar", dtype, b"\x41" * 8))


def numpy_offset_past_buffer() -> bytes:
    dtype = Build(call("numpy", "dtype", "f8", False, True),
                  (3, "|", None, ("x",), {"x": (call("numpy", "dtype", "f8", False, True), 1 << 30)}, 8, 1, 0))
    return wrapped(call("numpy._core.multiarray", "scalar", dtype, b"\x00" * 8))


def numpy_short_scalar() -> bytes:
    dtype = Build(call("numpy", "dtype", "f8", False, True), (3, "<", None, None, None, -1, -1, 0))
    return wrapped(call("numpy._core.multiarray", "scalar", dtype, b"\x00" * 3))


def build_on_function() -> bytes:
    """BUILD on torch's own rebuild function (its __defaults__): every later tensor negated, under the old reader."""
    return wrapped(Build(REBUILD_TENSOR, ({}, {"__defaults__": (None, -1)})))


def oversized_view() -> bytes:
    """A (32, 32, 3, 3) weight over a 4-float storage: torch would resize the storage and read the heap."""
    return wrapped(tensor(torch.zeros(4), size=(32, 32, 3, 3), stride=(288, 9, 3, 1)))


def stride_zero() -> bytes:
    return wrapped(tensor(torch.zeros(1), size=(2 ** 16, 2 ** 16), stride=(0, 0)))


def zip_storage() -> bytes:
    import io
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data/0", b"\x00" * (1 << 20))
    return wrapped(Call(REBUILD_TENSOR, (Call(STORAGE, (buf.getvalue(),)), 0, (1,), (1,), False, Call(ORDERED, ()))))


def torch_save_zip() -> bytes:
    import io
    buf = io.BytesIO()
    torch.save({"ema": torch.zeros(2)}, buf)
    return buf.getvalue()


def cycle_in_modules() -> bytes:
    """A container module whose `_modules` holds itself (NEWOBJ, memo, then BUILD with a state that fetches it)."""
    enc = Build(Memo(New(Global("torch.nn.modules.container", "ModuleDict"), ()), "enc"),
                {"_parameters": {}, "_buffers": {}, "_modules": {"again": Get("enc")}})
    net = persistent("SongUNet", {"_parameters": {}, "_buffers": {}, "_modules": {"enc": enc}, "_init_kwargs": {}})
    return Assembler().dumps({"ema": persistent("EDMPrecond", {"_modules": {"model": net}})})


def with_trailer() -> bytes:
    return good() + b"junk after the end"


FILES = {
    # code-running globals, by name, alias and opcode
    "os_system": (lambda: wrapped(call("os", "system", "touch /tmp/hostile_edm_ran")), "asks for os.system"),
    "posix_system_global": (lambda: wrapped(call("posix", "system", "touch /tmp/hostile_edm_ran", opcode="GLOBAL")),
                            "asks for posix.system"),
    "builtins_eval": (lambda: wrapped(call("builtins", "eval", "print(1)")), "asks for builtins.eval"),
    "builtins_getattr": (lambda: wrapped(call("builtins", "getattr", 1, "real")), "asks for builtins.getattr"),
    "builtins_import": (lambda: wrapped(call("builtins", "__import__", "os")), "asks for builtins.__import__"),
    "subprocess": (lambda: wrapped(call("subprocess", "check_call", ["true"])), "asks for subprocess.check_call"),
    "attrgetter": (lambda: wrapped(call("operator", "attrgetter", "system")), "asks for operator.attrgetter"),
    "functools_partial": (lambda: wrapped(call("functools", "partial", 1)), "asks for functools.partial"),
    "importlib": (lambda: wrapped(call("importlib", "import_module", "os")), "asks for importlib.import_module"),
    "numpy_reconstruct": (lambda: wrapped(call("numpy.core.multiarray", "_reconstruct", 1)),
                          "asks for numpy.core.multiarray._reconstruct"),
    "torch_load": (lambda: wrapped(call("torch", "load", "x")), "asks for torch.load"),
    "inst": (lambda: b"\x80\x02(ios\nsystem\nX\x04\x00\x00\x00trueq\x00." , "opcode INST"),
    "obj": (lambda: b"\x80\x02(cos\nsystem\nX\x04\x00\x00\x00trueo.", "asks for os.system"),  # (its class first)
    "obj_alone": (lambda: b"\x80\x02(K\x01o.", "opcode OBJ"),
    "newobj_ex": (lambda: b"\x80\x04\x8c\x02os\x8c\x06system\x93)}\x92.", "opcode NEWOBJ_EX"),
    "ext1": (lambda: b"\x80\x02\x82\x01.", "opcode EXT1"),
    "persid": (lambda: b"\x80\x02Pabc\n.", "opcode PERSID"),
    "binpersid": (lambda: b"\x80\x02X\x01\x00\x00\x00aQ.", "opcode BINPERSID"),
    "protocol0_text": (lambda: pickle.dumps({"ema": "net"}, protocol=0), "opcode"),
    "torch_save_zip": (torch_save_zip, "a zip archive (torch.save's format), not NVlabs' pickle"),
    "reduce_on_a_dtype": (lambda: wrapped(Call(Global("torch", "float32"), ())), "REDUCE on a dtype"),
    "class_named_os_system": (lambda: edm_file(small_model(), network_class="os.system"),
                              "network is os.system, not known"),
    # a crash: numpy dtypes that are not plain numbers
    "numpy_object_field": (numpy_object_dtype, "a numpy dtype outside the plain numeric ones"),
    "numpy_offset_past_buffer": (numpy_offset_past_buffer, "not a plain numeric dtype's"),
    "numpy_short_scalar": (numpy_short_scalar, "bytes do not fit"),
    # poisoning: BUILD on what is not the reader's own record
    "build_on_function": (build_on_function, "BUILD on one of the reader's answered names"),
    "build_on_tensor": (lambda: wrapped(Build(tensor(torch.zeros(2)), {"x": 1})), "BUILD on a Tensor"),
    "build_on_dtype": (lambda: wrapped(Build(Global("torch", "float32"), {"x": 1})), "BUILD on a dtype"),
    # heap read: a tensor beyond its storage
    "view_beyond_storage": (oversized_view, "reaches 9216 elements of a storage of 4"),
    "negative_offset": (lambda: wrapped(tensor(torch.zeros(4), offset=-2)), "_rebuild_tensor_v2 called with"),
    # exhaustion
    "stride_zero": (stride_zero, "stride is not a tuple of at most 8 integers >= 1"),
    "huge_network": (lambda: with_kwargs(img_resolution=1024, model_channels=1024, num_blocks=16,
                                         channel_mult=[16, 16, 16, 16, 16, 16, 16, 16]), "parameters (more than"),
    "many_blocks": (lambda: with_kwargs(num_blocks=200000), "num_blocks=200000 is not an integer in [1, 16]"),
    "laughs_class_name": (laughs_class_name, "class name is not a name"),
    "deflated_storage": (zip_storage, "torch.save's zip format"),
    "shared_storage": (shared_storage_bomb, "add up to more bytes than its storages hold"),
    "shared_record": (shared_record, "re-uses a record"),
    "deep_chain": (deep_chain, "too deep"),
    # what ended in a traceback
    "unknown_argument": (lambda: with_kwargs(magic=3), "magic' is not one of SongUNet's"),
    "missing_argument": (lambda: with_kwargs(img_resolution=None), "lack img_resolution"),
    "string_argument": (lambda: with_kwargs(model_channels="16"), "model_channels='16' is not an integer"),
    "cycle_in_modules": (cycle_in_modules, "re-uses a record"),
    "truncated": (lambda: good()[:5000], "not a readable NVlabs pickle"),
    "trailer": (with_trailer, "bytes after the pickle's end"),
}


def read_one(path) -> None:
    """What a job does with a teacher file before any run: read it, describe it, build the network."""
    from distill_core import edm_pickle
    f = edm_pickle.network(path)
    edm_pickle.model_config(f)
    edm_pickle.build_model(f)


def read_all(folder: str, out: str) -> None:
    """Every file in `folder`, read under the address-space cap; a JSON line per file into `out`."""
    from pathlib import Path
    with open("/proc/self/status") as status:
        held = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize"))
    resource.setrlimit(resource.RLIMIT_AS, (held + HEADROOM, held + HEADROOM))
    with open(out, "w") as results:
        for path in sorted(Path(folder).glob("*.pkl")):
            before, start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.monotonic()
            try:
                read_one(path)
                error, message = None, ""
            except BaseException as e:  # noqa: BLE001 (what a file makes us raise is the point)
                error, message = type(e).__name__, str(e)
            results.write(json.dumps({"name": path.stem, "error": error, "message": message,
                                      "seconds": time.monotonic() - start,
                                      "grew_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024})
                          + "\n")
            results.flush()


def tensors_after(hostile: str, good_path: str, out: str) -> None:
    """Read `hostile` (refused), then `good_path`: the good file's tensors, and a torch.load round trip, to `out`."""
    import io
    from distill_core import edm_pickle
    try:
        edm_pickle.network(hostile)
    except edm_pickle.EDMFileError:
        pass
    state = edm_pickle.network(good_path).state
    buf = io.BytesIO()
    torch.save(torch.arange(4.0), buf)
    buf.seek(0)
    torch.save({"state": state, "torch_load": torch.load(buf, weights_only=True)}, out)
