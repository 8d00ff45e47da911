"""Keras-style layers.

Core layers live in ``core``; Dropout (``dropout``), the normalisation layers
(``normalization``), the activation layers ReLU, LeakyReLU, ELU, PReLU, Softmax
(``activations``), the merge layers (``merge``) and the reshaping layers
(``reshaping``) are imported on first use.  Every subclass of ``Layer`` is
registered by class name for ``deserialize`` / model loading.
"""
from __future__ import annotations

from typing import Any, Callable

from .base import Layer, ParamSpec, StateSpec, get_layer_class, deserialize_layer
from .core import Dense, Activation, Flatten, InputLayer, Input

__all__ = ["Layer", "ParamSpec", "StateSpec", "Dense", "Activation", "Flatten", "InputLayer",
           "Input", "Dropout", "BatchNormalization", "LayerNormalization", "ReLU", "LeakyReLU", "ELU",
           "PReLU", "Softmax",
           "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate", "Dot",
           "Reshape", "Permute", "RepeatVector", "Identity", "Lambda",
           "MultiHeadAttention", "Attention", "AdditiveAttention", "PositionEmbedding",
           "SinePositionEncoding",
           "Embedding", "Masking", "SimpleRNN", "LSTM", "GRU", "Bidirectional", "TimeDistributed",
           "Conv1D", "Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose", "Convolution1D", "Convolution2D", "Convolution2DTranspose",
           "DepthwiseConv1D", "SeparableConv1D", "SeparableConvolution1D", "Conv1DTranspose", "Convolution1DTranspose",
           "MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D", "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
           "MaxPool1D", "MaxPool2D", "AvgPool1D", "AvgPool2D", "GlobalAvgPool1D", "GlobalAvgPool2D", "GlobalMaxPool1D", "GlobalMaxPool2D",
           "ZeroPadding2D", "Cropping2D", "UpSampling2D", "SpatialDropout2D",
           "ZeroPadding1D", "Cropping1D", "UpSampling1D", "SpatialDropout1D",
           "get_layer_class", "deserialize", "serialize"]

_LAZY = {"Dropout": ".dropout", "BatchNormalization": ".normalization",
         "LayerNormalization": ".normalization",
         "Add": ".merge", "Subtract": ".merge", "Multiply": ".merge", "Average": ".merge",
         "Maximum": ".merge", "Minimum": ".merge", "Concatenate": ".merge", "Dot": ".merge",
         "Reshape": ".reshaping", "Permute": ".reshaping", "RepeatVector": ".reshaping",
         "Identity": ".reshaping",
         "MultiHeadAttention": ".attention", "Attention": ".attention",
         "AdditiveAttention": ".attention", "PositionEmbedding": ".attention",
         "SinePositionEncoding": ".attention",
         "Embedding": ".embedding", "Masking": ".embedding",
         "SimpleRNN": ".recurrent", "LSTM": ".recurrent", "GRU": ".recurrent",
         "Bidirectional": ".recurrent", "TimeDistributed": ".recurrent",
         "add": ".merge", "subtract": ".merge", "multiply": ".merge", "average": ".merge",
         "maximum": ".merge", "minimum": ".merge", "concatenate": ".merge", "dot": ".merge",
         "ReLU": ".activations", "LeakyReLU": ".activations", "ELU": ".activations",
         "PReLU": ".activations", "Softmax": ".activations",
         "Lambda": ".lambda_layer", "MathOp": "..autodiff.oplayer",
         # convolutional networks (issue 16)
         "Conv1D": ".convolutional", "Conv2D": ".convolutional", "DepthwiseConv2D": ".convolutional",
         "SeparableConv2D": ".convolutional", "Conv2DTranspose": ".convolutional", "Convolution1D": ".convolutional",
         "Convolution2D": ".convolutional", "Convolution2DTranspose": ".convolutional", "MaxPooling1D": ".pooling",
         "MaxPooling2D": ".pooling", "AveragePooling1D": ".pooling", "AveragePooling2D": ".pooling",
         "GlobalAveragePooling1D": ".pooling", "GlobalAveragePooling2D": ".pooling", "GlobalMaxPooling1D": ".pooling",
         "GlobalMaxPooling2D": ".pooling", "MaxPool1D": ".pooling", "MaxPool2D": ".pooling",
         "AvgPool1D": ".pooling", "AvgPool2D": ".pooling", "GlobalAvgPool1D": ".pooling",
         "GlobalAvgPool2D": ".pooling", "GlobalMaxPool1D": ".pooling", "GlobalMaxPool2D": ".pooling",
         "ZeroPadding2D": ".spatial", "Cropping2D": ".spatial", "UpSampling2D": ".spatial",
         "SpatialDropout2D": ".spatial",
         # their 1-D counterparts
         "DepthwiseConv1D": ".convolutional", "SeparableConv1D": ".convolutional",
         "SeparableConvolution1D": ".convolutional", "Conv1DTranspose": ".convolutional",
         "Convolution1DTranspose": ".convolutional", "ZeroPadding1D": ".spatial", "Cropping1D": ".spatial",
         "UpSampling1D": ".spatial", "SpatialDropout1D": ".spatial"}


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'fastgrad.layers' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(mod, __name__), name)


def __dir__() -> list:
    # the lazily imported names too (interactive completion, documentation tools)
    return sorted(set(globals()) | set(_LAZY))


def _load_all() -> None:
    """Import the lazily loaded layer modules (so their classes are registered)."""
    import importlib
    for mod in set(_LAZY.values()):
        try:
            importlib.import_module(mod, __name__)
        except ImportError:
            pass


def serialize(layer: Layer) -> dict:
    """Serialize a layer to a JSON-friendly dict.

    Parameters
    ----------
    layer : Layer
        The layer.

    Returns
    -------
    dict
        ``{"class_name": ..., "config": layer.get_config()}``.
    """
    return {"class_name": type(layer).__name__, "config": layer.get_config()}


def deserialize(d: dict, custom_objects: dict | None = None) -> Layer:
    """Rebuild a layer from the output of ``serialize``.

    Parameters
    ----------
    d : dict
        ``{"class_name": ..., "config": ...}``.
    custom_objects : dict, optional
        Class name to class, for layer classes defined outside fastgrad.

    Returns
    -------
    Layer
        A new, unbuilt layer.

    Raises
    ------
    ValueError
        When the class name is unknown.
    """
    cls = (custom_objects or {}).get(d.get("class_name"))
    if cls is not None:
        return cls.from_config(dict(d.get("config") or {}))
    if d.get("class_name") not in Layer.registry:
        _load_all()
    return deserialize_layer(d)


def _operator_layer(kind: str) -> Callable[[], Layer]:
    def make() -> Layer:
        layer = __getattr__(kind)()
        # made by an operator (a + b), as Keras 3's ops: in the graph, the summary and the
        # config, but not in model.layers (Keras lists only Layer objects there)
        layer._operator = True
        return layer
    return make


# Python's + - * on symbolic tensors build these merge layers (engine.graph)
from ..engine import graph as _graph  # noqa: E402
for _kind in ("Add", "Subtract", "Multiply"):
    _graph.OPERATOR_LAYERS[_kind] = _operator_layer(_kind)
