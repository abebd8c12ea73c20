"""Sparse matrices of the linear image layers both model readers need (framework-free).

A 2-D convolution without bias maps an input image to an output image linearly:
output ``(o, h, w)`` is the sum over input channels ``ci`` of its group and kernel
offsets ``(i, j)`` of ``weight[o, ci, i, j] * input[ci, h*sh + i*dh - top, w*sw + j*dw - left]``,
where positions outside the image (padding) contribute zero. Flattened images are
row-major ``(channel, height, width)`` (ONNX) or ``(height, width, channel)`` (Keras).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def conv2d_matrix(weight: np.ndarray, in_shape: tuple, strides: tuple = (1, 1), pads: tuple = (0, 0, 0, 0),
                  dilations: tuple = (1, 1), group: int = 1, channels_last: bool = False):
    """Return the CSR matrix of a 2-D convolution (no bias) and its output shape.

    ``weight`` has shape ``(M, C / group, kh, kw)``; ``in_shape`` is ``(C, H, W)``, or
    ``(H, W, C)`` with ``channels_last``; ``pads`` is ``(top, left, bottom, right)``.
    The output shape is ``(M, Ho, Wo)``, or ``(Ho, Wo, M)`` with ``channels_last``.
    """
    M, c_group, kh, kw = weight.shape
    H, W, C = in_shape if channels_last else (in_shape[1], in_shape[2], in_shape[0])
    sh, sw = strides
    dh, dw = dilations
    top, left, bottom, right = pads
    Ho = (H + top + bottom - (kh - 1) * dh - 1) // sh + 1
    Wo = (W + left + right - (kw - 1) * dw - 1) // sw + 1
    co, cl, i, j, oh, ow = np.meshgrid(np.arange(M), np.arange(c_group), np.arange(kh), np.arange(kw),
                                       np.arange(Ho), np.arange(Wo), indexing="ij")
    ci = (co // (M // group)) * c_group + cl
    ih = oh * sh + i * dh - top
    iw = ow * sw + j * dw - left
    inside = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
    if channels_last:
        rows, cols = (oh * Wo + ow) * M + co, (ih * W + iw) * C + ci
        out_shape = (Ho, Wo, M)
    else:
        rows, cols = (co * Ho + oh) * Wo + ow, (ci * H + ih) * W + iw
        out_shape = (M, Ho, Wo)
    matrix = sp.csr_matrix((weight[co, cl, i, j][inside], (rows[inside], cols[inside])),
                           shape=(M * Ho * Wo, C * H * W))
    matrix.eliminate_zeros()
    return matrix, out_shape


def same_pads(in_hw: tuple, kernel: tuple, strides: tuple, dilations: tuple = (1, 1)) -> tuple:
    """Return ``(top, left, bottom, right)`` of "same" padding, the extra row/column at the bottom/right."""
    pads = []
    for size, k, s, d in zip(in_hw, kernel, strides, dilations):
        out = -(-size // s)
        pads.append(max((out - 1) * s + (k - 1) * d + 1 - size, 0))
    return pads[0] // 2, pads[1] // 2, pads[0] - pads[0] // 2, pads[1] - pads[1] // 2
