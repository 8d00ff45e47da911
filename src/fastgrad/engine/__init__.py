"""fastgrad.engine — how a model trains.

::

    params.ParamStore     one flat float32 buffer for all trainable parameters,
                          a twin for gradients, views bound into the layers
    workspace.Workspace   per-layer arrays allocated once per batch size
    data                  validation/conversion once per call, batching
    step.Step             forward -> fused loss -> backward -> one optimizer call
"""
from .params import ParamStore
from .workspace import Workspace, WorkspaceCache
from .step import Step, NonFiniteLossError

__all__ = ["ParamStore", "Workspace", "WorkspaceCache", "Step", "NonFiniteLossError"]
