"""The numba kernels behind `pointpeft_cli.peft.kernels` (imported only when they are used).

Loops run along the 16 members of a group (one vector of float32 lanes); see `kernels` for the
work split and the numerics.
"""

import numpy as np
from numba import njit, prange

# reassoc/contract let LLVM vectorise the reductions and fuse multiply-adds; the order is
# still fixed at compile time, so results stay deterministic. No nnan/ninf: NaN stays NaN.
FASTMATH = {"reassoc", "contract", "nsz"}


@njit(fastmath=FASTMATH, inline="always")
def exp32(v):
    # Cephes-style expf (range reduction by ln 2, degree-5 polynomial) written out so that
    # it vectorises; libm's expf is a scalar call.
    v = min(max(v, np.float32(-87.3)), np.float32(88.7))
    n = np.floor(v * np.float32(1.44269504) + np.float32(0.5))
    r = v - n * np.float32(0.693359375)
    r = r + n * np.float32(2.12194440e-4)
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    y = p * r * r + r + np.float32(1.0)
    bits = (np.int32(n) + np.int32(127)) << 23
    return y * np.int32(bits).view(np.float32)


@njit(fastmath=FASTMATH, inline="always")
def load_rows(qkv, idx, n, big_n, k, t):
    # t[c, i] = channel c of member i's row: channels outer, the k members along the lanes
    width = qkv.shape[1]
    for i in range(k):
        r = idx[i * big_n + n]
        for c in range(width):
            t[c, i] = qkv[r, c]


@njit(fastmath=FASTMATH, inline="always")
def probabilities(t, k, heads, d, scale, p, peak, total):
    # p[h, j, i] = softmax over j of scale * q_i . k_j, for every head of one group. Every
    # innermost loop runs along the queries i (vectorised, no reduction across lanes), and the
    # loops over keys j sit outside the loops over heads: the heads' dependency chains through
    # `peak` and `total` are independent, so they overlap instead of running one after another.
    inner = heads * d
    for h in range(heads):
        for j in range(k):
            for i in range(k):
                p[h, j, i] = 0.0
            for e in range(d):
                kv = t[inner + h * d + e, j] * scale
                for i in range(k):
                    p[h, j, i] += kv * t[h * d + e, i]
    for h in range(heads):
        for i in range(k):
            peak[h, i] = p[h, 0, i]
            total[h, i] = 0.0
    for j in range(1, k):
        for h in range(heads):
            for i in range(k):
                peak[h, i] = max(peak[h, i], p[h, j, i])
    for j in range(k):
        for h in range(heads):
            for i in range(k):
                v = exp32(p[h, j, i] - peak[h, i])
                p[h, j, i] = v
                total[h, i] += v
    for h in range(heads):
        for i in range(k):
            total[h, i] = np.float32(1.0) / total[h, i]
    for j in range(k):
        for h in range(heads):
            for i in range(k):
                p[h, j, i] *= total[h, i]


