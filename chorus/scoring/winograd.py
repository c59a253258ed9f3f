"""DNSMOS's shared P.835 convolutions in fp32 with Winograd's F(4x4, 3x3) algorithm.

95% of DNSMOS's time is four 3x3 convolutions over full-resolution spectrogram frames, and
onnxruntime already runs them near this CPU's fp32 matrix-multiply peak: the only way to be
much faster without losing precision is to multiply less. Winograd's minimal filtering
(Lavin & Gray, 2015) computes each 4x4 output tile from a 6x6 input tile with 36
multiplications per channel pair instead of 144: the input and the kernels are transformed
(additions and small constants), multiplied position by position (36 batched matrix
products over channels, which torch runs at full speed), and transformed back. The result
differs from direct convolution by float rounding only (~1e-5 relative).

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
# Rows a ring holds: a block reads 4 * ROWS + 2 of them while its producer may be one block
# ahead. One more row, after them, is always zero: the padding rows read it.
RING = 8 * ROWS + 4


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
                ring[row, f + 1, c] = max(value, 0.0)


@njit(nogil=True, cache=True)
def _ring_row(y, frames):
    """Where bordered row y lives in a ring: y % RING inside the frames, else the zero row."""
    return y % RING if 1 <= y <= frames else RING


@njit(nogil=True, cache=True)
def _input_transform(ring, frames, row0, row1, cols, v):
    """B^T d B of the 6x6 tiles in tile rows [row0, row1) of a layer's input (bordered rows
    in ``ring``), into ``v`` (36, tiles, C): time first (into ``r``), then frequency."""
    width, channels = ring.shape[1], ring.shape[2]
    r = np.empty((6, width, channels), np.float32)
    for ti in range(row0, row1):
        t = 4 * ti
        i0, i1, i2 = _ring_row(t, frames), _ring_row(t + 1, frames), _ring_row(t + 2, frames)
        i3, i4, i5 = _ring_row(t + 3, frames), _ring_row(t + 4, frames), _ring_row(t + 5, frames)
        for f in range(width):
            for c in range(channels):
                d0, d1, d2 = ring[i0, f, c], ring[i1, f, c], ring[i2, f, c]
                d3, d4, d5 = ring[i3, f, c], ring[i4, f, c], ring[i5, f, c]
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
    """relu(A^T m A + bias) of tile rows [row0, row1) of ``m`` (36, tiles, C): into ring
    ``out`` (bordered row y at y % RING), or with ``pool`` the 2x2 max of it into ``out``
    (frames // 2, bins // 2, C), which must start at zero."""
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
                row = (y + 1) % RING
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
                            out[row, x + 1, c] = value


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
        # Each layer's output rows, bordered (row y is frame y - 1), in a ring; zero where
        # never written: the border columns and the last row.
        rings = [np.zeros((RING + 1, 4 * cols + 2, len(self.first[1])), np.float32)]
        rings += [
            np.zeros((RING + 1, 4 * cols + 2, u.shape[2]), np.float32) for u, _ in self.layers
        ]
        pooled = np.zeros((frames // 2, bins // 2, self.layers[-1][0].shape[2]), np.float32)
        buffers = [
            (
                np.empty((36, ROWS * cols, u.shape[1]), np.float32),
                self.torch.empty(36, ROWS * cols, u.shape[2]),
            )
            for u, _ in self.layers
        ]
        done = [0] * (len(self.layers) + 1)  # tile rows each layer has written

        def advance(n: int) -> None:
            """Layer n writes its next block of tile rows, once its input holds them."""
            row0, row1 = done[n], min(rows, done[n] + ROWS)
            if n == 0:
                _first_conv(padded, *self.first, 4 * row0 + 1, 4 * row1 + 1, rings[0])
            else:
                # Tile rows [row0, row1) read bordered rows up to 4 * row1 + 1.
                while done[n - 1] < min(rows, row1 + 1):
                    advance(n - 1)
                u, bias = self.layers[n - 1]
                v, m = buffers[n - 1]
                _input_transform(rings[n - 1], frames, row0, row1, cols, v)
                self.torch.bmm(self.torch.from_numpy(v), u, out=m)
                last = n == len(self.layers)
                out = pooled if last else rings[n]
                _output_transform(m.numpy(), row0, row1, cols, bias, frames, bins, out, last)
            done[n] = row1

        while done[-1] < rows:
            advance(len(self.layers))
        return np.ascontiguousarray(pooled.transpose(2, 0, 1))
