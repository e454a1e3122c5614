"""A 16-lane float32 vector type for Numba kernels, as LLVM ``<16 x float>``.

Numba has no vector types, and its auto-vectorizer cannot keep a tile of accumulators
in registers across a reduction loop. A value of type ``f32x16`` is an SSA register: a
conv kernel can hold, say, 8 of them as accumulators while streaming inputs, and every
operation below is a single LLVM vector instruction (an AVX-512 ``zmm`` op on this
machine; LLVM splits it into two ``ymm`` ops on AVX2-only CPUs, so it is correct
everywhere). Loads and stores take a 1-D C-contiguous float32 array and an element
index; the caller guarantees ``index + 16 <= size`` (kernels check shapes at bind time).
"""
from __future__ import annotations

import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

LANES = 16
_F32 = ir.FloatType()
_VEC = ir.VectorType(_F32, LANES)


class F32x16(types.Type):
    def __init__(self):
        super().__init__(name="f32x16")


f32x16 = F32x16()


@register_model(F32x16)
class _F32x16Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VEC)


def _splat(builder, value, value_type):
    """LLVM IR broadcasting a float scalar (cast to float32) into all 16 lanes."""
    s = value if value_type == types.float32 else builder.fptrunc(value, _F32)
    v = builder.insert_element(ir.Constant(_VEC, ir.Undefined), s,
                               ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(v, ir.Constant(_VEC, ir.Undefined),
                                  ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES))


def _ptr(context, builder, arr_type, arr, idx, n=LANES):
    """A pointer to the ``n`` floats (a <n x float>) of array ``arr`` from element ``idx``."""
    ary = context.make_array(arr_type)(context, builder, arr)
    base = builder.gep(ary.data, [idx])
    return builder.bitcast(base, ir.VectorType(_F32, n).as_pointer())


def _f32_arrays(*arrays) -> bool:
    """Whether every one of ``arrays`` (Numba types) is a float32 array."""
    return all(isinstance(a, types.Array) and a.dtype == types.float32 for a in arrays)


@intrinsic
def vload(typingctx, arr, idx):
    """16 consecutive floats of ``arr`` starting at element ``idx``."""
    if not _f32_arrays(arr):
        return None

    def codegen(context, builder, sig, args):
        p = _ptr(context, builder, sig.args[0], args[0], args[1])
        return builder.load(p, align=4)
    return f32x16(arr, idx), codegen


@intrinsic
def vstore(typingctx, arr, idx, v):
    """Store vector ``v`` into ``arr[idx:idx + 16]``."""
    if not (_f32_arrays(arr) and v == f32x16):
        return None

    def codegen(context, builder, sig, args):
        p = _ptr(context, builder, sig.args[0], args[0], args[1])
        builder.store(args[2], p, align=4)
        return context.get_dummy_value()
    return types.none(arr, idx, v), codegen


@intrinsic
def vsplat(typingctx, x):
    """A vector with every lane equal to the scalar ``x``."""
    if not isinstance(x, types.Float):
        return None

    def codegen(context, builder, sig, args):
        return _splat(builder, args[0], sig.args[0])
    return f32x16(x), codegen


def _fma(builder):
    """LLVM's fused multiply-add on <16 x float>, declared in the module being built."""
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VEC, [_VEC] * 3),
                                          "llvm.fma.v16f32")


@intrinsic
def vfma(typingctx, a, b, c):
    """a * b + c, lane-wise, fused (one rounding)."""
    if not (a == b == c == f32x16):
        return None

    def codegen(context, builder, sig, args):
        return builder.call(_fma(builder), args)
    return f32x16(a, b, c), codegen


# ---------------------------------------------------------------------- register tiles
# A tile is a tuple of T f32x16 accumulators (T output pixels x 16 channels). Numba
# specializes a function on the tuple's length, so one kernel source serves every tile
# width: the FMA over a tile is unrolled here, in the IR, rather than written out T times.

