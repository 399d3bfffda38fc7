"""A data-only unpickler for .ckpt files, passed to torch.load as its `pickle_module`.

Why not torch.load(weights_only=True): trainers write more than tensors into checkpoints — a numpy scalar
`global_step`, and PyTorch Lightning's `callbacks` dict keyed by callback classes such as
`pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint` — and torch 2.1's weights-only loader (the
WebUI's torch) refuses them, while the WebUI itself loads such files. No library offers an allow-list that
works the same on torch 2.1 and 2.13 (torch.serialization.add_safe_globals is 2.4+), so it is written here.

Admitted: tensors and storages (torch's own rebuild functions), builtin containers, numpy scalars, dtypes
and arrays. Lightning classes become inert stand-ins, created here without importing Lightning: they can be
keys or hold state, and do nothing. Any other global is refused with an UnpicklingError naming it, before
anything of it is imported or called.
"""

from __future__ import annotations

import _codecs
import collections
import pickle
from typing import Any

import torch

# Modules whose classes become inert stand-ins (trainer bookkeeping, never needed for inference).
STAND_IN_MODULE_PREFIXES = ("pytorch_lightning.", "lightning.", "lightning_fabric.")

_TORCH_REBUILD_FUNCTIONS = (
    "_rebuild_tensor",
    "_rebuild_tensor_v2",
    "_rebuild_tensor_v3",
    "_rebuild_parameter",
    "_rebuild_parameter_with_state",
)
_NUMPY_FUNCTIONS = ("scalar", "_reconstruct")


def _numpy_multiarray():
    """numpy's multiarray module: numpy._core.multiarray in numpy 2, numpy.core.multiarray before (numpy 1.26
    has a numpy._core package too, without it until something imports it)."""
    import importlib

    for name in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if all(hasattr(module, function) for function in _NUMPY_FUNCTIONS):
            return module
    raise ImportError("numpy's multiarray module was not found")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    import numpy as np

    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("collections", "Counter"): collections.Counter,
        ("collections", "defaultdict"): collections.defaultdict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "bytearray"): bytearray,
        ("builtins", "complex"): complex,
        ("builtins", "slice"): slice,
        ("_codecs", "encode"): _codecs.encode,  # bytes in protocol 2 pickles
        ("torch", "Size"): torch.Size,
        ("torch", "device"): torch.device,
        ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
        ("torch.serialization", "_get_layout"): torch.serialization._get_layout,
        ("numpy", "dtype"): np.dtype,
        ("numpy", "ndarray"): np.ndarray,
    }
    for name in _TORCH_REBUILD_FUNCTIONS:
        if hasattr(torch._utils, name):
            allowed[("torch._utils", name)] = getattr(torch._utils, name)
    for value in vars(torch).values():  # torch.float16 etc. pickle as ("torch", "float16")
        if isinstance(value, (torch.dtype, torch.layout)):
            allowed[("torch", str(value).removeprefix("torch."))] = value
    # numpy moved its internals from numpy.core to numpy._core in 2.0; files name either.
    multiarray = _numpy_multiarray()
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        for name in _NUMPY_FUNCTIONS:
            allowed[(module, name)] = getattr(multiarray, name)
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25 pickles dtypes as numpy.dtypes.Float64DType etc.
    if dtypes is not None:
        for name in dir(dtypes):
            if name.endswith("DType"):
                allowed[("numpy.dtypes", name)] = getattr(dtypes, name)
    return allowed


_ALLOWED: dict[tuple[str, str], Any] | None = None
_STAND_INS: dict[tuple[str, str], type] = {}


class StandIn:
    """An inert object in place of a class this loader will not import; it keeps the state it was given."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state


def _stand_in(module: str, name: str) -> type:
    key = (module, name)
    if key not in _STAND_INS:  # one class per name, so a class used as a dict key stays one key
        _STAND_INS[key] = type(name, (StandIn,), {"__module__": f"depth2img.stand_in.{module}"})
    return _STAND_INS[key]


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list."""


class Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        global _ALLOWED
        if _ALLOWED is None:
            _ALLOWED = _allowed_globals()
        found = _ALLOWED.get((module, name))
        if found is not None:
            return found
        if module.startswith(STAND_IN_MODULE_PREFIXES):
            return _stand_in(module, name)
        raise RefusedGlobal(f"refused global {module}.{name}: only tensors and plain data are loaded")


def load(file, **kwargs) -> Any:
    """pickle.load with this module's Unpickler (torch's legacy format reads its header with it)."""
    return Unpickler(file, **kwargs).load()


def loads(data: bytes, **kwargs) -> Any:
    import io

    return load(io.BytesIO(data), **kwargs)


# torch.load asks its pickle_module for these names too.
UnpicklingError = pickle.UnpicklingError
