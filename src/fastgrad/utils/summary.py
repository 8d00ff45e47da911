"""model.summary(): a table of the layers, Keras-style.

Columns: "Layer (type)", "Output Shape", "Param #", and for a graph that is
not a plain chain "Connected to" (each input as layer_name[node][tensor], the
Keras notation: which call of which layer produced it)."""
from __future__ import annotations

from typing import Any, Callable


def _shape_str(layer: Any, node: Any = None) -> str:
    if node is not None:
        return str(tuple(node.output.shape))
    if not layer.built:
        return "?"
    s = layer.output_shape
    return str((None,) + tuple(s))


def _is_chain(model: Any) -> bool:
    g = model._graph
    if g is None or g.n_inputs != 1 or len(g.outputs) != 1:
        return g is None
    prev = 0
    for n in g.nodes:
        if n.in_slots != (prev,):
            return False
        prev = n.out_slot
    return True


def print_summary(model: Any, print_fn: Callable = print) -> None:
    g = model._graph
    if model.__dict__.get("_fg_call_layer") is not None:
        g = None                  # a subclassed model: its layer attributes, as Keras lists them
    connected = g is not None and not _is_chain(model)
    head = ["Layer (type)", "Output Shape", "Param #"] + (["Connected to"] if connected else [])
    rows = [head]
    if g is None:
        for layer in model.layers:
            rows.append([f"{layer.name} ({type(layer).__name__})", _shape_str(layer),
                         str(layer.count_params()) if layer.built else "?"])
    else:
        nodes_by_layer: dict = {}
        for gn in g.nodes:
            nodes_by_layer.setdefault(id(gn.layer), []).append(gn.node)
        for layer in model._layers:          # with the merges + - * made (model.layers omits them)
            if getattr(layer, "_is_input_layer", False):
                node = layer._inbound_nodes[0] if layer._inbound_nodes else None
                rows.append([f"{layer.name} ({type(layer).__name__})", _shape_str(layer, node), "0"]
                            + (["-"] if connected else []))
                continue
            for j, node in enumerate(nodes_by_layer.get(id(layer), [])):
                params = str(layer.count_params()) if j == 0 else "0 (shared)"
                row = [f"{layer.name} ({type(layer).__name__})" if j == 0 else "",
                       _shape_str(layer, node), params]
                if connected:
                    srcs = []
                    for t in node.inputs:
                        src = t._node
                        srcs.append(f"{src.layer.name}[{src.layer._inbound_nodes.index(src)}][0]")
                    row.append(", ".join(srcs))
                rows.append(row)
    ncol = len(head)
    w = [max(len(r[i]) for r in rows) + 2 for i in range(ncol)]
    total_w = sum(w)
    line = "=" * total_w
    print_fn(f'Model: "{model.name}"')
    print_fn(line)
    for i, r in enumerate(rows):
        cells = [r[0].ljust(w[0]), r[1].ljust(w[1]), r[2].rjust(w[2] - 2).ljust(w[2])]
        if connected:
            cells.append("  " + r[3])
        print_fn("".join(cells).rstrip())
        print_fn(line if i == 0 else "-" * total_w if i < len(rows) - 1 else line)
    if model.built:
        total = model.count_params()
        trainable = sum(w_.size for w_ in model.trainable_weights)
        print_fn(f"Total params: {total:,}")
        print_fn(f"Trainable params: {trainable:,}")
        print_fn(f"Non-trainable params: {total - trainable:,}")
