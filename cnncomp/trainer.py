"""``Trainer``: runs the compiled training graph (forward, loss, backward, updates).

The trainer owns the mutable state: parameters, running statistics, optimizer state
and ``optimizer.hyper`` = [learning rate, step]. Every kernel of the training program
is bound once to these arrays (and to arena views for activations and gradients), so a
step copies the batch in, runs the kernels, and reads the loss back. ``export()``
compiles an inference model (BN folded, fused) from the current weights.
"""
from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from typing import Any, Callable, Optional

import numpy as np

from runtime.program import Executor

from .compiled import CompileOptions, CompiledModel
from .errors import FormatError, InputError, ParameterError, fmt_shape
from .ir import Graph
from .lower import MemoryPlan, lower
from .optim import Optimizer, from_config
from .passes.differentiate import HYPER

_MAX_CACHED_BATCHES = 3
TRAINER_FORMAT = 1


class Trainer:
    """``step(x, y) -> loss``, ``fit``, ``evaluate``, ``parameters``, ``save``, ``export``."""

    rank, world_size = 0, 1  # data-parallel training: cnncomp.distributed.DistributedTrainer

    def __init__(self, source: Graph, graph: Graph, options: CompileOptions,
                 optimizer: Optimizer, loss: str, pass_records: Optional[list] = None):
        self.source_graph = source
        self.graph = graph
        self.options = options
        self.optimizer = optimizer
        self.loss_name = loss
        self.pass_records = list(pass_records or [])
        self.state: dict[str, np.ndarray] = {k: np.array(v, copy=True)
                                            for k, v in graph.constants.items()}
        self.hyper = self.state[HYPER]
        self.steps = 0
        self.epoch = 0.0
        self.input_name, self.label_name = graph.inputs
        self.loss_output, self.logits_output = graph.outputs
        self.num_classes = int(graph.values[self.logits_output].shape[1])
        self._programs: "OrderedDict[int, tuple[Executor, MemoryPlan]]" = OrderedDict()
        self._exported: Optional[tuple[int, CompiledModel]] = None
        self.last_logits: Optional[np.ndarray] = None
        # target="cuda": the state lives on the device (name -> device array, shared by the
        # executors of every batch size); self.state is its host mirror, refreshed lazily
        self._device_state: Optional[dict[str, Any]] = (
            {} if options.target == "cuda" else None)
        self._host_stale = False
        self._executor(2)  # bind once up front: a missing kernel fails at compile time

    # ------------------------------------------------------------------ running
    def _executor(self, batch: int) -> tuple[Executor, MemoryPlan]:
        hit = self._programs.get(batch)
        if hit is not None:
            self._programs.move_to_end(batch)
            return hit
        program, plan = lower(self.graph, batch, self.options.target,
                              "plan_memory" in self.options.passes, verify=self.options.verify)
        program = dataclasses.replace(program, constants=self.state)
        entry = (self._make_executor(program), plan)
        self._programs[batch] = entry
        while len(self._programs) > _MAX_CACHED_BATCHES:
            self._programs.popitem(last=False)
        return entry

    def _make_executor(self, program: Any) -> Any:
        if self._device_state is None:
            return Executor(program)
        from runtime.cuda import CudaExecutor
        self._sync_host()  # a new upload must start from the current state
        return CudaExecutor(program, device_constants=self._device_state)

    def _sync_host(self) -> None:
        """target="cuda": copy the device state (parameters, running statistics,
        optimizer state) into ``self.state`` if a step changed it since the last copy."""
        if self._device_state is not None and self._host_stale:
            for k, d in self._device_state.items():
                d.copy_to_host(self.state[k])
            self._host_stale = False

    def _sync_device(self) -> None:
        """target="cuda": upload ``self.state`` after it was written on the host."""
        if self._device_state is not None:
            for k, d in self._device_state.items():
                d.copy_to_device(np.ascontiguousarray(self.state[k]))

    def learning_rate(self, epoch: Optional[float] = None) -> float:
        """The rate the schedule gives at ``epoch`` (default: the current epoch)."""
        sched = getattr(self.optimizer, "schedule", None)
        epoch = self.epoch if epoch is None else epoch
        return self.optimizer.lr if sched is None else float(sched(self.optimizer.lr, epoch))

    def _check_batch(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        want = self.source_graph.values[self.input_name].shape
        if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
            raise InputError(f"x must be a real float array of shape {fmt_shape(want)}, got "
                             f"{type(x).__name__} {getattr(x, 'dtype', '')}")
        if x.ndim != len(want) or tuple(x.shape[1:]) != tuple(want[1:]):
            raise InputError(f"x: expected shape {fmt_shape(want)} (N = any batch size), "
                             f"got {tuple(x.shape)}")
        y = np.asarray(y)
        if y.dtype.kind not in "iu":
            if y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0):
                y = y.astype(np.int64)
            else:
                raise InputError(f"labels must be integer class indices, got dtype {y.dtype}")
        if y.shape != (x.shape[0],):
            raise InputError(f"labels: expected shape ({x.shape[0]},) to match x's batch, got "
                             f"{tuple(y.shape)}")
        if y.size and (y.min() < 0 or y.max() >= self.num_classes):
            raise InputError(f"labels must be in [0, {self.num_classes}) for a network with "
                             f"{self.num_classes} outputs; got range [{y.min()}, {y.max()}]")
        if x.shape[0] < 2 and any(n.op.value == "batch_norm_train" for n in self.graph.nodes):
            raise InputError("a network with BatchNorm needs a training batch of at least 2")
        return np.ascontiguousarray(x, np.float32), np.ascontiguousarray(y, np.int64)

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One optimizer step on a batch; returns the batch's mean loss (before the step)."""
        x, y = self._check_batch(x, y)
        executor, _ = self._executor(x.shape[0])
        self.steps += 1
        self.hyper[0] = self.learning_rate()
        self.hyper[1] = self.steps
        if self._device_state is not None:  # [lr, step] for the device kernels
            self._device_state[HYPER].copy_to_device(self.hyper)
            self._host_stale = True
        outs = executor.run({self.input_name: x, self.label_name: y})
        self.last_logits = outs[self.logits_output]
        return float(outs[self.loss_output][0])

    # ------------------------------------------------------------------ parameters
    def parameters(self) -> dict[str, np.ndarray]:
        """Fresh copies of the network's parameters (same keys as ``net.parameters()``)."""
        self._sync_host()
        return {k: self.state[k].copy() for k in self.source_graph.constants}

    def optimizer_state(self) -> dict[str, np.ndarray]:
        self._sync_host()
        return {k: v.copy() for k, v in self.state.items()
                if k not in self.source_graph.constants}

    def load_parameters(self, params: dict[str, np.ndarray]) -> None:
        """Overwrite the parameters in place (names and shapes checked, all at once)."""
        want = self.source_graph.constants
        missing = sorted(set(want) - set(params))
        extra = sorted(set(params) - set(want))
        bad = sorted(k for k in set(want) & set(params)
                     if tuple(np.shape(params[k])) != tuple(want[k].shape))
        if missing or extra or bad:
            raise ParameterError(f"load_parameters: missing {missing}, unexpected {extra}, "
                                 f"wrong shape {[(k, np.shape(params[k])) for k in bad]}")
        self._sync_host()
        for k in want:
            np.copyto(self.state[k], np.asarray(params[k], np.float32))
        self._sync_device()

    # ------------------------------------------------------------------ inference
    def export(self, **compile_kwargs: Any) -> CompiledModel:
        """An inference model of the current weights (BN folded, fused, all passes)."""
        from .api import compile as _compile
        graph = self.source_graph.replace(constants=self.parameters())
        kwargs = {"target": self.options.target, **compile_kwargs}
        return _compile(graph, **kwargs)

    def _inference_model(self) -> CompiledModel:
        # NCHW: evaluation reuses the kernels training already compiled (the blocked ones
        # would add ~30 s of first-run JIT); export() gives the fully optimized model
        if self._exported is None or self._exported[0] != self.steps:
            self._exported = (self.steps, self.export(layout="NCHW"))
        return self._exported[1]

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Logits of ``x`` in inference mode (running statistics, no dropout)."""
        model = self._inference_model()
        return np.concatenate([model(x[i:i + batch_size])
                               for i in range(0, len(x), batch_size)])

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> dict[str, float]:
        """Mean loss and accuracy in inference mode."""
        logits = self.predict(x, batch_size).astype(np.float64)
        y = np.asarray(y, np.int64)
        z = logits - logits.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return {"loss": float(-logp[np.arange(len(y)), y].mean()),
                "accuracy": float((logits.argmax(1) == y).mean())}

    # ------------------------------------------------------------------ fitting
    def fit(self, x: np.ndarray, y: np.ndarray, epochs: int = 1, batch_size: int = 32,
            validation_data: Optional[tuple[np.ndarray, np.ndarray]] = None,
            augment: Optional[Callable[[np.ndarray, np.random.Generator], np.ndarray]] = None,
            shuffle: bool = True, seed: int = 0, progress: bool = True,
            drop_last: bool = True) -> dict[str, list[float]]:
        """Train for ``epochs`` over (x, y); returns the history per epoch.

        Batches are drawn by ``runtime.data.batches`` (a seeded shuffle per epoch);
        ``augment(x_batch, rng)`` may transform each batch (see ``runtime.data``).
        Distributed (``compile(..., distributed="mpi")``): ``batch_size`` is the global
        batch; each rank trains on its shard of it and only rank 0 shows progress.
        """
        from tqdm.auto import tqdm

        y = np.asarray(y)
        if len(x) != len(y):
            raise InputError(f"fit: x has {len(x)} samples but y has {len(y)} labels")
        self._check_batch(x[:2], y[:2])
        history: dict[str, list[float]] = {"epoch": [], "loss": [], "accuracy": [], "lr": [],
                                           "seconds": []}
        if validation_data is not None:
            history["val_loss"], history["val_accuracy"] = [], []
        per_epoch = len(x) // batch_size if drop_last else -(-len(x) // batch_size)
        first = int(self.epoch)
        for e in range(first, first + epochs):
            rng = np.random.default_rng([seed, e])
            t0 = time.perf_counter()
            losses, correct, seen = [], 0, 0
            bar = tqdm(total=per_epoch, desc=f"epoch {e + 1}/{first + epochs}",
                       disable=not progress or self.rank != 0, leave=True, unit="batch")
            for k, (xb, yb) in enumerate(self._epoch_batches(x, y, batch_size, rng, shuffle,
                                                             drop_last, augment)):
                self.epoch = e + k / max(per_epoch, 1)
                loss = self.step(xb, yb)
                losses.append(loss)
                correct += int((self.last_logits.argmax(1) == yb).sum())
                seen += len(yb)
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", acc=f"{correct / seen:.3f}")
            self.epoch = float(e + 1)
            correct, seen = self._reduce_counts(correct, seen)
            history["epoch"].append(e + 1)
            history["loss"].append(float(np.mean(losses)))
            history["accuracy"].append(correct / max(seen, 1))
            history["lr"].append(self.learning_rate(e))
            if validation_data is not None:
                m = self.evaluate(*validation_data)
                history["val_loss"].append(m["loss"])
                history["val_accuracy"].append(m["accuracy"])
                bar.set_postfix(loss=f"{history['loss'][-1]:.4f}",
                                acc=f"{history['accuracy'][-1]:.3f}",
                                val_acc=f"{m['accuracy']:.3f}")
            history["seconds"].append(time.perf_counter() - t0)
            bar.close()
        return history

    def _epoch_batches(self, x: np.ndarray, y: np.ndarray, batch_size: int,
                       rng: np.random.Generator, shuffle: bool, drop_last: bool,
                       augment: Any) -> Any:
        """The (augmented) batches of one epoch; a distributed trainer yields its shards."""
        from runtime.data import batches
        for xb, yb in batches(x, y, batch_size, rng, shuffle, drop_last):
            yield (xb if augment is None else augment(xb, rng)), yb

    def _reduce_counts(self, correct: int, seen: int) -> tuple[int, int]:
        """An epoch's accuracy counts (summed over ranks when distributed)."""
        return correct, seen

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: str) -> None:
        """Checkpoint everything a resumed run needs: the network, parameters, running
        statistics, optimizer state, step and epoch; written atomically."""
        from runtime.serialization import write_archive
        from .serialize import graph_to_json
        self._sync_host()
        manifest = {"kind": "trainer", "trainer_format": TRAINER_FORMAT,
                    "graph": graph_to_json(self.source_graph),
                    "optimizer": self.optimizer.config(), "loss": self.loss_name,
                    "options": {**self.options.as_dict(), "fuse": self.options.fuse},
                    "steps": self.steps, "epoch": self.epoch}
        write_archive(path, manifest, self.state)

    def restore(self, path: str) -> None:
        """Load a checkpoint written by ``save`` into this trainer (same network)."""
        from runtime.serialization import read_archive
        manifest, arrays = read_archive(path)
        if manifest.get("kind") != "trainer":
            raise FormatError(f"{path}: not a trainer checkpoint (kind "
                              f"{manifest.get('kind')!r})")
        missing = sorted(set(self.state) - set(arrays))
        bad = sorted(k for k in set(self.state) & set(arrays)
                     if arrays[k].shape != self.state[k].shape)
        if missing or bad:
            raise FormatError(f"{path}: checkpoint does not fit this trainer: missing "
                              f"{missing}, wrong shape {bad}")
        self._sync_host()
        for k, v in self.state.items():
            np.copyto(v, arrays[k])
        self._sync_device()
        self.steps = int(manifest["steps"])
        self.epoch = float(manifest["epoch"])

    def summary(self, batch: int = 32) -> str:
        """Kernels of one training step (forward, backward, updates) and its memory."""
        executor, plan = self._executor(batch)
        counts: dict[str, int] = {}
        for s in executor.program.steps:
            counts[s.key.mode] = counts.get(s.key.mode, 0) + 1
        mib = lambda n: f"{n / 2**20:,.2f} MiB"  # noqa: E731
        lines = [f"trainer {self.graph.name!r} target={self.options.target} batch={batch} "
                 f"fuse={self.options.fuse} optimizer={type(self.optimizer).__name__}",
                 f"kernels: {len(executor.program.steps)} ("
                 + ", ".join(f"{v} {k}" for k, v in counts.items()) + ")",
                 f"memory: planned {mib(plan.planned_bytes)}, naive {mib(plan.naive_bytes)}, "
                 f"lower bound {mib(plan.lower_bound_bytes)}"]
        lines += [f"  {s.name}: {'+'.join(s.ops)} [{s.key.mode}]"
                  for s in executor.program.steps]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"<Trainer {self.source_graph.name!r} optimizer={self.optimizer} "
                f"steps={self.steps}>")


def load_trainer(path: str, distributed: Any = None) -> Trainer:
    """Rebuild a trainer from a checkpoint; training continues exactly where it stopped.

    ``distributed="mpi"`` resumes data-parallel on any number of ranks (the checkpoint
    does not depend on the rank count)."""
    from runtime.serialization import read_archive
    from .api import compile as _compile
    from .serialize import graph_from_json
    manifest, arrays = read_archive(path)
    if manifest.get("kind") != "trainer":
        raise FormatError(f"{path}: not a trainer checkpoint (kind {manifest.get('kind')!r}); "
                          "networks load with frontend.load, models with cnncomp.load")
    src = manifest["graph"]
    params = {v["name"]: arrays[v["name"]] for v in src["values"]
              if v["kind"] == "param" and v["name"] in arrays}
    graph = graph_from_json(src, params, path)
    o = manifest.get("options", {})
    trainer = _compile(graph, target=o.get("target", "cpu"), training=True,
                       loss=manifest.get("loss", "cross_entropy"),
                       optimizer=from_config(manifest["optimizer"]),
                       fuse=bool(o.get("fuse", True)), disable=tuple(o.get("disable", ())),
                       distributed=distributed)
    trainer.restore(path)
    return trainer