def _wide_registers() -> bool:
    """AVX-512: 32 vector registers hold a <16 x float> each. On AVX2 one takes two of
    the 16 ymm registers, so 8 accumulators would fill them all and spill."""
    try:
        import llvmlite.binding as llvm
        return bool(llvm.get_host_cpu_features().get("avx512f"))
    except Exception:  # unknown CPU: the tile that fits everywhere
        return False


# pixels (or GEMM rows) per register tile: 8 x 16 channels with AVX-512, 6 x 16
# otherwise. On AVX2 a tile of 6 takes 12 of the 16 ymm registers, plus 2 for the weights
# and 1 for the broadcast; measured on a Zen 3, 8 spilled and ran 3x slower, and 6 ran
# 1.2-1.5x faster than 4 (more FMAs per weight load, more independent FMA chains). A
# global is a compile-time constant to Numba, and its disk cache is keyed on the CPU.
TILE = 8 if _wide_registers() else 6


@numba.njit(cache=True)
def wide_tiles(ow_n):
    """How many TILE-pixel tiles a row of ``ow_n`` pixels starts with; 4-pixel tiles, then
    single pixels, cover the rest. Fewest passes over the weights (each tile re-reads
    them), ties to the wider tile: 16 -> 6+6+4, 8 -> 4+4, 56 -> 8 x 6 + 4+4 (AVX2)."""
    best, best_passes = 0, ow_n // 4 + ow_n % 4
    for k in range(ow_n // TILE, 0, -1):
        rest = ow_n - k * TILE
        passes = k + rest // 4 + rest % 4
        if passes < best_passes:
            best, best_passes = k, passes
    return best


def _tile_type(accs) -> bool:
    return isinstance(accs, types.UniTuple) and accs.dtype == f32x16


def _as_i64(context, builder, value, ty):
    return context.cast(builder, value, ty, types.int64)


@intrinsic(prefer_literal=True)
def vtile(typingctx, v, n):
    """A tile of ``n`` (a compile-time constant) copies of vector ``v``."""
    if not (v == f32x16 and isinstance(n, types.IntegerLiteral)):
        return None
    tile = types.UniTuple(f32x16, n.literal_value)

    def codegen(context, builder, sig, args):
        out = context.get_constant_undef(tile)
        for j in range(tile.count):
            out = builder.insert_value(out, args[0], j)
        return out
    return tile(v, n), codegen


def _fma_into(builder, accs, j, x, w):
    a = builder.extract_value(accs, j)
    xs = _splat(builder, x, types.float32)
    return builder.insert_value(accs, builder.call(_fma(builder), [xs, w, a]), j)


@intrinsic
def vfma_tile(typingctx, accs, xf, xi, st, w):
    """``accs[j] += xf[xi + j * st] * w`` for every accumulator j of the tile: one weight
    vector against T input values (the tile's pixels), T independent FMA chains."""
    if not (_tile_type(accs) and _f32_arrays(xf) and isinstance(xi, types.Integer)
            and isinstance(st, types.Integer) and w == f32x16):
        return None

    def codegen(context, builder, sig, args):
        accs_v, xf_v, xi_v, st_v, w_v = args
        data = context.make_array(sig.args[1])(context, builder, xf_v).data
        idx = _as_i64(context, builder, xi_v, sig.args[2])
        step = _as_i64(context, builder, st_v, sig.args[3])
        for j in range(sig.args[0].count):
            x = builder.load(builder.gep(data, [idx]))
            accs_v = _fma_into(builder, accs_v, j, x, w_v)
            idx = builder.add(idx, step)
        return accs_v
    return accs(accs, xf, xi, st, w), codegen


def _edge_pixel(builder, data, zero_p, row, iw, sw, width, j, ps=None):
    """Pointer to pixel j of a row tile at the border: column ``iw + j * sw`` of the row at
    ``data[row]`` (``ps`` floats a pixel, default 16), or ``zero_p`` (16 zeros) outside
    ``[0, width)``."""
    i64 = ir.IntType(64)
    zero = ir.Constant(i64, 0)
    col = builder.add(iw, builder.mul(sw, ir.Constant(i64, j)))
    inside = builder.and_(builder.icmp_signed(">=", col, zero),
                          builder.icmp_signed("<", col, width))
    safe = builder.select(inside, col, zero)  # no out-of-range address is formed
    return builder.select(inside, builder.gep(data, [builder.add(
        row, builder.mul(safe, ir.Constant(i64, LANES) if ps is None else ps))]), zero_p)


@intrinsic
def vfma_tile_edge(typingctx, accs, xf, zf, row, iw, sw, width, ps, ic, w):
    """As ``vfma_tile`` for a tile that straddles the left or right border of its row:
    pixel j reads channel ``ic`` of column ``iw + j * sw`` of the row starting at
    ``xf[row]`` (``ps`` floats a pixel, ``ic < ps <= 16``), or ``zf[ic]`` (a zero vector)
    where that column is outside ``[0, width)``. The choice is a pointer select that does
    not depend on ``ic``, so LLVM hoists it out of the channel loop: the loop body is a
    load and an FMA per pixel, as in the interior (a select on each loaded value cost 20%
    at 8x8 planes)."""
    ints = (row, iw, sw, width, ps, ic)
    if not (_tile_type(accs) and _f32_arrays(xf, zf)
            and all(isinstance(t, types.Integer) for t in ints) and w == f32x16):
        return None

    def codegen(context, builder, sig, args):
        accs_v, w_v = args[0], args[9]
        data = context.make_array(sig.args[1])(context, builder, args[1]).data
        zero_p = context.make_array(sig.args[2])(context, builder, args[2]).data
        row_v, iw_v, sw_v, width_v, ps_v, ic_v = (_as_i64(context, builder, v, t)
                                                  for v, t in zip(args[3:9], sig.args[3:9]))
        for j in range(sig.args[0].count):
            p = _edge_pixel(builder, data, zero_p, row_v, iw_v, sw_v, width_v, j, ps_v)
            x = builder.load(builder.gep(p, [ic_v]))
            accs_v = _fma_into(builder, accs_v, j, x, w_v)
        return accs_v
    return accs(accs, xf, zf, row, iw, sw, width, ps, ic, w), codegen


def _strided_ok(tile, arr, idx, stride) -> bool:
    return (_tile_type(tile) and _f32_arrays(arr) and isinstance(idx, types.Integer)
            and isinstance(stride, types.Integer))


def _strided_ptrs(context, builder, sig, args, arr_at=1):
    """Pointers to the vectors ``arr[idx + j * stride:][:16]`` of a tile, j < T, for an
    intrinsic taking (tile, arr, idx, stride, ...); ``arr_at``: the argument that is
    ``arr`` (another array read at the same indices)."""
    data = context.make_array(sig.args[arr_at])(context, builder, args[arr_at]).data
    idx_v = _as_i64(context, builder, args[2], sig.args[2])
    step = _as_i64(context, builder, args[3], sig.args[3])
    ptrs = []
    for _ in range(sig.args[0].count):
        ptrs.append(builder.bitcast(builder.gep(data, [idx_v]), _VEC.as_pointer()))
        idx_v = builder.add(idx_v, step)
    return ptrs


@intrinsic
def vload_tile(typingctx, like, arr, idx, stride):
    """A tile of the type of ``like``: vector j is ``arr[idx + j * stride:][:16]``."""
    if not _strided_ok(like, arr, idx, stride):
        return None

    def codegen(context, builder, sig, args):
        out = args[0]
        for j, p in enumerate(_strided_ptrs(context, builder, sig, args)):
            out = builder.insert_value(out, builder.load(p, align=4), j)
        return out
    return like(like, arr, idx, stride), codegen


@intrinsic
def vstore_tile(typingctx, accs, arr, idx, stride):
    """Store vector j of the tile at ``arr[idx + j * stride:][:16]``."""
    if not _strided_ok(accs, arr, idx, stride):
        return None

    def codegen(context, builder, sig, args):
        for j, p in enumerate(_strided_ptrs(context, builder, sig, args)):
            builder.store(builder.extract_value(args[0], j), p, align=4)
        return context.get_dummy_value()
    return types.none(accs, arr, idx, stride), codegen


@intrinsic
def vload_tile_edge(typingctx, like, xf, zf, row, iw, sw, width):
    """A tile of the type of ``like`` whose vector j is the pixel at column ``iw + j * sw``
    of the row starting at ``xf[row]`` (16 floats a pixel), or the zero vector ``zf``
    where that column is outside ``[0, width)``: a row tile that straddles the border."""
    ints = (row, iw, sw, width)
    if not (_tile_type(like) and _f32_arrays(xf, zf)
            and all(isinstance(t, types.Integer) for t in ints)):
        return None

    def codegen(context, builder, sig, args):
        out = args[0]
        data = context.make_array(sig.args[1])(context, builder, args[1]).data
        zero_p = context.make_array(sig.args[2])(context, builder, args[2]).data
        row_v, iw_v, sw_v, width_v = (_as_i64(context, builder, v, t)
                                      for v, t in zip(args[3:7], sig.args[3:7]))
        for j in range(sig.args[0].count):
            p = _edge_pixel(builder, data, zero_p, row_v, iw_v, sw_v, width_v, j)
            out = builder.insert_value(out, builder.load(builder.bitcast(p, _VEC.as_pointer()),
                                                         align=4), j)
        return out
    return like(like, xf, zf, row, iw, sw, width), codegen


@intrinsic
def vfma_vec_tile(typingctx, accs, xs, w):
    """``accs[j] += xs[j] * w`` for every vector j of the tiles (lane-wise: a depthwise
    tap, each channel times its own weight)."""
    if not (_tile_type(accs) and xs == accs and w == f32x16):
        return None

    def codegen(context, builder, sig, args):
        fn = _fma(builder)
        accs_v = args[0]
        for j in range(sig.args[0].count):
            a = builder.extract_value(accs_v, j)
            accs_v = builder.insert_value(
                accs_v, builder.call(fn, [builder.extract_value(args[1], j), args[2], a]), j)
        return accs_v
    return accs(accs, xs, w), codegen


@intrinsic
def vadd_tile(typingctx, a, b):
    """``a[j] + b[j]`` for every vector j of two tiles of the same type."""
    if not (_tile_type(a) and a == b):
        return None

    def codegen(context, builder, sig, args):
        out = args[0]
        for j in range(sig.args[0].count):
            out = builder.insert_value(out, builder.fadd(builder.extract_value(args[0], j),
                                                         builder.extract_value(args[1], j)), j)
        return out
    return a(a, b), codegen


@intrinsic
def vadd(typingctx, a, b):
    if not (a == b == f32x16):
        return None

    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])
    return f32x16(a, b), codegen


