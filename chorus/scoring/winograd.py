"""DNSMOS's shared P.835 convolutions in fp32 with Winograd's F(6x6, 3x3) algorithm.

95% of DNSMOS's time is four 3x3 convolutions over full-resolution spectrogram frames, and
onnxruntime already runs them near this CPU's fp32 matrix-multiply peak: the only way to be
much faster without losing precision is to multiply less. Winograd's minimal filtering
(Lavin & Gray, 2015) computes each 6x6 output tile from an 8x8 input tile with 64
multiplications per channel pair instead of 324: the input and the kernels are transformed
(additions and small constants), multiplied position by position (64 batched matrix
products over channels, sgemm through numba), and transformed back. The result
differs from direct convolution by float rounding only (~3e-6 relative, against ~2e-6 for
the 4x4 tiles this module used before, which needed 1.27x the products: 9% slower overall).

The transforms are memory-bound loops, compiled with numba. All four layers run as one
stream, a few tile rows at a time: each layer keeps only the rows its successor still needs
in a small ring buffer, so the intermediate maps stay in cache, however long the input, and
no rows are computed twice. The first convolution (one input channel) runs directly.
Layout is channels-last; rows and columns outside the input read as zero, which is each
layer's padding.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Kernel transform G of F(6, 3) (interpolation points 0, +-1, +-2, +-1/2 and infinity); the
# input (B^T) and output (A^T) transforms are spelled out in the loops below.
G = np.array(
    [
        [1, 0, 0],
        [-2 / 9, -2 / 9, -2 / 9],
        [-2 / 9, 2 / 9, -2 / 9],
        [1 / 90, 1 / 45, 2 / 45],
        [1 / 90, -1 / 45, 2 / 45],
        [32 / 45, 16 / 45, 8 / 45],
        [32 / 45, -16 / 45, 8 / 45],
        [0, 0, 1],
    ]
)
f32 = np.float32  # constants in the transforms: float64 ones would promote the arithmetic
TILE = 6  # output rows and columns per tile; each reads TILE + 2 of its input
ROWS = 2  # tile rows (12 frames) transformed, multiplied and transformed back at a time
# Rows a ring holds: a block reads TILE * ROWS + 2 of them while its producer may be one
# block ahead. One more row, after them, is always zero: the padding rows read it.
RING = 2 * TILE * ROWS + 4


@njit(nogil=True, cache=True)
def _first_conv(spectrum, weights, bias, y0, y1, ring):
    """Rows y0 <= y < y1 (bordered: row y is frame y - 1) of the first layer, relu(3x3 conv,
    one input channel) of the zero-bordered (T + 2, F + 2) ``spectrum``, into ring rows
    y % RING; weights are (9, C). Rows outside the frames are left alone: readers skip them."""
    frames, bins = spectrum.shape[0] - 2, spectrum.shape[1] - 2
    for y in range(max(y0, 1), min(y1, frames + 1)):
        t, row = y - 1, y % RING
        for f in range(bins):
            s0, s1, s2 = spectrum[t, f], spectrum[t, f + 1], spectrum[t, f + 2]
            s3, s4, s5 = spectrum[t + 1, f], spectrum[t + 1, f + 1], spectrum[t + 1, f + 2]
            s6, s7, s8 = spectrum[t + 2, f], spectrum[t + 2, f + 1], spectrum[t + 2, f + 2]
            for c in range(weights.shape[1]):
                value = bias[c] + (
                    weights[0, c] * s0
                    + weights[1, c] * s1
                    + weights[2, c] * s2
                    + weights[3, c] * s3
                    + weights[4, c] * s4
                    + weights[5, c] * s5
                    + weights[6, c] * s6
                    + weights[7, c] * s7
                    + weights[8, c] * s8
                )
                ring[row, f + 1, c] = max(value, f32(0))


@njit(nogil=True, cache=True)
def _ring_row(y, frames):
    """Where bordered row y lives in a ring: y % RING inside the frames, else the zero row."""
    return y % RING if 1 <= y <= frames else RING


@njit(nogil=True, cache=True, inline="always")
def _bt(d0, d1, d2, d3, d4, d5, d6, d7):
    """B^T d of F(6, 3), in 26 additions and 14 multiplications."""
    a, b = d2 + d6 - f32(4.25) * d4, d1 + d5 - f32(4.25) * d3
    c, e = f32(0.25) * d2 - f32(1.25) * d4 + d6, f32(0.5) * d1 - f32(2.5) * d3 + f32(2) * d5
    f, g = f32(4) * d2 - f32(5) * d4 + d6, f32(2) * d1 - f32(2.5) * d3 + f32(0.5) * d5
    return (
        d0 - d6 + f32(5.25) * (d4 - d2),
        a + b,
        a - b,
        c + e,
        c - e,
        f + g,
        f - g,
        d7 - d1 + f32(5.25) * (d3 - d5),
    )


@njit(nogil=True, cache=True, inline="always")
def _at(m0, m1, m2, m3, m4, m5, m6, m7):
    """A^T m of F(6, 3)."""
    p1, p3, p5 = m1 + m2, m3 + m4, m5 + m6
    q1, q3, q5 = m1 - m2, m3 - m4, m5 - m6
    return (
        m0 + p1 + p3 + p5,
        q1 + f32(2) * q3 + f32(0.5) * q5,
        p1 + f32(4) * p3 + f32(0.25) * p5,
        q1 + f32(8) * q3 + f32(0.125) * q5,
        p1 + f32(16) * p3 + f32(0.0625) * p5,
        q1 + f32(32) * q3 + f32(0.03125) * q5 + m7,
    )


@njit(nogil=True, cache=True)
def _input_transform(ring, frames, row0, row1, cols, v):
    """B^T d B of the 8x8 tiles in tile rows [row0, row1) of a layer's input (bordered rows
    in ``ring``), into ``v`` (64, tiles, C): time first (into ``r``), then frequency."""
    width, channels = ring.shape[1], ring.shape[2]
    r = np.empty((8, width, channels), np.float32)
    for ti in range(row0, row1):
        t = TILE * ti
        i0, i1, i2, i3 = (
            _ring_row(t, frames),
            _ring_row(t + 1, frames),
            _ring_row(t + 2, frames),
            _ring_row(t + 3, frames),
        )
        i4, i5, i6, i7 = (
            _ring_row(t + 4, frames),
            _ring_row(t + 5, frames),
            _ring_row(t + 6, frames),
            _ring_row(t + 7, frames),
        )
        for f in range(width):
            for c in range(channels):
                o = _bt(
                    ring[i0, f, c],
                    ring[i1, f, c],
                    ring[i2, f, c],
                    ring[i3, f, c],
                    ring[i4, f, c],
                    ring[i5, f, c],
                    ring[i6, f, c],
                    ring[i7, f, c],
                )
                r[0, f, c], r[1, f, c], r[2, f, c], r[3, f, c] = o[0], o[1], o[2], o[3]
                r[4, f, c], r[5, f, c], r[6, f, c], r[7, f, c] = o[4], o[5], o[6], o[7]
        base = (ti - row0) * cols
        for k in range(8):
            for tf in range(cols):
                f, tile = TILE * tf, base + tf
                for c in range(channels):
                    o = _bt(
                        r[k, f, c],
                        r[k, f + 1, c],
                        r[k, f + 2, c],
                        r[k, f + 3, c],
                        r[k, f + 4, c],
                        r[k, f + 5, c],
                        r[k, f + 6, c],
                        r[k, f + 7, c],
                    )
                    v[8 * k, tile, c], v[8 * k + 1, tile, c] = o[0], o[1]
                    v[8 * k + 2, tile, c], v[8 * k + 3, tile, c] = o[2], o[3]
                    v[8 * k + 4, tile, c], v[8 * k + 5, tile, c] = o[4], o[5]
                    v[8 * k + 6, tile, c], v[8 * k + 7, tile, c] = o[6], o[7]


@njit(nogil=True, cache=True)
def _output_transform(m, row0, row1, cols, bias, frames, bins, out, pool):
    """relu(A^T m A + bias) of tile rows [row0, row1) of ``m`` (64, tiles, C): into ring
    ``out`` (bordered row y at y % RING), or with ``pool`` the 2x2 max of it into ``out``
    (frames // 2, bins // 2, C). A 6x6 tile pools to 3x3: pooling never crosses tiles."""
    channels = m.shape[2]
    s = np.empty((6, 8, channels), np.float32)
    y = np.empty((6, 6, channels), np.float32)
    for ti in range(row0, row1):
        for tf in range(cols):
            tile = (ti - row0) * cols + tf
            for col in range(8):
                for c in range(channels):
                    o = _at(
                        m[col, tile, c],
                        m[8 + col, tile, c],
                        m[16 + col, tile, c],
                        m[24 + col, tile, c],
                        m[32 + col, tile, c],
                        m[40 + col, tile, c],
                        m[48 + col, tile, c],
                        m[56 + col, tile, c],
                    )
                    s[0, col, c], s[1, col, c], s[2, col, c] = o[0], o[1], o[2]
                    s[3, col, c], s[4, col, c], s[5, col, c] = o[3], o[4], o[5]
            for i in range(6):
                for c in range(channels):
                    o = _at(
                        s[i, 0, c],
                        s[i, 1, c],
                        s[i, 2, c],
                        s[i, 3, c],
                        s[i, 4, c],
                        s[i, 5, c],
                        s[i, 6, c],
                        s[i, 7, c],
                    )
                    y[i, 0, c], y[i, 1, c], y[i, 2, c] = o[0], o[1], o[2]
                    y[i, 3, c], y[i, 4, c], y[i, 5, c] = o[3], o[4], o[5]
            if pool:  # relu after the max: the same, and a quarter of the work
                # The model's pooling drops an odd last row or column.
                for a in range(min(3, frames // 2 - 3 * ti)):
                    for b in range(min(3, bins // 2 - 3 * tf)):
                        for c in range(channels):
                            top = max(y[2 * a, 2 * b, c], y[2 * a, 2 * b + 1, c])
                            low = max(y[2 * a + 1, 2 * b, c], y[2 * a + 1, 2 * b + 1, c])
                            out[3 * ti + a, 3 * tf + b, c] = max(max(top, low) + bias[c], f32(0))
            else:
                for i in range(min(TILE, frames - TILE * ti)):
                    row = (TILE * ti + i + 1) % RING
                    for j in range(min(TILE, bins - TILE * tf)):
                        x = TILE * tf + j + 1
                        for c in range(channels):
                            out[row, x, c] = max(y[i, j, c] + bias[c], f32(0))


@njit(nogil=True, cache=True)
def _layer(ring, u, bias, frames, bins, row0, row1, cols, v, m, out, pool):
    """One Winograd layer on tile rows [row0, row1): transform, the 64 products per tile
    position over channels (sgemm), transform back into ``out``."""
    _input_transform(ring, frames, row0, row1, cols, v)
    for k in range(64):
        np.dot(v[k], u[k], m[k])
    _output_transform(m, row0, row1, cols, bias, frames, bins, out, pool)


@njit(nogil=True, cache=True)
def _convs(padded, w0, b0, u1, b1, u2, b2, u3, b3):
    """The four layers and the pooling as one stream (see the module docstring): at each
    step the first layer writes a block of tile rows and each later layer transforms the
    block before the one its predecessor just wrote, the last of the rows it needs."""
    frames, bins = padded.shape[0] - 2, padded.shape[1] - 2
    rows, cols = -(-frames // TILE), -(-bins // TILE)
    width, tiles = TILE * cols + 2, ROWS * cols
    ring0 = np.zeros((RING + 1, width, u1.shape[1]), np.float32)
    ring1 = np.zeros((RING + 1, width, u2.shape[1]), np.float32)
    ring2 = np.zeros((RING + 1, width, u3.shape[1]), np.float32)
    v1 = np.empty((64, tiles, u1.shape[1]), np.float32)  # transformed input tiles
    v2 = np.empty((64, tiles, u2.shape[1]), np.float32)
    v3 = np.empty((64, tiles, u3.shape[1]), np.float32)
    m1 = np.empty((64, tiles, u1.shape[2]), np.float32)  # their products with the kernels
    m2 = np.empty((64, tiles, u2.shape[2]), np.float32)
    m3 = np.empty((64, tiles, u3.shape[2]), np.float32)
    pooled = np.empty((frames // 2, bins // 2, u3.shape[2]), np.float32)
    blocks = -(-rows // ROWS)
    for step in range(blocks + 3):
        if step < blocks:
            _first_conv(
                padded,
                w0,
                b0,
                TILE * ROWS * step + 1,
                TILE * min(rows, ROWS * step + ROWS) + 1,
                ring0,
            )
        for n in range(1, 4):
            block = step - n
            if 0 <= block < blocks:
                row0, row1 = ROWS * block, min(rows, ROWS * block + ROWS)
                if n == 1:
                    _layer(ring0, u1, b1, frames, bins, row0, row1, cols, v1, m1, ring1, False)
                elif n == 2:
                    _layer(ring1, u2, b2, frames, bins, row0, row1, cols, v2, m2, ring2, False)
                else:
                    _layer(ring2, u3, b3, frames, bins, row0, row1, cols, v3, m3, pooled, True)
    return pooled


class WinogradConvs:
    """relu(conv) x 4 then 2x2 max pooling, as in DNSMOS's P.835 front, on one (T, F)
    log-power spectrogram at a time. ``kernels``: the ONNX (C_out, C_in, 3, 3) weights and
    (C_out,) biases of the four layers in order; the first has one input channel."""

    def __init__(self, kernels: list[tuple[np.ndarray, np.ndarray]]):
        (w, b), *rest = kernels
        self.weights = [
            np.ascontiguousarray(w[:, 0].reshape(len(w), 9).T, np.float32),
            b.astype(np.float32),
        ]
        for w, b in rest:  # U = G g G^T per channel pair, as (64, C_in, C_out)
            u = np.einsum("ik,ockl,jl->ijco", G, w.astype(np.float64), G)
            u = u.reshape(64, w.shape[1], w.shape[0]).astype(np.float32)
            self.weights += [np.ascontiguousarray(u), b.astype(np.float32)]

    def __call__(self, spectrum: np.ndarray) -> np.ndarray:
        """(T, F) -> (T // 2, C_out, F // 2) pooled maps: time first, as DNSMOS shares them."""
        frames, bins = spectrum.shape
        padded = np.zeros((frames + 2, bins + 2), np.float32)
        padded[1:-1, 1:-1] = spectrum
        return _convs(padded, *self.weights).transpose(0, 2, 1)
