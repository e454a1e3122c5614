"""Training kernels of the normalizations and the loss (NCHW and (N, C)).

BatchNorm in training mode normalizes with the batch statistics (biased variance),
updates the running statistics in place as PyTorch does (momentum, unbiased variance),
and saves the batch mean and 1/sqrt(var + eps) for its backward. Sums accumulate in
float64: a channel of a 32x32 batch of 64 has 65k elements.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numba
import numpy as np
from numba import prange

from ..registry import register_kernel
from .activation import act_code, act_grad, apply_act
from .jit import PARALLEL


def _by_channel(a: np.ndarray) -> np.ndarray:
    return a.reshape(a.shape[0], a.shape[1], -1)


@numba.njit(cache=True, inline="always")
def channel_moments(x, c):
    """Mean and sum of squared deviations of channel ``c`` of x (N, C, P), two passes in
    float64 (the one-pass formula loses digits when the mean is large)."""
    n, _, p = x.shape
    s = 0.0
    for i in range(n):
        for k in range(p):
            s += x[i, c, k]
    mean = s / (n * p)
    v = 0.0
    for i in range(n):
        for k in range(p):
            d = x[i, c, k] - mean
            v += d * d
    return mean, v


@numba.njit(cache=True, parallel=PARALLEL)
def _bn_train(x, y, gamma, beta, rmean, rvar, mean_out, invstd_out, eps, momentum, code,
              alpha):
    n, c_n, p = x.shape
    m = n * p
    for c in prange(c_n):
        mean, v = channel_moments(x, c)
        var = v / m
        inv = 1.0 / math.sqrt(var + eps)
        scale = np.float32(gamma[c] * inv)
        shift = np.float32(beta[c] - mean * inv * gamma[c])
        for i in range(n):
            for k in range(p):
                y[i, c, k] = apply_act(x[i, c, k] * scale + shift, code, alpha)
        mean_out[c] = mean
        invstd_out[c] = inv
        rmean[c] = (1.0 - momentum) * rmean[c] + momentum * mean
        rvar[c] = (1.0 - momentum) * rvar[c] + momentum * var * m / (m - 1)


@register_kernel("batch_norm_train")
def bind_batch_norm_train(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray],
                          attrs: Mapping):
    """Batch statistics, normalize (+ fused activation), update running statistics."""
    if attrs.get("sync"):  # statistics over every rank's batch (distributed training)
        from .comm import bind_sync_batch_norm_train
        return bind_sync_batch_norm_train(ins, outs, attrs)
    x, gamma, beta, rmean, rvar = ins
    y, mean, invstd = outs
    m = x.size // x.shape[1]
    if m < 2:
        raise ValueError(f"batch_norm in training needs more than 1 value per channel, got "
                         f"input {x.shape}; use a batch of at least 2")
    if not (rmean.flags.writeable and rvar.flags.writeable):
        raise ValueError("batch_norm_train updates the running statistics in place: they "
                         "must be writable arrays")
    x3, y3 = _by_channel(x), _by_channel(y)
    eps, mom = float(attrs["eps"]), float(attrs["momentum"])
    code, alpha = act_code(attrs.get("activation", "none")), np.float32(attrs.get("alpha", 0.0))
    return lambda: _bn_train(x3, y3, gamma, beta, rmean, rvar, mean, invstd, eps, mom, code,
                             alpha)


@numba.njit(cache=True, inline="always")
def _upstream(gy, s, i, c, k, code, alpha):
    # dL/d(bn output): gy itself, or, with a fused activation, gy through its gradient
    g = gy[i, c, k]
    if code == 0:
        return g
    return act_grad(g, s[i, c, k], code, alpha)


@numba.njit(cache=True, inline="always")
def channel_grad_sums(gy, x, s, c, mu, code, alpha):
    """sum(g) and sum(g * (x - mean)) over channel ``c``, g = dL/d(bn output)."""
    n, _, p = x.shape
    sg = 0.0
    sgx = 0.0
    for i in range(n):
        for k in range(p):
            g = _upstream(gy, s, i, c, k, code, alpha)
            sg += g
            sgx += g * (x[i, c, k] - mu)
    return sg, sgx


@numba.njit(cache=True, inline="always")
def channel_grad_input(gy, x, s, gx, c, mu, inv, gamma_c, sg, sgx, m, code, alpha):
    """dx of channel ``c`` from the sums above over ``m`` values:
    gamma*inv/m * (m*g - sum(g) - xhat*sum(g*xhat))."""
    n, _, p = x.shape
    k1 = gamma_c * inv / m
    xh_g = sgx * inv
    for i in range(n):
        for k in range(p):
            xh = (x[i, c, k] - mu) * inv
            g = _upstream(gy, s, i, c, k, code, alpha)
            gx[i, c, k] = k1 * (m * g - sg - xh * xh_g)


@numba.njit(cache=True, parallel=PARALLEL)
def _bn_grad(gy, x, gamma, mean, invstd, gx, ggamma, gbeta, s, code, alpha):
    n, c_n, p = x.shape
    m = n * p
    for c in prange(c_n):
        mu = mean[c]
        inv = invstd[c]
        sg, sgx = channel_grad_sums(gy, x, s, c, mu, code, alpha)
        ggamma[c] = sgx * inv
        gbeta[c] = sg
        channel_grad_input(gy, x, s, gx, c, mu, inv, gamma[c], sg, sgx, m, code, alpha)


@register_kernel("batch_norm_grad", mode="backward")
def bind_batch_norm_grad(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray],
                         attrs: Mapping):
    """dL/dx, dL/dgamma, dL/dbeta of training-mode batch norm (batch statistics).

    With ``activation`` set (fused by fuse_epilogues), ``gy`` is the gradient of the
    activation's output and a sixth input holds what its gradient reads (the saved
    output, or input for leaky_relu): the activation's backward costs no extra sweep."""
    if attrs.get("sync"):  # synchronized BatchNorm (distributed training)
        from .comm import bind_sync_batch_norm_grad
        return bind_sync_batch_norm_grad(ins, outs, attrs)
    gy, x, gamma, mean, invstd = ins[:5]
    gx, ggamma, gbeta = outs
    code, alpha = act_code(attrs.get("activation", "none")), np.float32(attrs.get("alpha", 0.0))
    g3, x3, gx3 = _by_channel(gy), _by_channel(x), _by_channel(gx)
    s3 = _by_channel(ins[5]) if code else g3
    return lambda: _bn_grad(g3, x3, gamma, mean, invstd, gx3, ggamma, gbeta, s3, code, alpha)