@intrinsic
def vmul(typingctx, a, b):
    if not (a == b == f32x16):
        return None

    def codegen(context, builder, sig, args):
        return builder.fmul(args[0], args[1])
    return f32x16(a, b), codegen


@intrinsic
def vmax_nan(typingctx, acc, x):
    """Lane-wise running max ``x if x > acc or x is NaN else acc``: PyTorch's max pooling
    (a NaN wins and stays; of equal values, -0.0 and +0.0, the earlier one is kept).
    Three AVX2 instructions a half (max, unordered compare, blend), where
    ``llvm.maximum`` (which also orders -0.0 below +0.0) expands to about eight."""
    if not (acc == x == f32x16):
        return None

    def codegen(context, builder, sig, args):
        a, v = args
        m = builder.select(builder.fcmp_ordered(">", v, a), v, a)
        return builder.select(builder.fcmp_unordered("uno", v, v), v, m)
    return f32x16(acc, x), codegen


@intrinsic
def fmax_nan(typingctx, a, b):
    """Scalar float32 max where NaN wins (PyTorch's max pooling), as ``llvm.maximum``.

    Written as ``v if v > m or v != v else m``, a running max ``o[q] = max(v[q], o[q])``
    is a select of the old value, which LLVM turns into a masked store (``vmaskmovps``):
    microcoded on AMD, it made pooling ~3 cycles per element. ``llvm.maximum`` of two
    loaded values stays a plain vector store. (Against a constant LLVM folds it back
    into a select: see ``activation.apply_act`` for relu.)
    """
    if not (a == b == types.float32):
        return None

    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_F32, [_F32] * 2),
                                            "llvm.maximum.f32")
        return builder.call(fn, args)
    return types.float32(a, b), codegen


