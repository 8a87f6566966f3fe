"""Numpy references written straight from the DL book's formulas (Ch. 9).

Book layout, 0-based: V[l, j, k] is input channel l at row j, column k;
Z[i, j, k] output channel i. The book's "-1"s disappear with 0-based
indices. Loops are explicit on purpose: they mirror the sums (one
`np.ndindex` loop runs over all the indices a sum names).
"""

import numpy as np


def pad_same(v, kernel_size, strides):
    """Zero-pads V (c, h, w) the way TF's padding='same' does."""
    pads = [(0, 0)]
    for n, k, s in zip(v.shape[1:], kernel_size, strides):
        out = -(-n // s)
        total = max((out - 1) * s + k - n, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(v, pads)


def out_size(n, k, s):
    return (n - k) // s + 1


def _weighted_window_sum(V, out_shape, kernel_shape, s, weight):
    """Z[i,j,k] = sum_{l,m,n} V[l, j*s0 + m, k*s1 + n] weight(i,j,k,l,m,n).

    The sum shared by eqs. 9.8-9.10; each equation differs only in which
    weight an output unit (i, j, k) uses for input (l, m, n).
    """
    f, oh, ow = out_shape
    c, kh, kw = kernel_shape
    Z = np.zeros((f, oh, ow))
    # np.ndindex runs over i, j, k, l, m, n in the nested loops' order.
    for i, j, k, l, m, n in np.ndindex(f, oh, ow, c, kh, kw):  # noqa: E741
        Z[i, j, k] += V[l, j * s[0] + m, k * s[1] + n] * weight(
            i, j, k, l, m, n
        )
    return Z


def conv_strided(K, V, s):
    """Eq. 9.8: Z[i,j,k] = sum_{l,m,n} V[l, j*s + m, k*s + n] K[i,l,m,n]."""
    f, c, kh, kw = K.shape
    oh, ow = out_size(V.shape[1], kh, s), out_size(V.shape[2], kw, s)
    return _weighted_window_sum(
        V,
        (f, oh, ow),
        (c, kh, kw),
        (s, s),
        lambda i, j, k, l, m, n: K[i, l, m, n],  # noqa: E741
    )


def unshared(W, V, s=(1, 1)):
    """Eq. 9.9 (+ strides): Z[i,j,k] = sum V[l, j*s+m, k*s+n] W[i,j,k,l,m,n]."""
    f, oh, ow, c, kh, kw = W.shape
    return _weighted_window_sum(
        V, (f, oh, ow), (c, kh, kw), s, lambda *ijklmn: W[ijklmn]
    )


def tiled(K, V, oh, ow, s=(1, 1)):
    """Eq. 9.10 (+ strides), 0-based tiles:
    Z[i,j,k] = sum V[l, j*s+m, k*s+n] K[i, l, m, n, j % t_h, k % t_w]."""
    f, c, kh, kw, th, tw = K.shape
    return _weighted_window_sum(
        V,
        (f, oh, ow),
        (c, kh, kw),
        s,
        lambda i, j, k, l, m, n: K[i, l, m, n, j % th, k % tw],  # noqa: E741
    )


def grad_kernel(G, V, s, kh, kw):
    """Eq. 9.11: g(G,V,s)[i,j,k,l] = sum_{m,n} G[i,m,n] V[j, m*s+k, n*s+l]."""
    f, oh, ow = G.shape
    c = V.shape[0]
    g = np.zeros((f, c, kh, kw))
    for i in range(f):
        for j in range(c):
            for k in range(kh):
                for l in range(kw):  # noqa: E741
                    for m in range(oh):
                        for n in range(ow):
                            g[i, j, k, l] += (
                                G[i, m, n] * V[j, m * s + k, n * s + l]
                            )
    return g


def grad_input(K, G, s, h, w):
    """Eq. 9.12-9.13: h(K,G,s)[i,j,k] = sum over (l, m) with l*s + m = j,
    (n, p) with n*s + p = k, and q of K[q,i,m,p] G[q,l,n]."""
    f, c, kh, kw = K.shape
    _, oh, ow = G.shape
    out = np.zeros((c, h, w))
    for i in range(c):
        for j in range(h):
            for k in range(w):
                total = 0.0
                for l in range(oh):  # noqa: E741
                    m = j - l * s
                    if not 0 <= m < kh:
                        continue
                    for n in range(ow):
                        p = k - n * s
                        if not 0 <= p < kw:
                            continue
                        for q in range(f):
                            total += K[q, i, m, p] * G[q, l, n]
                out[i, j, k] = total
    return out


def grad_unshared_kernel(G, V, s, kh, kw):
    """Gradient of eq. 9.9 for W: dJ/dW[i,j,k,l,m,n] = G[i,j,k]
    V[l, j*s+m, k*s+n] (each weight touches one output unit)."""
    f, oh, ow = G.shape
    c = V.shape[0]
    g = np.zeros((f, oh, ow, c, kh, kw))
    for i, j, k, l, m, n in np.ndindex(g.shape):  # noqa: E741
        g[i, j, k, l, m, n] = G[i, j, k] * V[l, j * s[0] + m, k * s[1] + n]
    return g


def grad_unshared_input(W, G, s, h, w):
    """Gradient of eq. 9.9 for V: dJ/dV[l,r,q] = sum of G[i,j,k]
    W[i,j,k,l,m,n] over j*s+m = r, k*s+n = q."""
    f, oh, ow, c, kh, kw = W.shape
    out = np.zeros((c, h, w))
    for i in range(f):
        for j in range(oh):
            for k in range(ow):
                for m in range(kh):
                    for n in range(kw):
                        out[:, j * s[0] + m, k * s[1] + n] += (
                            G[i, j, k] * W[i, j, k, :, m, n]
                        )
    return out


def convolve_1d(x, w):
    """Eq. 9.3, full mode: s(t) = sum_a x(a) w(t - a)."""
    n, k = len(x), len(w)
    s = np.zeros(n + k - 1)
    for t in range(n + k - 1):
        for a in range(n):
            if 0 <= t - a < k:
                s[t] += x[a] * w[t - a]
    return s


def convolve_2d(image, kernel):
    """Eq. 9.4, full mode: S(i,j) = sum_{m,n} I(m,n) K(i-m, j-n)."""
    (h, w), (kh, kw) = image.shape, kernel.shape
    out = np.zeros((h + kh - 1, w + kw - 1))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            for m in range(h):
                for n in range(w):
                    if 0 <= i - m < kh and 0 <= j - n < kw:
                        out[i, j] += image[m, n] * kernel[i - m, j - n]
    return out


def cross_correlate_2d(image, kernel):
    """Eq. 9.6, full mode: S(i,j) = sum_{m,n} I(i+m, j+n) K(m,n), with i, j
    counted from -(kh - 1), -(kw - 1) (zero outside the image)."""
    (h, w), (kh, kw) = image.shape, kernel.shape
    out = np.zeros((h + kh - 1, w + kw - 1))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            for m in range(kh):
                for n in range(kw):
                    r, c = i - (kh - 1) + m, j - (kw - 1) + n
                    if 0 <= r < h and 0 <= c < w:
                        out[i, j] += image[r, c] * kernel[m, n]
    return out


def lrn(a, depth_radius, bias, alpha, beta):
    """AlexNet Sec. 3.3: b_i = a_i / (k + alpha sum_j a_j^2)^beta over
    j in [max(0, i - r), min(N - 1, i + r)] on the last axis."""
    n = a.shape[-1]
    b = np.zeros_like(a, dtype="float64")
    for i in range(n):
        lo, hi = max(0, i - depth_radius), min(n - 1, i + depth_radius)
        sq = np.sum(a[..., lo : hi + 1].astype("float64") ** 2, axis=-1)
        b[..., i] = a[..., i] / (bias + alpha * sq) ** beta
    return b
