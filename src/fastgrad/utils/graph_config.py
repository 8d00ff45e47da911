"""get_config / from_config of functional models (the graph as JSON-friendly data).

Format (Keras's, simplified): {"name", "layers": [{"class_name", "name",
"config", "inbound_nodes": [[[layer_name, node_index, tensor_index], ...], ...]}],
"input_layers": [[name, 0, 0], ...], "output_layers": [[name, node, 0], ...],
"input_keys" / "output_keys" when inputs / outputs were dicts}. Every layer
call is a node; from_config re-creates the layers through the layer registry
and replays the calls in order, so shared layers are shared again."""
from __future__ import annotations

from typing import Any


def functional_config(model: Any) -> dict:
    g = model._graph
    nodes_by_layer: dict = {}
    for gn in g.nodes:
        nodes_by_layer.setdefault(id(gn.layer), []).append(gn.node)
    # node indices count this model's calls of a layer (as Keras re-indexes them): a
    # layer also called in another model (a model called on new inputs) has other nodes
    local = {id(n): i for nodes in nodes_by_layer.values() for i, n in enumerate(nodes)}

    def _ref(t: Any) -> Any:
        node = t._node
        return [node.layer.name, local.get(id(node), 0), 0]

    layers = []
    for layer in model._layers:
        entry = {"class_name": type(layer).__name__, "name": layer.name,
                 "config": layer.get_config(), "inbound_nodes": []}
        if getattr(layer, "_operator", False):
            entry["operator"] = True
        if getattr(layer, "_is_input_layer", False):
            entry["config"] = dict(entry["config"])
            entry["config"]["input_shape"] = list(layer._declared_input_shape)
        for node in nodes_by_layer.get(id(layer), []):
            entry["inbound_nodes"].append({"args": [_ref(t) for t in node.inputs],
                                           "multi": bool(node.multi)})
        layers.append(entry)
    cfg = {"name": model.name, "layers": layers,
           "input_layers": [_ref(t) for t in g.inputs],
           "output_layers": [_ref(t) for t in g.outputs],
           "input_kind": model._input_kind, "output_kind": model._output_kind}
    if model._input_keys is not None:
        cfg["input_keys"] = list(model._input_keys)
    if model._output_keys is not None:
        cfg["output_keys"] = list(model._output_keys)
    return cfg


def functional_from_config(cls: Any, config: dict, custom_objects: dict | None = None) -> Any:
    from .. import layers as _layers
    created = {}
    for entry in config["layers"]:
        layer = _layers.deserialize({"class_name": entry["class_name"],
                                     "config": entry["config"]}, custom_objects)
        if entry.get("operator"):
            setattr(layer, "_operator", True)   # an operator layer (fg.math on symbolic tensors)
        created[entry["name"]] = layer
    tensors = {}      # (layer name, node index) -> tensor
    for entry in config["layers"]:
        layer = created[entry["name"]]
        if getattr(layer, "_is_input_layer", False):
            tensors[(entry["name"], 0)] = layer.output
    pending = [(e, i, call) for e in config["layers"] for i, call in enumerate(e["inbound_nodes"])
               if not getattr(created[e["name"]], "_is_input_layer", False)]
    # replay calls whose inputs exist, until none is left (config order is topological,
    # but a shared layer's later call may depend on layers listed after it)
    while pending:
        progress = False
        rest = []
        for entry, i, call in pending:
            keys = [(r[0], r[1]) for r in call["args"]]
            if all(k in tensors for k in keys) and (entry["name"], i - 1) in tensors or \
                    (i == 0 and all(k in tensors for k in keys)):
                args = [tensors[k] for k in keys]
                layer = created[entry["name"]]
                out = layer(args if call.get("multi") else args[0])
                # layers with several outputs (return_state) return their parts; the
                # graph records the layer's own node output, which the parts' calls read
                out = getattr(out, "_node_output", out)
                tensors[(entry["name"], i)] = out
                progress = True
            else:
                rest.append((entry, i, call))
        if not progress:
            raise ValueError(f"from_config: the saved graph of {config.get('name')!r} cannot be "
                             "rebuilt (a layer call refers to a missing tensor)")
        pending = rest
    ins: Any = [tensors[(r[0], r[1])] for r in config["input_layers"]]
    outs: Any = [tensors[(r[0], r[1])] for r in config["output_layers"]]
    if config.get("input_kind") == "dict":
        ins = dict(zip(config["input_keys"], ins))
    elif config.get("input_kind") == "single":
        ins = ins[0]
    if config.get("output_kind") == "dict":
        outs = dict(zip(config["output_keys"], outs))
    elif config.get("output_kind") == "single":
        outs = outs[0]
    return cls(ins, outs, name=config.get("name"))
