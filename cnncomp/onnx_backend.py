"""The ONNX backend protocol over cnncomp, as ``onnxruntime.backend`` offers it.

    import cnncomp.onnx_backend as backend
    rep = backend.prepare("resnet50.onnx", device="CPU")   # path, bytes or ModelProto
    (probs,) = rep.run([x])                                # a list, a dict or one array
    outs = backend.run_model(model, [x])
    outs = backend.run_node(onnx.helper.make_node("Relu", ["x"], ["y"]), [x])
    backend.supports_device("CPU"), backend.supports_device("CUDA")

so the official backend test suite inside the ``onnx`` package runs against cnncomp
(``onnx.backend.test.BackendTest(cnncomp.onnx_backend, __name__)``; see
tests/cnncomp/test_onnx_backend.py and benchmarks/onnx_backend.py).

How a model runs: ``frontend.onnx_import`` turns it into the graph IR and
``cnncomp.compile`` optimizes it (fusion, layouts, memory planning) for the device. In
the suite's test cases weights, BatchNorm statistics and shape arguments often arrive as
run-time inputs rather than initializers: a graph input that nodes read only in such a
slot (Conv's W and B, BatchNormalization's scale/B/mean/var, Gemm's B and C, MatMul's
right operand, Reshape's shape, Pad's pads, Clip's bounds, Dropout's ratio ...) is
bound as a constant on the first ``run`` and the model is compiled then, once per set of
input shapes and parameter values. Inputs may be numpy scalars. Old model-zoo files that
list every weight as a graph input as well are read as the initializers they are.
Outputs that need no input (a Constant, ConstantOfShape of a constant shape) and
Dropout's all-true mask are returned as ONNX computes them, in the declared dtype.
"""
from __future__ import annotations

import hashlib
from typing import Any, Mapping, Optional, Sequence

import numpy as np

try:
    import onnx
    from onnx.backend.base import Backend, BackendRep, Device, DeviceType, namedtupledict
except ImportError:  # pragma: no cover - exercised only without the optional extra
    raise ImportError("cnncomp.onnx_backend needs the onnx package: "
                      "pip install 'cnncomp[onnx]'") from None

from frontend.onnx_import import OnnxGraph, import_onnx, param_inputs

__all__ = ["CnnCompBackend", "CnnCompRep", "prepare", "run_model", "run_node",
           "supports_device", "is_compatible"]

_COMPILE_OPTIONS = ("fuse", "layout", "opt_level", "disable", "check_finite")
_MAX_CACHED = 8


def _target(device: Optional[str]) -> str:
    dev = Device(device or "CPU")
    return "cuda" if dev.type == DeviceType.CUDA else "cpu"


def _digest(a: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(a).view(np.uint8).reshape(-1)).hexdigest()


class CnnCompRep(BackendRep):
    """A prepared model: ``run(inputs)`` imports and compiles on first use (per input
    shapes and parameter values) and returns the outputs as a tuple in graph order."""

    def __init__(self, model: "onnx.ModelProto", device: str = "CPU", **options: Any):
        self.model = model
        self.target = _target(device)
        g = model.graph
        inits = {t.name for t in g.initializer}
        self.input_names = [i.name for i in g.input if i.name not in inits]
        self.output_names = [o.name for o in g.output]
        self.param_names = set(param_inputs(model))
        self.options = {k: options[k] for k in _COMPILE_OPTIONS if k in options}
        self.batch_axis = options.get("batch_axis", "auto")
        self._cache: dict[tuple, tuple[OnnxGraph, Any]] = {}
        self.last: Optional[tuple[OnnxGraph, Any]] = None
        self._eager: Optional[tuple[OnnxGraph, Any]] = None
        if not self.param_names and all(self._static(i) for i in g.input
                                        if i.name not in inits):
            # nothing to bind: import and compile now, so errors surface at prepare
            self._eager = self._prepared(("declared",), None, {})

    @staticmethod
    def _static(vi) -> bool:
        dims = vi.type.tensor_type.shape.dim
        return all(d.HasField("dim_value") for d in dims[1:])

    # ------------------------------------------------------------------ inputs
    def _feeds(self, inputs: Any) -> dict[str, np.ndarray]:
        names = self.input_names
        if isinstance(inputs, Mapping):
            feeds = dict(inputs)
        elif isinstance(inputs, (list, tuple)):
            if len(inputs) > len(names):
                raise ValueError(f"the model takes {len(names)} inputs {names}, got "
                                 f"{len(inputs)}")
            feeds = dict(zip(names, inputs))
        else:
            if len(names) != 1:
                raise ValueError(f"the model takes {len(names)} inputs {names}; pass a list "
                                 "or a dict")
            feeds = {names[0]: inputs}
        missing = [n for n in names if n not in feeds]
        extra = [n for n in feeds if n not in names]
        if missing or extra:
            raise ValueError(f"the model's inputs are {names}; missing {missing}, "
                             f"unexpected {extra}")
        return {n: np.asarray(v) for n, v in feeds.items()}

    def _shapes_key(self, data: Mapping[str, np.ndarray]) -> tuple:
        return tuple((n, a.shape, a.dtype.str) for n, a in data.items())

    def _prepared(self, key: tuple, data: Mapping[str, np.ndarray],
                  consts: Mapping[str, np.ndarray]) -> tuple[OnnxGraph, Any]:
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        eager = self._eager
        if eager is not None and data is not None and eager[0].batch_axis and all(
                eager[1] is not None and a.ndim == len(eager[1].graph.values[n].shape)
                and a.shape[1:] == eager[1].graph.values[n].shape[1:]
                for n, a in data.items()):
            return eager  # the model compiled at prepare serves every batch size
        shapes = None if data is None else {n: a.shape for n, a in data.items()}
        res = import_onnx(self.model, batch_axis=self.batch_axis, input_shapes=shapes,
                          constants=consts)
        compiled = None
        if res.graph.inputs:
            import cnncomp
            compiled = cnncomp.compile(res.graph, target=self.target, **self.options)
        if len(self._cache) >= _MAX_CACHED:
            self._cache.pop(next(iter(self._cache)))
        self._cache[key] = (res, compiled)
        return res, compiled

    # ------------------------------------------------------------------ running
    def run(self, inputs: Any, **kwargs: Any) -> tuple:
        feeds = self._feeds(inputs)
        consts = {n: a for n, a in feeds.items() if n in self.param_names}
        data = {n: a for n, a in feeds.items() if n not in self.param_names}
        key = self._shapes_key(data) + tuple((n, a.shape, a.dtype.str, _digest(a))
                                             for n, a in consts.items())
        res, compiled = self._prepared(key, data, consts)
        self.last = (res, compiled)
        values: dict[str, np.ndarray] = {}
        batch = 1
        if compiled is not None:
            args = {}
            for onnx_name, ir_name in res.inputs.items():
                a = np.asarray(data[onnx_name], dtype=np.float32)
                args[ir_name] = a if res.batch_axis else a[None]
                batch = a.shape[0] if res.batch_axis and a.ndim else 1
            out = compiled(**args)
            values = out if isinstance(out, dict) else {res.graph.outputs[0]: out}
        results = []
        for spec in res.outputs:
            if spec.kind == "constant":
                results.append(np.array(spec.array, dtype=spec.dtype))
                continue
            if spec.kind == "ones":
                shape = res.graph.values[spec.value].concrete_shape(batch)
                results.append(np.ones(shape if res.batch_axis else shape[1:], np.bool_))
                continue
            y = values[spec.value]
            results.append(np.asarray(y if res.batch_axis else y[0], dtype=spec.dtype))
        return namedtupledict("Outputs", self.output_names)(*results)


