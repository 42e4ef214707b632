"""A network proved against its tensors before it is built.

The file records its network's constructor arguments (`_init_kwargs`). Each is checked against the architecture's
signature here (a type and a range per argument: an unknown or missing name, a non-integer, an absurd size is one
line naming the argument); the network is then built on the `meta` device (no memory) and every parameter's name
and shape, and their count, compared with the file's tensors. Only a network that fits is allocated.
"""
import inspect

import torch

from .errors import Refused, short

MAX_PARAMETERS = 2_000_000_000  # a published EDM network has < 300M


class Int:
    def __init__(self, low: int, high: int):
        self.low, self.high = low, high

    def check(self, key, v):
        if type(v) is not int or not self.low <= v <= self.high:
            return f"an integer in [{self.low}, {self.high}]"


class Float:
    def __init__(self, low: float, high: float):
        self.low, self.high = low, high

    def check(self, key, v):
        if type(v) not in (int, float) or not self.low <= v <= self.high:
            return f"a number in [{self.low}, {self.high}]"


class Ints:
    def __init__(self, low: int, high: int, most: int = 8, least: int = 0):
        self.low, self.high, self.most, self.least = low, high, most, least

    def check(self, key, v):
        if type(v) not in (list, tuple) or not self.least <= len(v) <= self.most or \
                any(type(x) is not int or not self.low <= x <= self.high for x in v):
            return f"a list of {self.least} to {self.most} integers in [{self.low}, {self.high}]"


class Choice:
    def __init__(self, *options):
        self.options = options

    def check(self, key, v):
        if v not in self.options or type(v) is not str:
            return f"one of {', '.join(self.options)}"


COMMON = {"img_resolution": Int(4, 1024), "in_channels": Int(1, 16), "out_channels": Int(1, 32),
          "label_dim": Int(0, 100_000), "augment_dim": Int(0, 64), "model_channels": Int(1, 1024),
          "channel_mult": Ints(1, 16, least=1), "channel_mult_emb": Int(1, 16), "num_blocks": Int(1, 16),
          "attn_resolutions": Ints(1, 1024), "dropout": Float(0, 1), "label_dropout": Float(0, 1)}
SPECS = {
    "SongUNet": {**COMMON, "embedding_type": Choice("positional", "fourier"), "channel_mult_noise": Int(1, 16),
                 "encoder_type": Choice("standard", "skip", "residual"), "decoder_type": Choice("standard", "skip"),
                 "resample_filter": Ints(1, 64, least=1)},
    "DhariwalUNet": COMMON,
}


def check_arguments(architecture, kwargs: dict) -> dict:
    """`kwargs` against `architecture`'s signature and SPECS: the arguments as the constructor takes them."""
    spec = SPECS[architecture.__name__]
    params = inspect.signature(architecture).parameters
    for key in kwargs:
        if type(key) is not str or key not in spec:
            allowed = ", ".join(spec)
            raise Refused(f"the network's recorded argument {short(key) if type(key) is str else type(key).__name__!r} "
                          f"is not one of {architecture.__name__}'s ({allowed})")
    for key, p in params.items():
        if p.default is inspect.Parameter.empty and key not in kwargs:
            raise Refused(f"the network's recorded arguments lack {key} ({architecture.__name__} needs it)")
    for key, value in kwargs.items():
        wanted = spec[key].check(key, value)
        if wanted:
            got = short(repr(value), 40) if type(value) in (int, float, str, bool) else type(value).__name__
            raise Refused(f"the network's recorded argument {key}={got} is not {wanted}")
    return {k: list(v) if type(v) is tuple else v for k, v in kwargs.items()}


def check_fit(architecture, kwargs: dict, state: dict, where: str) -> None:
    """Build `architecture(**kwargs)` on the meta device and compare its parameters and buffers with `state`."""
    try:
        with torch.device("meta"):
            net = architecture(**kwargs)
    except Exception as e:  # noqa: BLE001 (arguments in range that still do not make a network)
        raise Refused(f"{where}: {architecture.__name__} cannot be built from the recorded arguments "
                      f"({type(e).__name__}: {short(str(e), 100)})") from None
    want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    count = sum(v.numel() for v in net.state_dict().values())
    if count > MAX_PARAMETERS:
        raise Refused(f"{where}: the recorded arguments make {count:,} parameters (more than {MAX_PARAMETERS:,})")
    have = {k: tuple(v.shape) for k, v in state.items()}
    missing, unexpected = sorted(want.keys() - have.keys()), sorted(have.keys() - want.keys())
    wrong = sorted(k for k in want.keys() & have.keys() if want[k] != have[k])
    if missing or unexpected or wrong:
        first = (f"missing {missing[0]}" if missing else f"unexpected {short(unexpected[0])}" if unexpected
                 else f"{wrong[0]} is {list(have[wrong[0]])}, the arguments make {list(want[wrong[0]])}")
        raise Refused(f"{where}: the file's tensors do not fit the {architecture.__name__} its arguments describe "
                      f"({first}; {len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} of another shape)")
