"""fg.utils.plot_model / model_to_dot: draw a model's graph (Keras names).

The graph is written as Graphviz DOT text by this module (one box per layer
call: "name (Type)", optionally its input/output shapes; one arrow per tensor
edge). A ".dot" file needs nothing else; other formats (png, svg, pdf, ...)
are rendered by pydot when it is installed, else by Graphviz's `dot`
program; without either, a clear ImportError says what to install."""
from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

__all__ = ["model_to_dot", "plot_model"]


def _quote(s: str) -> str:
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _shape(t: Any) -> str:
    return str(tuple(t.shape)).replace("None", "None")


def model_to_dot(model: Any, show_shapes: bool = False, show_layer_names: bool = True, rankdir: str = "TB",
                 show_dtype: bool = False, dpi: int = 96, **kwargs: Any) -> str:
    """The model's graph as Graphviz DOT text.

    Parameters
    ----------
    model : Model
        A built model.
    show_shapes : bool, default False
        Show each layer's input and output shapes.
    show_layer_names : bool, default True
        Show layer names beside the class names.
    rankdir : {"TB", "LR", "BT", "RL"}, default "TB"
        Direction of the graph.
    show_dtype : bool, default False
        Show the dtype (always float32).
    dpi : int, default 96
        Resolution of a rendered image.
    **kwargs
        Other Keras arguments, accepted and ignored.

    Returns
    -------
    str
        The DOT text.

    Raises
    ------
    ValueError
        If `rankdir` is unknown or the model is not built.
    """
    if rankdir not in ("TB", "LR", "BT", "RL"):
        raise ValueError(f"plot_model: rankdir must be one of TB, LR, BT, RL, got {rankdir!r}")
    g = getattr(model, "_graph", None)
    if g is None:
        raise ValueError(f"plot_model: model {getattr(model, 'name', model)!r} is not built yet; "
                         "build it (give an input shape or call it on data) first")
    lines = [f"digraph {_quote(model.name)} {{", f"  graph [rankdir={rankdir}, dpi={int(dpi)}];",
             '  node [shape=record, fontname="Helvetica"];']
    ids: dict = {}

    def node_id(node: Any) -> str:
        k = id(node)
        if k not in ids:
            ids[k] = f"n{len(ids)}"
        return ids[k]

    def label(node: Any) -> str:
        layer = node.layer
        head = f"{layer.name} ({type(layer).__name__})" if show_layer_names else \
            type(layer).__name__
        if show_dtype:
            head += " | float32"
        if not show_shapes:
            return head
        ins = ", ".join(_shape(t) for t in node.inputs) or _shape(node.output)
        return f"{{{head} | {{input: {ins} | output: {_shape(node.output)}}}}}"

    for t in g.inputs:
        n = t._node
        lines.append(f"  {node_id(n)} [label={_quote(label(n))}];")
    for gn in g.nodes:
        n = gn.node
        lines.append(f"  {node_id(n)} [label={_quote(label(n))}];")
        for t in n.inputs:
            lines.append(f"  {node_id(t._node)} -> {node_id(n)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def plot_model(model: Any, to_file: str | os.PathLike = "model.png", show_shapes: bool = False,
               show_dtype: bool = False, show_layer_names: bool = True, rankdir: str = "TB",
               expand_nested: bool = False, dpi: int = 96, **kwargs: Any) -> str:
    """Draw the model's graph into a file (Keras's ``plot_model``).

    A ".dot" or ".gv" file gets the DOT text itself; other formats are
    rendered by pydot or by Graphviz's ``dot`` program.

    Parameters
    ----------
    model : Model
        A built model.
    to_file : str or path-like, default "model.png"
        The file; its extension is the format.
    show_shapes : bool, default False
        Show each layer's input and output shapes.
    show_dtype : bool, default False
        Show the dtype (always float32).
    show_layer_names : bool, default True
        Show layer names beside the class names.
    rankdir : {"TB", "LR", "BT", "RL"}, default "TB"
        Direction of the graph.
    expand_nested : bool, default False
        Accepted for Keras compatibility (nested models are drawn as one node).
    dpi : int, default 96
        Resolution of a rendered image.
    **kwargs
        Other Keras arguments, accepted and ignored.

    Returns
    -------
    str
        The path written.

    Raises
    ------
    ImportError
        If the format needs Graphviz and neither pydot nor ``dot`` is usable.
    ValueError
        If the model is not built, `rankdir` is unknown or Graphviz fails.
    """
    dot = model_to_dot(model, show_shapes=show_shapes, show_layer_names=show_layer_names,
                       rankdir=rankdir, show_dtype=show_dtype, dpi=dpi)
    path = os.fspath(to_file)
    ext = os.path.splitext(path)[1].lstrip(".").lower() or "png"
    if ext in ("dot", "gv"):
        with open(path, "w") as f:
            f.write(dot)
        return path
    try:
        import pydot
    except ImportError:
        pydot = None
    if pydot is not None:
        graphs = pydot.graph_from_dot_data(dot)
        try:
            graphs[0].write(path, format=ext)
        except (OSError, FileNotFoundError) as exc:
            raise ImportError(f"plot_model: pydot could not run Graphviz ({exc}); install "
                              "Graphviz (https://graphviz.org/download/) so that `dot` is on "
                              "PATH") from None
        return path
    exe = shutil.which("dot")
    if exe is None:
        raise ImportError("plot_model: rendering a ." + ext + " file needs pydot "
                          "(`pip install pydot`) and Graphviz (https://graphviz.org/download/), "
                          "or Graphviz's `dot` program on PATH; to_file='model.dot' writes the "
                          "graph as DOT text without either")
    proc = subprocess.run([exe, f"-T{ext}", "-o", path], input=dot.encode(), capture_output=True)
    if proc.returncode != 0:
        raise ValueError(f"plot_model: Graphviz failed to write {path!r}: "
                         f"{proc.stderr.decode(errors='replace').strip()}")
    return path