@numba.njit(cache=True, parallel=PARALLEL)
def _lrn_grad(gy, x, gx, size, alpha, beta, k):
    # y_c = x_c * s_c^-beta with s_c = k + alpha/size * sum_{c' in W(c)} x_c'^2 and
    # W(c) = [c - size//2, c + (size-1)//2]; channel j is in W(c) for c in [j-hi, j+lo].
    n, c_n, hw = x.shape
    lo, hi = size // 2, (size - 1) // 2
    coef = alpha / size
    for t in prange(n * hw):
        i = t // hw
        p = t % hw
        s = np.empty(c_n, np.float64)
        for c in range(c_n):
            acc = 0.0
            for j in range(max(0, c - lo), min(c_n, c + hi + 1)):
                acc += x[i, j, p] * x[i, j, p]
            s[c] = k + coef * acc
        t_c = np.empty(c_n, np.float64)  # gy_c * x_c * s_c^(-beta-1)
        for c in range(c_n):
            t_c[c] = gy[i, c, p] * x[i, c, p] * s[c] ** (-beta - 1.0)
        for j in range(c_n):
            acc = 0.0
            for c in range(max(0, j - hi), min(c_n, j + lo + 1)):
                acc += t_c[c]
            gx[i, j, p] = gy[i, j, p] * s[j] ** (-beta) - 2.0 * coef * beta * x[i, j, p] * acc


@register_kernel("local_response_norm_grad", mode="backward")
def bind_lrn_grad(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], attrs: Mapping):
    gy, x = ins
    a = attrs["fwd"]
    g3, x3, gx3 = _by_channel(gy), _by_channel(x), _by_channel(outs[0])
    size = int(a["size"])
    alpha, beta, k = (float(a[n]) for n in ("alpha", "beta", "k"))
    return lambda: _lrn_grad(g3, x3, gx3, size, alpha, beta, k)


@numba.njit(cache=True, parallel=PARALLEL)
def _softmax_grad(gy, y, gx):
    n, c_n, hw = y.shape
    for t in prange(n * hw):
        i = t // hw
        p = t % hw
        s = 0.0
        for c in range(c_n):
            s += gy[i, c, p] * y[i, c, p]
        for c in range(c_n):
            gx[i, c, p] = y[i, c, p] * (gy[i, c, p] - s)


@register_kernel("softmax_grad", mode="backward")
def bind_softmax_grad(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray], attrs: Mapping):
    g3, y3, gx3 = _by_channel(ins[0]), _by_channel(ins[1]), _by_channel(outs[0])
    return lambda: _softmax_grad(g3, y3, gx3)


@numba.njit(cache=True, parallel=PARALLEL)
def _sce(z, labels, prob, losses):
    n, k = z.shape
    for i in prange(n):
        m = z[i, 0]
        for j in range(1, k):
            if z[i, j] > m:
                m = z[i, j]
        s = 0.0
        for j in range(k):
            e = math.exp(z[i, j] - m)
            prob[i, j] = e
            s += e
        for j in range(k):
            prob[i, j] /= s
        lab = labels[i]
        if lab < 0 or lab >= k:
            losses[i] = np.nan
        else:
            losses[i] = m + math.log(s) - z[i, lab]


@register_kernel("softmax_cross_entropy")
def bind_softmax_cross_entropy(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray],
                               attrs: Mapping):
    """Mean over the batch of -log softmax(z)[label]; saves the probabilities."""
    z, labels = ins
    loss, prob = outs
    losses = np.empty(z.shape[0], np.float64)

    def run():
        _sce(z, labels, prob, losses)
        loss[0] = losses.mean()
    return run


@numba.njit(cache=True, parallel=PARALLEL)
def _sce_grad(prob, labels, gz):
    n, k = prob.shape
    inv = 1.0 / n
    for i in prange(n):
        for j in range(k):
            gz[i, j] = prob[i, j] * inv
        lab = labels[i]
        if 0 <= lab < k:
            gz[i, lab] -= inv


@register_kernel("softmax_cross_entropy_grad", mode="backward")
def bind_softmax_cross_entropy_grad(ins: Sequence[np.ndarray], outs: Sequence[np.ndarray],
                                    attrs: Mapping):
    """dL/dz = (softmax(z) - onehot(label)) / N."""
    prob, labels = ins
    return lambda: _sce_grad(prob, labels, outs[0])
