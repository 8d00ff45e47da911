"""fastgrad.optimizers — Keras-style optimizers over flat parameter buffers,
and learning-rate schedules (`fastgrad.optimizers.schedules`)."""
from .optimizers import (Optimizer, SGD, Adagrad, RMSprop, Adam, AdamW, get, serialize,
                         deserialize)
from .optimizers import _register
from .optimizers_ext import Nadam, Adamax, Adadelta, Ftrl, Lion

_register((Nadam, Adamax, Adadelta, Ftrl, Lion))

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "Nadam", "Adamax",
           "Adadelta", "Ftrl", "Lion", "get", "serialize", "deserialize", "schedules"]


def __getattr__(name):
    if name == "schedules":
        import importlib
        return importlib.import_module(".schedules", __name__)
    raise AttributeError(f"module 'fastgrad.optimizers' has no attribute {name!r}")