@njit(inline="always")
def group_scratch(width, k, heads):
    """Per-work-item buffers: the group's rows transposed, probabilities, row max, row sum."""
    return (
        np.empty((width, k), np.float32),
        np.empty((heads, k, k), np.float32),
        np.empty((heads, k), np.float32),
        np.empty((heads, k), np.float32),
    )


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def attend_forward(qkv, idx, k, heads, scale, groups, out):
    big_n, inner = out.shape[1], out.shape[2]
    d = inner // heads
    for b in prange(big_n // groups):
        t, p, peak, total = group_scratch(qkv.shape[1], k, heads)
        o_t = np.empty((inner, k), np.float32)
        for n in range(b * groups, (b + 1) * groups):
            load_rows(qkv, idx, n, big_n, k, t)
            probabilities(t, k, heads, d, scale, p, peak, total)
            for c in range(inner):
                for i in range(k):
                    o_t[c, i] = 0.0
            for j in range(k):
                for h in range(heads):
                    for e in range(d):
                        c = h * d + e
                        v = t[2 * inner + c, j]
                        for i in range(k):
                            o_t[c, i] += p[h, j, i] * v
            for i in range(k):
                for c in range(inner):
                    out[i, n, c] = o_t[c, i]


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def attend_backward(qkv, idx, k, heads, scale, groups, d_out, d_qkv):
    big_n, inner = d_out.shape[1], d_out.shape[2]
    d = inner // heads
    for b in prange(big_n // groups):
        t, p, peak, total = group_scratch(qkv.shape[1], k, heads)
        ds = np.empty((heads, k, k), np.float32)
        do_t = np.empty((inner, k), np.float32)
        dq_t = np.empty((inner, k), np.float32)
        for n in range(b * groups, (b + 1) * groups):
            load_rows(qkv, idx, n, big_n, k, t)
            for i in range(k):
                for c in range(inner):
                    do_t[c, i] = d_out[i, n, c]
            probabilities(t, k, heads, d, scale, p, peak, total)
            # ds = p * (dO v^T - rowsum(p * dO v^T)) * scale  (peak reused as the rowsum)
            for h in range(heads):
                for j in range(k):
                    for i in range(k):
                        ds[h, j, i] = 0.0
                    for e in range(d):
                        v = t[2 * inner + h * d + e, j]
                        for i in range(k):
                            ds[h, j, i] += do_t[h * d + e, i] * v
                for i in range(k):
                    peak[h, i] = 0.0
            for j in range(k):
                for h in range(heads):
                    for i in range(k):
                        peak[h, i] += p[h, j, i] * ds[h, j, i]
            for j in range(k):
                for h in range(heads):
                    for i in range(k):
                        ds[h, j, i] = p[h, j, i] * (ds[h, j, i] - peak[h, i]) * scale
            for c in range(inner):
                for i in range(k):
                    dq_t[c, i] = 0.0
            for j in range(k):
                for h in range(heads):
                    for e in range(d):
                        c = h * d + e
                        kv = t[inner + c, j]
                        for i in range(k):
                            dq_t[c, i] += ds[h, j, i] * kv
            for j in range(k):
                r = idx[j * big_n + n]
                for h in range(heads):
                    for e in range(d):
                        c = h * d + e
                        dk = np.float32(0.0)
                        dv = np.float32(0.0)
                        for i in range(k):
                            dk += ds[h, j, i] * t[c, i]
                            dv += p[h, j, i] * do_t[c, i]
                        d_qkv[r, inner + c] += dk
                        d_qkv[r, 2 * inner + c] += dv
            for i in range(k):
                r = idx[i * big_n + n]
                for c in range(inner):
                    d_qkv[r, c] += dq_t[c, i]


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def pool_forward(rows, idx, lhs, rhs, k, groups, values, first):
    big_n, c = values.shape
    width = lhs.shape[1]
    width4 = width - width % 4
    for b in prange(big_n // groups):
        acc = np.empty(c, np.float32)
        for n in range(b * groups, (b + 1) * groups):
            for j in range(k):
                m = j * big_n + n
                r = idx[m]
                for ch in range(c):
                    acc[ch] = rows[r, ch]
                # four rank-1 updates per pass over acc: half the loads and stores of one
                for w in range(0, width4, 4):
                    l0, l1, l2, l3 = lhs[m, w], lhs[m, w + 1], lhs[m, w + 2], lhs[m, w + 3]
                    for ch in range(c):
                        acc[ch] += (l0 * rhs[w, ch] + l1 * rhs[w + 1, ch]) + (
                            l2 * rhs[w + 2, ch] + l3 * rhs[w + 3, ch]
                        )
                for w in range(width4, width):
                    lw = lhs[m, w]
                    for ch in range(c):
                        acc[ch] += lw * rhs[w, ch]
                if j == 0:
                    for ch in range(c):
                        values[n, ch] = acc[ch]
                        first[n, ch] = 0
                else:
                    for ch in range(c):
                        v = acc[ch]
                        # strictly greater keeps the first maximal member; NaN wins, as in
                        # torch.max
                        if v > values[n, ch] or (v != v and values[n, ch] == values[n, ch]):
                            values[n, ch] = v
                            first[n, ch] = j


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def pool_backward(grad, first, idx, lhs, rhs_t, k, groups, d_rows, d_lhs, d_rhs_t):
    big_n, c = grad.shape
    width = lhs.shape[1]
    # the update loops run over the width padded to whole vectors (zeros in the padding),
    # into per-group buffers: no remainder loop and no read-modify-write of d_lhs per channel
    padded = -(-width // 16) * 16
    for b in prange(big_n // groups):
        part = np.zeros((c, padded), np.float32)
        rhs_p = np.zeros((c, padded), np.float32)
        rhs_p[:, :width] = rhs_t
        d_member = np.empty((k, padded), np.float32)
        lhs_p = np.zeros((k, padded), np.float32)
        for n in range(b * groups, (b + 1) * groups):
            d_member[:] = 0.0
            for j in range(k):
                lhs_p[j, :width] = lhs[j * big_n + n]
            for ch in range(c):
                j = first[n, ch]
                g = grad[n, ch]
                d_rows[idx[j * big_n + n], ch] += g
                for w in range(padded):
                    d_member[j, w] += g * rhs_p[ch, w]
                    part[ch, w] += g * lhs_p[j, w]
            for j in range(k):
                d_lhs[j * big_n + n] += d_member[j, :width]
        d_rhs_t[b] += part[:, :width]