@intrinsic
def vzero_taps(typingctx, cols):
    """A tile of 4 * len(cols) zero vectors (``cols``: a tuple whose length, known when
    Numba compiles, is a kernel's width): vfma_taps's accumulators."""
    if not (isinstance(cols, types.UniTuple) and isinstance(cols.dtype, types.Integer)):
        return None
    tile = types.UniTuple(f32x16, 4 * cols.count)

    def codegen(context, builder, sig, args):
        out = context.get_constant_undef(tile)
        zero = ir.Constant(_VEC, [0.0] * LANES)
        for j in range(tile.count):
            out = builder.insert_value(out, zero, j)
        return out
    return tile(cols), codegen


@intrinsic
def vfma_taps(typingctx, accs, xf, xi, g0, g1, g2, g3):
    """One kernel row of a direct conv's dL/dW: for each tap b < T/4 (T = len(accs)),
    ``accs[4b + k] += xf[xi + b:][:16] * g_k``: the row's T/4 shifted input vectors
    against 4 output channels' dL/dy vectors, each loaded once for the whole row."""
    if not (_tile_type(accs) and accs.count % 4 == 0 and _f32_arrays(xf)
            and isinstance(xi, types.Integer) and g0 == g1 == g2 == g3 == f32x16):
        return None

    def codegen(context, builder, sig, args):
        accs_v, gs = args[0], args[3:7]
        idx = _as_i64(context, builder, args[2], sig.args[2])
        fma = _fma(builder)
        for b in range(sig.args[0].count // 4):
            tap = builder.add(idx, ir.Constant(idx.type, b))
            x = builder.load(_ptr(context, builder, sig.args[1], args[1], tap), align=4)
            for k in range(4):
                a = builder.extract_value(accs_v, 4 * b + k)
                accs_v = builder.insert_value(accs_v, builder.call(fma, [x, gs[k], a]), 4 * b + k)
        return accs_v
    return accs(accs, xf, xi, g0, g1, g2, g3), codegen


# ---------------------------------------------------------------- 2x2 max-pool windows
# ``n`` (8 or 16) adjacent 2x2 stride-2 windows: their two input rows are 2n consecutive
# floats each, split into the windows' left (even) and right (odd) columns by a shuffle.
# Written as a scalar loop the backward stayed scalar (~9 ns a window): LLVM does not
# vectorize the stride-2 accesses with the selects between them. (The forward's loop,
# a chain of selects into one store a window, does vectorize: as fast as this.)

def _pairs(context, builder, arr_type, arr, idx, n):
    both = builder.load(_ptr(context, builder, arr_type, arr, idx, 2 * n), align=4)
    pick = lambda first: ir.Constant(ir.VectorType(ir.IntType(32), n),  # noqa: E731
                                     list(range(first, 2 * n, 2)))
    return (builder.shuffle_vector(both, both, pick(0)),
            builder.shuffle_vector(both, both, pick(1)))


def _window_leads(builder, a, b, c, d):
    """Masks of the taps b, c, d that take the lead in a running max over a, b, c, d as
    the forward pool computes it (a NaN wins and stays): the last one set is the argmax,
    a if none is."""
    def better(v, m):
        return builder.or_(builder.fcmp_ordered(">", v, m), builder.fcmp_unordered("uno", v, v))
    tb = better(b, a)
    m = builder.select(tb, b, a)
    tc = better(c, m)
    m = builder.select(tc, c, m)
    return tb, tc, better(d, m)


@intrinsic(prefer_literal=True)
def max2x2_grad(typingctx, xf, gf, gxf, i0, i1, ig, n):
    """dL/dx of ``n`` 2x2 windows (rows at ``xf[i0]``, ``xf[i1]``; dL/dx at the same
    indices of ``gxf``): each window's dL/dy ``gf[ig + j]`` goes to its argmax (the first
    maximum, or the last NaN, as PyTorch), zero to its other three inputs."""
    if not (_f32_arrays(xf, gf, gxf) and isinstance(n, types.IntegerLiteral)):
        return None
    w = n.literal_value

    def codegen(context, builder, sig, args):
        a, b = _pairs(context, builder, sig.args[0], args[0], args[3], w)
        c, d = _pairs(context, builder, sig.args[0], args[0], args[4], w)
        tb, tc, td = _window_leads(builder, a, b, c, d)
        g = builder.load(_ptr(context, builder, sig.args[1], args[1], args[5], w), align=4)
        zero = ir.Constant(ir.VectorType(_F32, w), [0.0] * w)
        later_c = builder.not_(td)  # c is the argmax if it led and d did not overtake
        later_b = builder.and_(later_c, builder.not_(tc))
        later_a = builder.and_(later_b, builder.not_(tb))
        ga = builder.select(later_a, g, zero)
        gb = builder.select(builder.and_(later_b, tb), g, zero)
        gc = builder.select(builder.and_(later_c, tc), g, zero)
        gd = builder.select(td, g, zero)
        mix = ir.Constant(ir.VectorType(ir.IntType(32), 2 * w),
                          [k // 2 + (w if k % 2 else 0) for k in range(2 * w)])
        for row, left, right in ((args[3], ga, gb), (args[4], gc, gd)):
            builder.store(builder.shuffle_vector(left, right, mix),
                          _ptr(context, builder, sig.args[2], args[2], row, 2 * w), align=4)
        return context.get_dummy_value()
    return types.none(xf, gf, gxf, i0, i1, ig, n), codegen


# ---------------------------------------------------------------------- epilogues

def _epilogue(builder, accs, ptrs, res_ptrs, has_res, act, alpha):
    """LLVM IR of the epilogue of a tile: the residual added where ``has_res`` (loaded
    only then), then the activation of code ``act`` (1 relu, 2 leaky_relu with slope
    ``alpha``; NaN passes through, as in torch), each vector stored once at ``ptrs[j]``."""
    _epilogue_of(builder, [builder.extract_value(accs, j) for j in range(len(ptrs))], ptrs,
                 res_ptrs, has_res, act, alpha)


def _epilogue_of(builder, vals, ptrs, res_ptrs, has_res, act, alpha):
    """``_epilogue`` of the vectors ``vals`` (LLVM values)."""
    entry = builder.basic_block
    with builder.if_then(has_res):
        added = [builder.fadd(v, builder.load(p, align=4)) for v, p in zip(vals, res_ptrs)]
        then = builder.basic_block
    merged = []
    for v, a in zip(vals, added):
        phi = builder.phi(_VEC)
        phi.add_incoming(v, entry)
        phi.add_incoming(a, then)
        merged.append(phi)
    zero = ir.Constant(_VEC, [0.0] * LANES)
    slope = _splat(builder, alpha, types.float32)
    i64 = ir.IntType(64)
    is_relu = builder.icmp_signed("==", act, ir.Constant(i64, 1))
    is_leaky = builder.icmp_signed("==", act, ir.Constant(i64, 2))
    for v, p in zip(merged, ptrs):
        neg = builder.fcmp_ordered("<", v, zero)
        out = builder.select(is_relu, builder.select(neg, zero, v),
                             builder.select(is_leaky, builder.select(neg, builder.fmul(v, slope),
                                                                     v), v))
        builder.store(out, p, align=4)


@intrinsic
def store_tile(typingctx, accs, of, o, stride, rf, has_res, act, alpha):
    """Store vector j of the tile at ``of[o + j * stride:][:16]`` after the conv epilogue
    in registers: the residual at the same index of ``rf`` added where ``has_res``, then
    activation ``act`` (0 none, 1 relu, 2 leaky_relu with slope ``alpha``). An intrinsic,
    not an inlined function: passing the arrays through an inlined call reference-counted
    them at every tile (atomic NRT_incref/decref calls, 35% of a depthwise conv at 4x4)."""
    if not (_strided_ok(accs, of, o, stride) and _f32_arrays(rf)
            and isinstance(has_res, types.Boolean) and isinstance(act, types.Integer)
            and isinstance(alpha, types.Float)):
        return None

    def codegen(context, builder, sig, args):
        ptrs = _strided_ptrs(context, builder, sig, args)
        res_ptrs = _strided_ptrs(context, builder, sig, args, arr_at=4)
        _epilogue(builder, args[0], ptrs, res_ptrs, args[5],
                  _as_i64(context, builder, args[6], sig.args[6]),
                  context.cast(builder, args[7], sig.args[7], types.float32))
        return context.get_dummy_value()
    return types.none(accs, of, o, stride, rf, has_res, act, alpha), codegen


# ---------------------------------------------------------------------- Winograd F(2x2, 3x3)
# The input and output transforms of conv_winograd, as straight-line IR: written as
# inlined Numba functions they took ~3 s of the kernel's 3.8 s compile.

def _bt_rows(builder, d):
    """One direction of B^T d B on four vectors: (d0 - d2, d1 + d2, d2 - d1, d1 - d3)."""
    return [builder.fsub(d[0], d[2]), builder.fadd(d[1], d[2]), builder.fsub(d[2], d[1]),
            builder.fsub(d[1], d[3])]


def _at_rows(builder, m):
    """One direction of A^T m A on four vectors: (m0 + m1 + m2, m1 - m2 - m3)."""
    return [builder.fadd(builder.fadd(m[0], m[1]), m[2]),
            builder.fsub(builder.fsub(m[1], m[2]), m[3])]


@intrinsic
def winograd_input(typingctx, v, vi, vs, xf, zf, xb, ih0, iw0, h, w):
    """V = B^T d B of the 4x4 patch ``d`` of 16-channel pixels whose top left is (ih0,
    iw0) in the plane at ``xf[xb]`` (h x w pixels; those outside read the zeros ``zf``),
    position xi = 4 * row + column stored at ``v[vi + xi * vs:][:16]``."""
    ints = (vi, vs, xb, ih0, iw0, h, w)
    if not (_f32_arrays(v, xf, zf) and all(isinstance(t, types.Integer) for t in ints)):
        return None

    def codegen(context, builder, sig, args):
        v_p, x_p, z_p = (context.make_array(sig.args[k])(context, builder, args[k]).data
                         for k in (0, 3, 4))
        vi_v, vs_v, xb_v, ih0_v, iw0_v, h_v, w_v = (
            _as_i64(context, builder, args[k], sig.args[k]) for k in (1, 2, 5, 6, 7, 8, 9))
        i64 = ir.IntType(64)
        vec_p = _VEC.as_pointer()
        d = [[None] * 4 for _ in range(4)]
        for i in range(4):
            ih = builder.add(ih0_v, ir.Constant(i64, i))
            row_ok = builder.icmp_unsigned("<", ih, h_v)  # negative: huge, so outside
            for j in range(4):
                iw = builder.add(iw0_v, ir.Constant(i64, j))
                ok = builder.and_(row_ok, builder.icmp_unsigned("<", iw, w_v))
                at = builder.add(xb_v, builder.mul(builder.add(builder.mul(ih, w_v), iw),
                                                   ir.Constant(i64, LANES)))
                at = builder.select(ok, at, ir.Constant(i64, 0))  # no out-of-range address
                ptr = builder.select(ok, builder.gep(x_p, [at]), z_p)
                d[i][j] = builder.load(builder.bitcast(ptr, vec_p), align=4)
        cols = [_bt_rows(builder, [d[i][j] for i in range(4)]) for j in range(4)]  # [j][i]
        for i in range(4):
            row = _bt_rows(builder, [cols[j][i] for j in range(4)])
            for j in range(4):
                at = builder.add(vi_v, builder.mul(vs_v, ir.Constant(i64, 4 * i + j)))
                builder.store(row[j], builder.bitcast(builder.gep(v_p, [at]), vec_p), align=4)
        return context.get_dummy_value()
    return types.none(v, vi, vs, xf, zf, xb, ih0, iw0, h, w), codegen


@intrinsic
def winograd_output(typingctx, m, mi, ms, bias, of, o, row, rf, has_res, act, alpha,
                    two_cols, two_rows):
    """Y = A^T M A + bias for the 16 vectors ``m[mi + xi * ms:][:16]`` (xi = 4 * row +
    column), stored through the conv epilogue (as ``store_tile``) at ``of[o]`` (pixel
    (0, 0)), ``o + 16`` (0, 1) where ``two_cols``, ``o + row`` and ``o + row + 16`` where
    ``two_rows``: an output plane's odd last column and row take one pixel of the two."""
    ints = (mi, ms, o, row, act)
    if not (_f32_arrays(m, of, rf) and bias == f32x16 and isinstance(alpha, types.Float)
            and all(isinstance(t, types.Integer) for t in ints)
            and isinstance(has_res, types.Boolean) and isinstance(two_cols, types.Boolean)
            and isinstance(two_rows, types.Boolean)):
        return None

    def codegen(context, builder, sig, args):
        m_p, o_p, r_p = (context.make_array(sig.args[k])(context, builder, args[k]).data
                         for k in (0, 4, 7))
        mi_v, ms_v, o_v, row_v = (_as_i64(context, builder, args[k], sig.args[k])
                                  for k in (1, 2, 5, 6))
        act_v = _as_i64(context, builder, args[9], sig.args[9])
        alpha_v = context.cast(builder, args[10], sig.args[10], types.float32)
        has_res, two_cols, two_rows = args[8], args[11], args[12]
        i64 = ir.IntType(64)
        vec_p = _VEC.as_pointer()
        mv = [builder.load(builder.bitcast(builder.gep(m_p, [builder.add(
            mi_v, builder.mul(ms_v, ir.Constant(i64, xi)))]), vec_p), align=4)
            for xi in range(16)]
        cols = [_at_rows(builder, [mv[4 * i + j] for i in range(4)]) for j in range(4)]
        y = [[builder.fadd(v, args[3]) for v in _at_rows(builder, [cols[j][r] for j in
                                                                   range(4)])]
             for r in range(2)]

        def store(val, at):
            ptr = builder.bitcast(builder.gep(o_p, [at]), vec_p)
            res = builder.bitcast(builder.gep(r_p, [at]), vec_p)
            _epilogue_of(builder, [val], [ptr], [res], has_res, act_v, alpha_v)

        def store_row(r, at):
            store(y[r][0], at)
            with builder.if_then(two_cols):
                store(y[r][1], builder.add(at, ir.Constant(i64, LANES)))
        store_row(0, o_v)
        with builder.if_then(two_rows):
            store_row(1, builder.add(o_v, row_v))
        return context.get_dummy_value()
    return types.none(m, mi, ms, bias, of, o, row, rf, has_res, act, alpha, two_cols,
                      two_rows), codegen
