"""CUDA training kernels of the normalizations and the loss (NCHW and (N, C)).

BatchNorm in training and its gradient run one block per channel: the block's threads
stride over the channel's N*H*W values, and the per-channel sums (mean, variance,
sum(dL/dy), sum(dL/dy * (x - mean))) are shared-memory tree reductions in float64, like
the CPU kernels' float64 accumulators. Running statistics are updated on the device in
place. Every kernel finishes its reductions before it writes, and each element is read
and then written by one thread, so each is correct when the output aliases an input.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Mapping, Sequence

import numpy as np
from numba import cuda, float32, float64

from ..cuda_status import simulator_enabled
from ..registry import register_kernel
from .common import CudaRun, act_code, apply_act, check_f32, device_function
from .grad_elementwise import act_grad, grid_1d


SIM_REDUCE_THREADS = 8  # simulator: small reduction blocks (each thread costs ~1 ms there)


def channel_blocks(c: int) -> int:
    """Blocks of a per-channel reduction (each block loops over channels c, c + grid, ...):
    one per channel on a GPU, a single block under the simulator (blocks cost most there)."""
    return 1 if simulator_enabled() else max(1, min(int(c), 65535))


def reduce_threads(m: int) -> int:
    """Threads of a reduction block over ``m`` values: a power of two in [32, 256] on a
    GPU; SIM_REDUCE_THREADS under the simulator (same tree, fewer simulated threads)."""
    if simulator_enabled():
        return SIM_REDUCE_THREADS
    t = 32
    while t < m and t < 256:
        t *= 2
    return t


@device_function
def block_sum(sh, tid, nt):
    """Sum of sh[0:nt] (nt a power of two) by a shared-memory tree; every thread of the
    block must call it, and every thread gets the total."""
    cuda.syncthreads()
    s = nt // 2
    while s > 0:
        if tid < s:
            sh[tid] += sh[tid + s]
        cuda.syncthreads()
        s //= 2
    total = sh[0]
    cuda.syncthreads()
    return total


def _by_channel(a: Any) -> Any:
    return a.reshape(a.shape[0], a.shape[1], a.size // (a.shape[0] * a.shape[1]))


# ---------------------------------------------------------------- batch norm, training

@functools.lru_cache(maxsize=None)
def make_bn_train(nt: int) -> Any:
    @cuda.jit
    def bn_train(x, y, gamma, beta, rmean, rvar, mean_out, invstd_out, eps, momentum, code,
                 alpha):
        # blocks stride over channels; x, y (N, C, P)
        sh = cuda.shared.array(nt, float64)
        tid = cuda.threadIdx.x
        p = x.shape[2]
        m = x.shape[0] * p
        for c in range(cuda.blockIdx.x, x.shape[1], cuda.gridDim.x):
            s = 0.0
            for k in range(tid, m, nt):
                s += float64(x[k // p, c, k % p])
            sh[tid] = s
            mean = block_sum(sh, tid, nt) / m
            v = 0.0
            for k in range(tid, m, nt):
                d = float64(x[k // p, c, k % p]) - mean
                v += d * d
            sh[tid] = v
            var = block_sum(sh, tid, nt) / m
            inv = 1.0 / math.sqrt(var + eps)
            scale = float32(gamma[c] * inv)
            shift = float32(beta[c] - mean * inv * gamma[c])
            for k in range(tid, m, nt):
                i = k // p
                j = k % p
                y[i, c, j] = apply_act(x[i, c, j] * scale + shift, code, alpha)
            if tid == 0:
                mean_out[c] = mean
                invstd_out[c] = inv
                rmean[c] = (1.0 - momentum) * rmean[c] + momentum * mean
                rvar[c] = (1.0 - momentum) * rvar[c] + momentum * var * m / (m - 1)
    return bn_train


@register_kernel("batch_norm_train", "cuda", "NCHW")
def bind_batch_norm_train(ins: Sequence[Any], outs: Sequence[Any], attrs: Mapping) -> CudaRun:
    """Batch statistics, normalize (+ fused activation), update running statistics in
    place on the device; saves the batch mean and 1/sqrt(var + eps) for the backward."""
    if attrs.get("sync"):
        raise ValueError("synchronized (distributed) BatchNorm runs on target 'cpu' only")
    x, gamma, beta, rmean, rvar = ins
    y, mean, invstd = outs
    check_f32([x, y, gamma, beta, rmean, rvar, mean, invstd], "batch_norm_train")
    c = x.shape[1]
    m = x.size // c
    if m < 2:
        raise ValueError(f"batch_norm in training needs more than 1 value per channel, got "
                         f"input {tuple(x.shape)}; use a batch of at least 2")
    nt = reduce_threads(m)
    code, alpha = act_code(attrs.get("activation", "none")), np.float32(attrs.get("alpha", 0.0))
    return CudaRun().launch(make_bn_train(nt), channel_blocks(c), nt, _by_channel(x), _by_channel(y), gamma,
                            beta, rmean, rvar, mean, invstd, float(attrs["eps"]),
                            float(attrs["momentum"]), code, alpha, name=f"bn_train_{nt}")


@device_function
def upstream(gy, s, i, c, j, code, alpha):
    g = gy[i, c, j]
    if code == 0:
        return g
    return act_grad(g, s[i, c, j], code, alpha)


@functools.lru_cache(maxsize=None)
def make_bn_grad(nt: int) -> Any:
    @cuda.jit
    def bn_grad(gy, x, gamma, mean, invstd, gx, ggamma, gbeta, s, code, alpha):
        sh = cuda.shared.array(nt, float64)
        tid = cuda.threadIdx.x
        p = x.shape[2]
        m = x.shape[0] * p
        for c in range(cuda.blockIdx.x, x.shape[1], cuda.gridDim.x):
            mu = float64(mean[c])
            inv = float64(invstd[c])
            sg = 0.0
            sgx = 0.0
            for k in range(tid, m, nt):
                i = k // p
                j = k % p
                g = float64(upstream(gy, s, i, c, j, code, alpha))
                sg += g
                sgx += g * (float64(x[i, c, j]) - mu)
            sh[tid] = sg
            dbeta = block_sum(sh, tid, nt)
            sh[tid] = sgx
            dgamma = block_sum(sh, tid, nt) * inv
            k1 = float64(gamma[c]) * inv / m
            for k in range(tid, m, nt):
                i = k // p
                j = k % p
                xh = (float64(x[i, c, j]) - mu) * inv
                g = float64(upstream(gy, s, i, c, j, code, alpha))
                gx[i, c, j] = k1 * (m * g - dbeta - xh * dgamma)
            if tid == 0:
                ggamma[c] = dgamma
                gbeta[c] = dbeta
    return bn_grad


@register_kernel("batch_norm_grad", "cuda", "NCHW", "backward")
def bind_batch_norm_grad(ins: Sequence[Any], outs: Sequence[Any], attrs: Mapping) -> CudaRun:
    """dL/dx, dL/dgamma, dL/dbeta of training-mode batch norm; with a fused activation a
    sixth input holds what the activation's gradient reads."""
    if attrs.get("sync"):
        raise ValueError("synchronized (distributed) BatchNorm runs on target 'cpu' only")
    gy, x, gamma, mean, invstd = ins[:5]
    gx, ggamma, gbeta = outs
    check_f32(list(ins) + list(outs), "batch_norm_grad")
    code, alpha = act_code(attrs.get("activation", "none")), np.float32(attrs.get("alpha", 0.0))
    g3 = _by_channel(gy)
    s3 = _by_channel(ins[5]) if code else g3
    c = x.shape[1]
    nt = reduce_threads(x.size // c)
    return CudaRun().launch(make_bn_grad(nt), channel_blocks(c), nt, g3, _by_channel(x), gamma, mean, invstd,
                            _by_channel(gx), ggamma, gbeta, s3, code, alpha,
                            name=f"bn_grad_{nt}")


# ---------------------------------------------------------------- LRN, softmax

@cuda.jit
def lrn_grad(gy, x, gx, lo, hi, coef, beta, k):
    # gx_j = gy_j s_j^-beta - 2 coef beta x_j sum_{c: j in W(c)} gy_c x_c s_c^(-beta-1)
    c_n = x.shape[1]
    hw = x.shape[2]
    for idx in range(cuda.grid(1), x.shape[0] * c_n * hw, cuda.gridsize(1)):
        p = idx % hw
        t = idx // hw
        j = t % c_n
        i = t // c_n
        acc = 0.0
        sj = 0.0
        for c in range(max(0, j - hi), min(c_n, j + lo + 1)):
            s = 0.0
            for jj in range(max(0, c - lo), min(c_n, c + hi + 1)):
                v = float64(x[i, jj, p])
                s += v * v
            s = k + coef * s
            if c == j:
                sj = s
            acc += float64(gy[i, c, p]) * float64(x[i, c, p]) * s ** (-beta - 1.0)
        gx[i, j, p] = float64(gy[i, j, p]) * sj ** (-beta) - 2.0 * coef * beta * \
            float64(x[i, j, p]) * acc


@register_kernel("local_response_norm_grad", "cuda", "NCHW", "backward")
def bind_lrn_grad(ins: Sequence[Any], outs: Sequence[Any], attrs: Mapping) -> CudaRun:
    check_f32(list(ins) + list(outs), "local_response_norm_grad")
    a = attrs["fwd"]
    size = int(a["size"])
    g3, x3, gx3 = _by_channel(ins[0]), _by_channel(ins[1]), _by_channel(outs[0])
    return CudaRun().launch(lrn_grad, *grid_1d(x3.size), g3, x3, gx3, size // 2,
                            (size - 1) // 2, float(a["alpha"]) / size, float(a["beta"]),
                            float(a["k"]))


@cuda.jit
def softmax_grad(gy, y, gx):
    c_n = y.shape[1]
    hw = y.shape[2]
    for idx in range(cuda.grid(1), y.shape[0] * hw, cuda.gridsize(1)):
        p = idx % hw
        i = idx // hw
        s = 0.0
        for c in range(c_n):
            s += float64(gy[i, c, p]) * float64(y[i, c, p])
        for c in range(c_n):
            gx[i, c, p] = y[i, c, p] * (gy[i, c, p] - s)


@register_kernel("softmax_grad", "cuda", "NCHW", "backward")
def bind_softmax_grad(ins: Sequence[Any], outs: Sequence[Any], attrs: Mapping) -> CudaRun:
    check_f32(list(ins) + list(outs), "softmax_grad")
    g3, y3, gx3 = _by_channel(ins[0]), _by_channel(ins[1]), _by_channel(outs[0])
    return CudaRun().launch(softmax_grad, *grid_1d(y3.shape[0] * y3.shape[2]),
                            g3, y3, gx3)


# ---------------------------------------------------------------- the loss

@functools.lru_cache(maxsize=None)
def make_sce(nt: int) -> Any:
    @cuda.jit
    def sce(z, labels, prob, loss):
        # one block: thread t takes rows t, t + nt, ...; the mean is a tree reduction
        sh = cuda.shared.array(nt, float64)
        tid = cuda.threadIdx.x
        n = z.shape[0]
        k = z.shape[1]
        nan = math.nan
        total = 0.0
        for i in range(tid, n, nt):
            m = z[i, 0]
            for j in range(1, k):
                if z[i, j] > m:
                    m = z[i, j]
            s = 0.0
            for j in range(k):
                e = math.exp(float64(z[i, j] - m))
                prob[i, j] = e
                s += e
            for j in range(k):
                prob[i, j] = prob[i, j] / s
            lab = labels[i]
            if lab < 0 or lab >= k:
                total += nan
            else:
                total += float64(m) + math.log(s) - float64(z[i, lab])
        sh[tid] = total
        mean = block_sum(sh, tid, nt) / n
        if tid == 0:
            loss[0] = mean
    return sce


@register_kernel("softmax_cross_entropy", "cuda", "NCHW")
def bind_softmax_cross_entropy(ins: Sequence[Any], outs: Sequence[Any],
                               attrs: Mapping) -> CudaRun:
    """Mean over the batch of -log softmax(z)[label]; saves the probabilities."""
    z, labels = ins
    loss, prob = outs
    check_f32([z, loss, prob], "softmax_cross_entropy")
    nt = reduce_threads(z.shape[0])
    return CudaRun().launch(make_sce(nt), 1, nt, z, labels, prob, loss, name=f"sce_{nt}")


@cuda.jit
def sce_grad(prob, labels, gz):
    n = prob.shape[0]
    k = prob.shape[1]
    inv = 1.0 / n
    for idx in range(cuda.grid(1), n * k, cuda.gridsize(1)):
        i = idx // k
        j = idx % k
        v = float32(prob[i, j] * inv)
        if labels[i] == j:
            v = v - inv
        gz[i, j] = v


@register_kernel("softmax_cross_entropy_grad", "cuda", "NCHW", "backward")
def bind_softmax_cross_entropy_grad(ins: Sequence[Any], outs: Sequence[Any],
                                    attrs: Mapping) -> CudaRun:
    """dL/dz = (softmax(z) - onehot(label)) / N."""
    prob, labels = ins
    check_f32([prob, outs[0]], "softmax_cross_entropy_grad")
    return CudaRun().launch(sce_grad, *grid_1d(prob.size), prob, labels, outs[0])


# ---------------------------------------------------------------- channel sums

@functools.lru_cache(maxsize=None)
def make_channel_sum_kernel(nt: int) -> Any:
    """out[c] = sum of g[:, c, :] (float64 tree reduction), blocks striding over channels."""
    @cuda.jit
    def channel_sum(g, out):
        sh = cuda.shared.array(nt, float64)
        tid = cuda.threadIdx.x
        p = g.shape[2]
        for c in range(cuda.blockIdx.x, g.shape[1], cuda.gridDim.x):
            s = 0.0
            for k in range(tid, g.shape[0] * p, nt):
                s += float64(g[k // p, c, k % p])
            sh[tid] = s
            total = block_sum(sh, tid, nt)
            if tid == 0:
                out[c] = total
    return channel_sum
