"""The closed grammar of an EDM file: which opcodes may appear, and what REDUCE, NEWOBJ, BUILD and the container
opcodes may act on.

Two passes. `scan` walks the opcode stream first (`pickletools.genops`: nothing is built) and refuses, by name,
any opcode that NVlabs' `pickle.dump` never writes (INST, OBJ, NEWOBJ_EX, EXT*, PERSID, protocol-0 text forms,
out-of-band buffers, ...) and any GLOBAL the reader does not answer, and data after the pickle's end. Then
`Strict`, a subclass of Python's own pure-Python unpickler whose dispatch table is replaced: REDUCE and NEWOBJ
call only the reader's `Answer`s (per-read objects that check their arguments), BUILD sets state only on the
reader's own `Buildable` objects (never on a function, a dtype or a tensor), SETITEM(S)/APPEND(S)/ADDITEMS act
only on plain dicts, lists and sets. A name is a string of at most MAX_NAME characters; a refusal names the
opcode or the global, never `str()` of an object the file built.
"""
import pickle
import pickletools

from .errors import EDMFileError, NotEDM, Refused, RefusedGlobal, short

MAX_NAME = 256  # characters in a module, class, attribute or key name
OPCODES = frozenset({
    "PROTO", "FRAME", "STOP", "MARK", "EMPTY_DICT", "EMPTY_LIST", "EMPTY_TUPLE", "EMPTY_SET", "TUPLE", "TUPLE1",
    "TUPLE2", "TUPLE3", "SETITEM", "SETITEMS", "APPEND", "APPENDS", "ADDITEMS", "MEMOIZE", "BINPUT", "LONG_BINPUT",
    "BINGET", "LONG_BINGET", "NONE", "NEWTRUE", "NEWFALSE", "BININT", "BININT1", "BININT2", "LONG1", "BINFLOAT",
    "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "GLOBAL",
    "STACK_GLOBAL", "REDUCE", "NEWOBJ", "BUILD"})
CODES = {op.code.encode("latin-1")[0]: op.name for op in pickletools.opcodes}


class Answer:
    """A name the reader answers: calling it (REDUCE, or NEWOBJ where `new`) runs `fn`, which checks its arguments."""

    def __init__(self, name: str, fn, new: bool = False):
        self.name, self.fn, self.new = name, fn, new

    def __call__(self, *args):
        return self.fn(*args)


class Buildable:
    """An object of the reader's own that a BUILD may give state to (`build(state)` checks it)."""

    def build(self, state) -> None:
        raise NotImplementedError


def scan(f, answers: dict, extra: frozenset = frozenset(), whole: bool = True) -> None:
    """Refuse, before anything is built, an opcode outside OPCODES (plus `extra`), a GLOBAL not in `answers`, a
    stream that does not end in STOP, or (`whole`: the file is one pickle) bytes after it. `f` is an open binary
    file (rewound afterwards)."""
    start = f.tell()
    try:
        for op, arg, pos in pickletools.genops(f):
            if op.name not in OPCODES and op.name not in extra:
                raise Refused(f"the pickle holds the opcode {op.name} at byte {pos}, which NVlabs' files never "
                              f"hold; refused before anything was built")
            if op.name == "GLOBAL":
                module, _, name = arg.partition(" ")
                if (module, name) not in answers:
                    raise RefusedGlobal(refusal(module, name))
    except EDMFileError:
        raise
    except ValueError as e:  # genops: a truncated or malformed stream
        raise NotEDM(f"not a readable NVlabs pickle ({short(str(e))})") from None
    if whole and f.read(1):
        raise Refused(f"bytes after the pickle's end (at byte {f.tell() - 1}): not an NVlabs file")
    f.seek(start)


def refusal(module, name) -> str:
    return (f"the pickle asks for {short(str(module))}.{short(str(name))}, which is refused: an EDM network file holds "
            f"only NVlabs' persistent records, tensors and plain values, and nothing from it runs")


class Strict(pickle._Unpickler):
    """Python's pure-Python unpickler with a closed dispatch table over `answers` ({(module, name): value})."""

    def __init__(self, f, answers: dict, persistent=None):
        super().__init__(f)
        self.answers, self.persistent = answers, persistent

    def find_class(self, module, name):
        for part in (module, name):
            if not isinstance(part, str) or len(part) > MAX_NAME:
                raise Refused(f"a global named by a {type(part).__name__} of {len(part) if isinstance(part, str) else '?'} "
                              f"characters: refused")
        try:
            return self.answers[(module, name)]
        except KeyError:
            raise RefusedGlobal(refusal(module, name)) from None

    def persistent_load(self, pid):
        if self.persistent is None:
            raise Refused("the pickle holds a persistent id (torch.save's format, not NVlabs')")
        return self.persistent(pid)

    # --- the opcodes that call, build or fill: the reader's own objects only ---
    def load_reduce(self):
        args = self.stack.pop()
        fn = self.stack[-1]
        if not isinstance(fn, Answer) or fn.new or type(args) is not tuple:
            raise Refused(f"REDUCE on a {type(fn).__name__}: only the reader's answered names may be called")
        self.stack[-1] = fn(*args)

    def load_newobj(self):
        args = self.stack.pop()
        cls = self.stack.pop()
        if not isinstance(cls, Answer) or not cls.new or type(args) is not tuple:
            raise Refused(f"NEWOBJ on a {type(cls).__name__}: only torch's container modules may be made this way")
        self.append(cls(*args))

    def load_build(self):
        state = self.stack.pop()
        target = self.stack[-1]
        if not isinstance(target, Buildable):
            what = "one of the reader's answered names" if isinstance(target, Answer) else f"a {type(target).__name__}"
            raise Refused(f"BUILD on {what}: only the reader's own records take state")
        target.build(state)

    def _target(self, kinds: tuple, opcode: str):
        target = self.stack[-1]
        if type(target) not in kinds:
            raise Refused(f"{opcode} on a {type(target).__name__}: only plain containers are filled")
        return target

    def load_setitem(self):
        value, key = self.stack.pop(), self.stack.pop()
        self._target((dict,), "SETITEM")[key] = value

    def load_setitems(self):
        items = self.pop_mark()
        target = self._target((dict,), "SETITEMS")
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]

    def load_append(self):
        value = self.stack.pop()
        self._target((list,), "APPEND").append(value)

    def load_appends(self):
        items = self.pop_mark()
        self._target((list,), "APPENDS").extend(items)

    def load_additems(self):
        items = self.pop_mark()
        self._target((set,), "ADDITEMS").update(items)

    def refuse(self):
        raise Refused("an opcode outside NVlabs' format")  # (scan names it first; a stream that was not scanned)


def _dispatch() -> dict:
    own = {"REDUCE": Strict.load_reduce, "NEWOBJ": Strict.load_newobj, "BUILD": Strict.load_build,
           "SETITEM": Strict.load_setitem, "SETITEMS": Strict.load_setitems, "APPEND": Strict.load_append,
           "APPENDS": Strict.load_appends, "ADDITEMS": Strict.load_additems}
    table = {}
    for code, name in CODES.items():
        if name in own:
            table[code] = own[name]
        elif name in OPCODES or name == "BINPERSID":  # (BINPERSID only where `persistent` answers it)
            table[code] = pickle._Unpickler.dispatch[code]
        else:
            table[code] = Strict.refuse
    return table


Strict.dispatch = _dispatch()
