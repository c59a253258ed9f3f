"""DNSMOS's shared P.835 convolutions in fp32 with Winograd's F(4x4, 3x3) algorithm.

95% of DNSMOS's time is four 3x3 convolutions over full-resolution spectrogram frames, and
onnxruntime already runs them near this CPU's fp32 matrix-multiply peak: the only way to be
much faster without losing precision is to multiply less. Winograd's minimal filtering
(Lavin & Gray, 2015) computes each 4x4 output tile from a 6x6 input tile with 36
multiplications per channel pair instead of 144: the input and the kernels are transformed
(additions and small constants), multiplied position by position (36 batched matrix
products over channels, which torch runs at full speed), and transformed back. The result
differs from direct convolution by float rounding only (~1e-5 relative).

The transforms are memory-bound loops, compiled with numba and run a few tile rows at a
time so their buffers stay in cache. The first convolution (one input channel) runs
directly, a block of rows at a time.
Layout is channels-last with a zero border, which is each layer's padding.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Kernel transform G of F(4, 3); the input (B^T) and output (A^T) transforms are spelled out
# in the loops below.
G = np.array(
    [
        [1 / 4, 0, 0],
        [-1 / 6, -1 / 6, -1 / 6],
        [-1 / 6, 1 / 6, -1 / 6],
        [1 / 24, 1 / 12, 1 / 6],
        [1 / 24, -1 / 12, 1 / 6],
        [0, 0, 1],
    ]
)
ROWS = 2  # tile rows (8 frames) transformed, multiplied and transformed back at a time


@njit(nogil=True, cache=True)
def _first_conv(spectrum, weights, bias, row0, out):
    """Rows row0, row0 + 1, ... of the first layer's bordered output, into ``out``
    (rows, F + border, C): relu(3x3 conv, one input channel) of the zero-bordered
    (T + 2, F + 2) ``spectrum``, zero outside it; weights are (9, C). Computed a block of
    rows at a time, just before the next layer transforms them, they never leave cache."""
    frames, bins = spectrum.shape[0] - 2, spectrum.shape[1] - 2
    for r in range(out.shape[0]):
        t = row0 + r - 1  # the frame this bordered row holds
        if t < 0 or t >= frames:
            out[r] = 0.0
            continue
        out[r, 0] = 0.0
        out[r, bins + 1 :] = 0.0
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
                out[r, f + 1, c] = max(value, 0.0)


@njit(nogil=True, cache=True)
def _input_transform(x, row0, row1, cols, v):
    """B^T d B of the 6x6 tiles in tile rows [row0, row1) of bordered input ``x``, into
    ``v`` (36, tiles, C): time first (into ``r``), then frequency."""
    width, channels = x.shape[1], x.shape[2]
    r = np.empty((6, width, channels), np.float32)
    for ti in range(row0, row1):
        t = 4 * ti
        for f in range(width):
            for c in range(channels):
                d0, d1, d2 = x[t, f, c], x[t + 1, f, c], x[t + 2, f, c]
                d3, d4, d5 = x[t + 3, f, c], x[t + 4, f, c], x[t + 5, f, c]
                r[0, f, c] = 4 * d0 - 5 * d2 + d4
                r[1, f, c] = -4 * (d1 + d2) + d3 + d4
                r[2, f, c] = 4 * (d1 - d2) - d3 + d4
                r[3, f, c] = 2 * (d3 - d1) - d2 + d4
                r[4, f, c] = 2 * (d1 - d3) - d2 + d4
                r[5, f, c] = 4 * d1 - 5 * d3 + d5
        base = (ti - row0) * cols
        for k in range(6):
            for tf in range(cols):
                f, tile = 4 * tf, base + tf
                for c in range(channels):
                    e0, e1, e2 = r[k, f, c], r[k, f + 1, c], r[k, f + 2, c]
                    e3, e4, e5 = r[k, f + 3, c], r[k, f + 4, c], r[k, f + 5, c]
                    v[6 * k, tile, c] = 4 * e0 - 5 * e2 + e4
                    v[6 * k + 1, tile, c] = -4 * (e1 + e2) + e3 + e4
                    v[6 * k + 2, tile, c] = 4 * (e1 - e2) - e3 + e4
                    v[6 * k + 3, tile, c] = 2 * (e3 - e1) - e2 + e4
                    v[6 * k + 4, tile, c] = 2 * (e1 - e3) - e2 + e4
                    v[6 * k + 5, tile, c] = 4 * e1 - 5 * e3 + e5


@njit(nogil=True, cache=True)
def _output_transform(m, row0, row1, cols, bias, frames, bins, out, pool):
    """relu(A^T m A + bias) of tile rows [row0, row1) of ``m`` (36, tiles, C): into the
    interior of bordered ``out`` (frames + 2, bins + 2, C), or with ``pool`` the 2x2 max
    of it into ``out`` (frames // 2, bins // 2, C), which must start at zero."""
    channels = m.shape[2]
    # Pooling drops an odd last row or column, as the model's floor-sized pooling does.
    last_y, last_x = (frames // 2 * 2, bins // 2 * 2) if pool else (frames, bins)
    s = np.empty((4, 6, channels), np.float32)
    for ti in range(row0, row1):
        for tf in range(cols):
            tile = (ti - row0) * cols + tf
            for col in range(6):
                for c in range(channels):
                    m0, m1, m2 = m[col, tile, c], m[6 + col, tile, c], m[12 + col, tile, c]
                    m3, m4, m5 = m[18 + col, tile, c], m[24 + col, tile, c], m[30 + col, tile, c]
                    s[0, col, c] = m0 + m1 + m2 + m3 + m4
                    s[1, col, c] = m1 - m2 + 2 * (m3 - m4)
                    s[2, col, c] = m1 + m2 + 4 * (m3 + m4)
                    s[3, col, c] = m1 - m2 + 8 * (m3 - m4) + m5
            for i in range(4):
                y = 4 * ti + i
                if y >= last_y:
                    break
                for j in range(4):
                    x = 4 * tf + j
                    if x >= last_x:
                        break
                    for c in range(channels):
                        s1, s2, s3, s4 = s[i, 1, c], s[i, 2, c], s[i, 3, c], s[i, 4, c]
                        if j == 0:
                            value = s[i, 0, c] + s1 + s2 + s3 + s4
                        elif j == 1:
                            value = s1 - s2 + 2 * (s3 - s4)
                        elif j == 2:
                            value = s1 + s2 + 4 * (s3 + s4)
                        else:
                            value = s1 - s2 + 8 * (s3 - s4) + s[i, 5, c]
                        value = max(value + bias[c], 0.0)
                        if pool:
                            out[y // 2, x // 2, c] = max(out[y // 2, x // 2, c], value)
                        else:
                            out[y + 1, x + 1, c] = value


class WinogradConvs:
    """relu(conv) x 4 then 2x2 max pooling, as in DNSMOS's P.835 front, on one (T, F)
    log-power spectrogram at a time. ``kernels``: the ONNX (C_out, C_in, 3, 3) weights and
    (C_out,) biases in order; the first must have one input channel."""

    def __init__(self, kernels: list[tuple[np.ndarray, np.ndarray]]):
        import torch

        self.torch = torch
        (w, b), *rest = kernels
        self.first = (np.ascontiguousarray(w[:, 0].reshape(len(w), 9).T, np.float32), b)
        self.layers = []
        for w, b in rest:  # U = G g G^T per channel pair, as (36, C_in, C_out)
            u = np.einsum("ik,ockl,jl->ijco", G, w.astype(np.float64), G)
            u = u.reshape(36, w.shape[1], w.shape[0]).astype(np.float32)
            self.layers.append((torch.from_numpy(np.ascontiguousarray(u)), b.astype(np.float32)))

    def __call__(self, spectrum: np.ndarray) -> np.ndarray:
        """(T, F) -> (C_out, T // 2, F // 2) pooled maps, as the ONNX model has them."""
        frames, bins = spectrum.shape
        rows, cols = -(-frames // 4), -(-bins // 4)
        padded = np.zeros((frames + 2, bins + 2), np.float32)
        padded[1:-1, 1:-1] = spectrum
        # The first layer's rows for one block of tiles (6 rows per tile row, sharing 2).
        block = np.empty((4 * ROWS + 2, 4 * cols + 2, len(self.first[1])), np.float32)
        x = None
        for n, (u, bias) in enumerate(self.layers):
            pool = n == len(self.layers) - 1
            if pool:
                out = np.zeros((frames // 2, bins // 2, u.shape[2]), np.float32)
            else:  # whole tiles, zero outside the (frames, bins) interior
                out = np.empty((4 * rows + 2, 4 * cols + 2, u.shape[2]), np.float32)
                out[0], out[frames + 1 :], out[:, 0], out[:, bins + 1 :] = 0, 0, 0, 0
            v = np.empty((36, ROWS * cols, u.shape[1]), np.float32)
            m = self.torch.empty(36, ROWS * cols, u.shape[2])
            for row0 in range(0, rows, ROWS):
                row1 = min(rows, row0 + ROWS)
                if x is None:
                    _first_conv(padded, *self.first, 4 * row0, block)
                    _input_transform(block, 0, row1 - row0, cols, v)
                else:
                    _input_transform(x, row0, row1, cols, v)
                self.torch.bmm(self.torch.from_numpy(v), u, out=m)
                _output_transform(m.numpy(), row0, row1, cols, bias, frames, bins, out, pool)
            x = out
        return np.ascontiguousarray(x.transpose(2, 0, 1))
