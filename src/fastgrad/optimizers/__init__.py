"""fastgrad.optimizers — Keras-style optimizers over flat parameter buffers,
and learning-rate schedules (`fastgrad.optimizers.schedules`)."""
from .optimizers import (Optimizer, SGD, Adagrad, RMSprop, Adam, AdamW, get, serialize,
                         deserialize)

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "get", "serialize",
           "deserialize", "schedules"]


def __getattr__(name):
    if name == "schedules":
        import importlib
        return importlib.import_module(".schedules", __name__)
    raise AttributeError(f"module 'fastgrad.optimizers' has no attribute {name!r}")
