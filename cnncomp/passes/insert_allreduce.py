"""insert_allreduce: make a training graph data-parallel over MPI ranks.

Runs right after ``differentiate`` when compiling with ``distributed="mpi"``. Every
optimizer-update node reads its gradient through an ``allreduce_start`` /
``allreduce_wait`` pair, so every rank applies the same update: the batch-weighted mean
of all ranks' gradients, which is the gradient of the mean loss over the global batch.

Gradients are grouped into **buckets** in the order the backward pass completes them:
a bucket is closed (its ``allreduce_start`` emitted) once it holds ``bucket_bytes`` of
gradients, and the last bucket, closed after the last gradient, also carries the loss
(so every rank reports the global mean loss) and, with per-rank BatchNorm, the running
statistics (averaged in place: their update is linear, so averaging every step equals
averaging each rank's own running statistics at the end). Without ``overlap`` each
bucket's wait and updates follow its start; with ``overlap`` the waits and the updates
move to the end of the backward pass, so a bucket's messages travel while the remaining
backward kernels run (the memory planner keeps its buffer alive until the wait).

With ``sync_batch_norm`` the training BatchNorm nodes (forward and backward) get
``sync=True``: their kernels combine the statistics of every rank's shard. Dropout nodes
read this rank's first sample index (``distributed.sample_offset``, written by the
trainer), so the ranks draw the masks one process would draw for the global batch.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from ..ir import PARAM, Graph, Meta, Node, Value
from ..ops import OP_DEFS, AllreduceAttrs, BatchNormTrainAttrs, Op
from . import PassContext, graph_pass

SAMPLE_OFFSET = "distributed.sample_offset"  # float64 [index of this rank's first sample]


def _sync(node: Node) -> Node:
    fields = dataclasses.asdict(node.attrs)
    fields.pop("sync", None)
    return node.replace(attrs=BatchNormTrainAttrs(**fields, sync=True))


def distribute(g: Graph, bucket_bytes: int, overlap: bool, sync_batch_norm: bool) -> Graph:
    """The data-parallel version of a training graph (see the module docstring)."""
    labels, loss = g.inputs[1], g.outputs[0]
    values = dict(g.values)
    constants = dict(g.constants)
    taken = set(values) | {n.name for n in g.nodes}

    def fresh(base: str) -> str:
        name, k = base, 1
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        taken.add(name)
        return name

    running: list[str] = []
    nodes: list[Node] = []
    bucket: list[Node] = []
    size = 0
    deferred: list[Node] = []  # waits and updates moved to the end (overlap)
    count = 0

    def close(final: bool) -> None:
        nonlocal size, count
        tensors = [u.inputs[1] for u in bucket] + ([loss] if final else [])
        inplace = running if final else []
        if not tensors and not inplace:
            return
        meta = Meta()
        flat = fresh(f"allreduce/{count}:buffer")
        total = sum(math.prod(values[t].shape) for t in tensors + inplace) + 1
        values[flat] = Value(flat, (total,), "float32", "NC")
        start = Node(fresh(f"allreduce/{count}"), Op.ALLREDUCE_START,
                     (labels, *tensors, *inplace), (flat,), AllreduceAttrs(count), meta)
        means = []
        for t in tensors:
            m = fresh(f"{t}/mean")
            values[m] = dataclasses.replace(values[t], name=m)
            means.append(m)
        shapes = tuple(tuple(values[t].shape) for t in tensors)
        wait = Node(fresh(f"allreduce/{count}/wait"), Op.ALLREDUCE_WAIT, (flat, *inplace),
                    tuple(means), AllreduceAttrs(count, shapes), meta)
        updates = [u.replace(inputs=(u.inputs[0], m, *u.inputs[2:]))
                   for u, m in zip(bucket, means)]
        nodes.append(start)
        deferred.extend([wait, *updates])
        if final or not overlap:
            nodes.extend(deferred)
            deferred.clear()
        bucket.clear()
        size = 0
        count += 1
        if final:
            return means[-1]  # the global mean loss
        return None

    for n in g.nodes:
        d = OP_DEFS[n.op]
        if n.op is Op.BATCH_NORM_TRAIN and not sync_batch_norm:
            running.extend(n.inputs[3:5])
        if n.op in (Op.BATCH_NORM_TRAIN, Op.BATCH_NORM_GRAD) and sync_batch_norm:
            n = _sync(n)
        if n.op is Op.DROPOUT_TRAIN:
            if SAMPLE_OFFSET not in values:
                values[SAMPLE_OFFSET] = Value(SAMPLE_OFFSET, (1,), "float64", "", PARAM)
                constants[SAMPLE_OFFSET] = np.zeros(1, np.float64)
            n = n.replace(inputs=n.inputs + (SAMPLE_OFFSET,))
        if d.mode == "update":
            bucket.append(n)
            size += math.prod(values[n.inputs[1]].shape) * 4
            if size >= bucket_bytes:
                close(final=False)
            continue
        nodes.append(n)
    mean_loss = close(final=True)
    return Graph(g.name, nodes, values, g.inputs, (mean_loss, *g.outputs[1:]), constants,
                 copy_constants=False)


@graph_pass("insert_allreduce", opt_level=0, requires=("training_graph",))
def insert_allreduce(g: Graph, ctx: PassContext) -> Graph:
    """Average gradients over MPI ranks (bucketed allreduce) before the optimizer updates."""
    cfg: Any = ctx.distributed
    if not cfg:
        return g
    return distribute(g, int(cfg.bucket_bytes), bool(cfg.overlap), bool(cfg.sync_batch_norm))
