"""Automatic gradients: fg.math's ops, Variables, GradientTape, traced layers
(docs/autodiff.md)."""
from .core import Variable, GradientTape, TracingError, TraceTensor

__all__ = ["Variable", "GradientTape", "TracingError", "TraceTensor"]