class CnnCompBackend(Backend):
    """``onnx.backend.base.Backend`` over ``frontend.onnx_import`` + ``cnncomp.compile``."""

    @classmethod
    def prepare(cls, model: Any, device: str = "CPU", **kwargs: Any) -> CnnCompRep:
        if isinstance(model, CnnCompRep):
            return model
        if isinstance(model, (str, bytes, bytearray)) or hasattr(model, "__fspath__"):
            model = (onnx.load_from_string(bytes(model))
                     if isinstance(model, (bytes, bytearray)) else onnx.load(model))
        if not isinstance(model, onnx.ModelProto):
            raise TypeError(f"prepare takes an onnx.ModelProto, a path or bytes, got "
                            f"{type(model).__name__}")
        if not cls.supports_device(device):
            raise RuntimeError(f"cnncomp cannot run on device {device!r} here "
                               f"(supported: CPU{', CUDA' if _cuda_ok() else ''})")
        super().prepare(model, device, **kwargs)  # onnx.checker.check_model
        return CnnCompRep(model, device, **kwargs)

    @classmethod
    def run_model(cls, model: Any, inputs: Any, device: str = "CPU", **kwargs: Any) -> tuple:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: "onnx.NodeProto", inputs: Any, device: str = "CPU",
                 outputs_info: Optional[Sequence[tuple]] = None, **kwargs: Any) -> tuple:
        """Run one node: its non-empty inputs get the arrays in order (a dict by name
        works too); the model around it uses ``opset_version`` (default: the newest)."""
        super().run_node(node, inputs, device=device, outputs_info=outputs_info, **kwargs)
        from onnx import helper
        names = [i for i in node.input if i]
        if isinstance(inputs, Mapping):
            arrays = [np.asarray(inputs[n]) for n in names]
        else:
            arrays = [np.asarray(a) for a in (inputs if isinstance(inputs, (list, tuple))
                                              else [inputs])]
        if len(arrays) != len(names):
            raise ValueError(f"node {node.name or node.op_type!r} has {len(names)} inputs "
                             f"{names}, got {len(arrays)} arrays")
        vin = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype),
                                             list(a.shape)) for n, a in zip(names, arrays)]
        vout = []
        for k, o in enumerate(node.output):
            if not o:
                continue
            dt = onnx.TensorProto.FLOAT
            if outputs_info and k < len(outputs_info):
                dt = helper.np_dtype_to_tensor_dtype(np.dtype(outputs_info[k][0]))
            vout.append(helper.make_tensor_value_info(o, dt, None))
        opset = int(kwargs.pop("opset_version", onnx.defs.onnx_opset_version()))
        graph = helper.make_graph([node], f"{node.op_type}_node", vin, vout)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        return CnnCompRep(model, device, **kwargs).run(arrays)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        """CPU always; CUDA on a machine with a real GPU (not the CUDA simulator)."""
        try:
            target = _target(device)
        except (AttributeError, ValueError):
            return False
        return target == "cpu" or _cuda_ok()


def _cuda_ok() -> bool:
    from runtime.cuda_status import simulator_enabled, unavailable_reason
    return unavailable_reason() is None and not simulator_enabled()


prepare = CnnCompBackend.prepare
run_model = CnnCompBackend.run_model
run_node = CnnCompBackend.run_node
supports_device = CnnCompBackend.supports_device
is_compatible = CnnCompBackend.is_compatible
