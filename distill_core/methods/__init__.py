"""Distillation methods (DESIGN 3.6, 3.7, 3.12): BTD, TRACT and consistency distillation, target functions over a
noise family that share one phase runner (`distill_core.distill`). A new method is one module plus its entry here."""
from .base import Method
from .btd import BTD
from .cd import CD
from .tract import TRACT

METHODS = {"tract": TRACT, "btd": BTD, "cd": CD}


def build(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"distill.method must be one of {', '.join(METHODS)}; got {name!r}")
    return METHODS[name]()
