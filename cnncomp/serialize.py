"""Graph <-> JSON, and saving/loading networks and compiled models.

File layout (a zip, see ``runtime.serialization``): ``manifest.json`` holds
``{"kind": "network" | "compiled", "graph": {...}, "options": {...}}`` and ``arrays.npz``
holds one float32 array per parameter, keyed by its value name ("c1.weight").
The graph JSON lists values (name, shape with null for the batch, dtype, layout, kind)
and nodes (name, op, inputs, outputs, attrs, meta) in topological order.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from runtime.serialization import FormatError, read_archive, write_archive

from .errors import CnnCompError
from .ir import PARAM, Graph, Meta, Node, Value
from .ops import Op, attrs_from_dict, attrs_to_dict, op_def


def graph_to_json(g: Graph) -> dict[str, Any]:
    return {
        "name": g.name,
        "inputs": list(g.inputs),
        "outputs": list(g.outputs),
        "values": [{"name": v.name, "shape": list(v.shape), "dtype": v.dtype,
                    "layout": v.layout, "kind": v.kind} for v in g.values.values()],
        "nodes": [{"name": n.name, "op": n.op.value, "inputs": list(n.inputs),
                   "outputs": list(n.outputs), "attrs": attrs_to_dict(n.attrs),
                   "meta": {"ops": list(n.meta.ops), "source": n.meta.source,
                            "layers": list(n.meta.layers)}} for n in g.nodes],
    }


def graph_from_json(d: dict[str, Any], arrays: dict[str, np.ndarray], where: str) -> Graph:
    try:
        values = {}
        for v in d["values"]:
            values[v["name"]] = Value(v["name"], tuple(v["shape"]), v["dtype"], v["layout"],
                                      v["kind"])
        nodes = []
        for n in d["nodes"]:
            op = Op(n["op"])
            attrs = attrs_from_dict(op_def(op).attrs, n["attrs"])
            m = n.get("meta", {})
            nodes.append(Node(n["name"], op, tuple(n["inputs"]), tuple(n["outputs"]), attrs,
                              Meta(tuple(m.get("ops", ())), m.get("source", ""),
                                   tuple(m.get("layers", ())))))
        consts = {k: v for k, v in values.items() if v.kind == PARAM}
        missing = [k for k in consts if k not in arrays]
        if missing:
            raise FormatError(f"{where}: weights missing for {missing}")
        constants = {}
        for k in consts:
            a = arrays[k]
            if a.dtype != np.float32:
                raise FormatError(f"{where}: parameter {k!r} has dtype {a.dtype}, expected "
                                  "float32")
            constants[k] = a
        g = Graph(d["name"], nodes, values, d["inputs"], d["outputs"], constants)
        g.verify()
        return g
    except FormatError:
        raise
    except (KeyError, TypeError, ValueError, CnnCompError) as e:
        raise FormatError(f"{where}: the graph is corrupt or incompatible "
                          f"({type(e).__name__}: {e})") from None


def save_graph(g: Graph, path: str, kind: str, options: Optional[dict] = None) -> None:
    manifest = {"kind": kind, "graph": graph_to_json(g)}
    if options is not None:
        manifest["options"] = options
    write_archive(path, manifest, dict(g.constants))


def load_graph(path: str) -> tuple[Graph, dict[str, Any]]:
    """The graph in a saved file, and the manifest (kind, options)."""
    manifest, arrays = read_archive(path)
    if manifest.get("kind") not in ("network", "compiled") or "graph" not in manifest:
        raise FormatError(f"{path}: unknown content kind {manifest.get('kind')!r}")
    return graph_from_json(manifest["graph"], arrays, path), manifest
