"""1-bit codes of unit vectors: learn a rotation, encode, rank by Hamming distance or by a query's score.

A vector's code is the signs of ``(x - centre) @ rotation``, ``bits`` of them
packed into 64-bit words. Centring matters: the vectors of one embedding model
share a large common component (cosine similarities of unrelated items sit
around 0.5), and the signs of uncentred coordinates would be nearly constant.
The rotation spreads the variance over the bits: a random orthogonal one, or
one learned by ITQ (Gong & Lazebnik 2011: alternate ``B = sign(V R)`` and the
orthogonal Procrustes ``R`` that best maps ``V`` onto ``B``), started from the
principal axes. Hamming distance between codes approximates the angle between
the centred, rotated vectors; the query's own projections summed with a code's
signs (``scores``) approximate it better, since the query need not be reduced
to signs. Ranking by them and rescoring the best ``k * oversample`` exactly
(``CodedSearch`` in ``xmr.store.binary``) recovers the exact top-k when the
oversample is large enough.

Codes are stored word-major, ``(words, n)`` uint64, so each word's pass over
all vectors reads contiguous memory.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

METHODS = ("itq", "random")
ITQ_ITERATIONS = 20
ITQ_SAMPLE = 5_000  # rows ITQ iterates on (the centre uses the whole sample): ~2 GFLOP an iteration at 512 bits
ROW_CHUNK = 1 << 15  # rows per pass of the Hamming kernel: its buffers stay in the L2 cache
_CORES = os.cpu_count() or 1  # read once: os.cpu_count() costs ~40 us a call here, and a search asks 3 times
ROWS_PER_WORKER = 1 << 13  # scattered columns (scored after the prefilter, ~90 ns each) worth a thread of their own

_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)


def words_for(bits: int) -> int:
    return -(-int(bits) // 64)


def learn_rotation(
    sample: np.ndarray, bits: int, method: str = "itq", *, seed: int = 0, iterations: int = ITQ_ITERATIONS
) -> tuple[np.ndarray, np.ndarray]:
    """(centre (dim,), rotation (dim, bits)) float32 learned from ``sample`` (n, dim) vectors."""
    if method not in METHODS:
        raise ValueError(f"unknown rotation {method!r} (known: {', '.join(METHODS)})")
    x = np.asarray(sample, np.float32)
    dim = x.shape[1]
    if not 1 <= bits <= dim:
        raise ValueError(f"bits must be in 1..{dim}, got {bits}")
    centre = x.mean(axis=0) if len(x) else np.zeros(dim, np.float32)
    rng = np.random.default_rng(seed)
    if method == "random" or len(x) < 2:
        q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        return centre.astype(np.float32), np.ascontiguousarray(q[:, :bits], np.float32)
    v = (x - centre)[:: max(1, len(x) // ITQ_SAMPLE)]  # float32: the iterations' two products dominate
    # principal axes first: with bits < dim the code keeps the directions of largest variance
    _, _, vt = np.linalg.svd(v, full_matrices=False)
    axes = vt[:bits].T if vt.shape[0] >= bits else np.linalg.qr(rng.standard_normal((dim, dim)))[0][:, :bits]
    p = v @ axes  # (n, bits)
    r = np.linalg.qr(rng.standard_normal((bits, bits)))[0]
    for _ in range(iterations):
        b = np.sign(p @ r)
        b[b == 0] = 1
        u, _, wt = np.linalg.svd(b.T @ p)  # Procrustes: R = argmin ||B - P R||, R orthogonal
        r = (u @ wt).T
    return centre.astype(np.float32), np.ascontiguousarray(axes @ r, np.float32)


def encode(vecs: np.ndarray, centre: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Codes of ``vecs`` (n, dim): (n, words) uint64, bit j of word w set when projection 64w+j >= 0."""
    return pack(project(vecs, centre, rotation))


def project(vecs: np.ndarray, centre: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """The centred, rotated vectors (n, bits) float32 whose signs are the codes."""
    return (np.asarray(vecs, np.float32) - centre) @ rotation


def pack(proj: np.ndarray) -> np.ndarray:
    """Codes (n, words) uint64 of projections (n, bits): bit j of word w set when projection 64w+j >= 0."""
    bits = proj.shape[1]
    signs = proj >= 0
    pad = words_for(bits) * 64 - bits
    if pad:
        signs = np.concatenate([signs, np.zeros((len(signs), pad), bool)], axis=1)
    packed = np.packbits(signs, axis=1, bitorder="little")  # (n, words * 8) bytes, little-endian bits
    return np.ascontiguousarray(packed).view("<u8").astype(np.uint64, copy=False)


def popcount(x: np.ndarray) -> np.ndarray:
    """Set bits per element of a uint64 array (uint8 counts)."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2
        return np.bitwise_count(x)
    return (_byte_counts(x.copy()) * _H01 >> np.uint64(56)).astype(np.uint8)


def _byte_counts(x: np.ndarray) -> np.ndarray:
    """In place: each byte of each word becomes its own bit count (SWAR, Hacker's Delight 5-1)."""
    x -= (x >> np.uint64(1)) & _M1
    np.add(x & _M2, (x >> np.uint64(2)) & _M2, out=x)
    np.add(x, x >> np.uint64(4), out=x)
    x &= _M4
    return x


def hamming(query_code: np.ndarray, codes: np.ndarray, *, threads: int | None = None) -> np.ndarray:
    """Hamming distance of one code (words,) to every column of word-major ``codes`` (words, n): (n,) uint16.

    Runs on ``threads`` threads (default: the cores, at most 4): numpy's ufuncs release the GIL."""
    n = codes.shape[1]
    out = np.empty(n, np.uint16)
    q = np.asarray(query_code, np.uint64)
    workers = max(1, min(threads or _CORES, 4, -(-n // (4 * ROW_CHUNK))))
    if workers == 1:
        _hamming_range(q, codes, out, 0, n)
        return out
    step = -(-n // (workers * ROW_CHUNK)) * ROW_CHUNK
    with ThreadPoolExecutor(max_workers=workers) as ex:
        list(ex.map(lambda s: _hamming_range(q, codes, out, s, min(n, s + step)), range(0, n, step)))
    return out


def _hamming_range(q: np.ndarray, codes: np.ndarray, out: np.ndarray, start: int, stop: int) -> None:
    words = codes.shape[0]
    native = hasattr(np, "bitwise_count")
    for s in range(start, stop, ROW_CHUNK):
        e = min(stop, s + ROW_CHUNK)
        if native:
            acc = np.zeros(e - s, np.uint16)
            for w in range(words):
                acc += np.bitwise_count(codes[w, s:e] ^ q[w])
            out[s:e] = acc
            continue
        # numpy < 2: the byte counts of 3 words sum to at most 192, so the multiply that adds a
        # word's 8 byte counts into its top byte does not overflow it
        total = np.zeros(e - s, np.uint64)
        for w0 in range(0, words, 3):
            part = np.zeros(e - s, np.uint64)
            for w in range(w0, min(words, w0 + 3)):
                part += _byte_counts(codes[w, s:e] ^ q[w])
            total += part * _H01 >> np.uint64(56)
        out[s:e] = total


def nearest(
    query_code: np.ndarray,
    codes: np.ndarray,
    count: int,
    *,
    allowed: np.ndarray | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """Columns (ascending) of the ``count`` codes nearest to ``query_code``, ties broken by column.

    ``codes`` is word-major (words, n); only the columns ``allowed`` (bool per column; default
    all) admits are ranked, and fewer than ``count`` come back when fewer are admitted. Uses the
    compiled kernel (distances and their histogram in one pass, then a selection at the
    histogram's cut) where it loaded, else numpy."""
    from xmr.store import hamming_kernel

    q = np.ascontiguousarray(query_code, np.uint64)
    lib = hamming_kernel.load()
    if lib is None or codes.strides[1] != 8 or codes.strides[0] % 8:
        return _nearest_numpy(q, codes, count, allowed, threads)
    words, n = codes.shape
    stride = codes.strides[0] // 8
    mask = None if allowed is None else np.ascontiguousarray(allowed, np.uint8)
    mask_p = None if mask is None else mask.ctypes.data
    # each worker ranks one contiguous share of the columns with its own histogram
    dist = np.empty(n, np.uint16)
    workers = workers_for(threads, n // (8 * ROW_CHUNK))
    step = -(-n // workers)
    hist = np.zeros((workers, 64 * words + 1), np.int64)

    def part(w: int) -> None:
        lib.xmr_hamming(codes.ctypes.data, stride, words, q.ctypes.data, mask_p, w * step, min(n, (w + 1) * step),
                        dist.ctypes.data, hist[w].ctypes.data)

    run_parts(part, workers)
    cum = np.cumsum(hist.sum(axis=0))
    if cum[-1] <= count:  # every admitted column
        cut, at_cut = len(cum), 0
    else:
        cut = int(np.searchsorted(cum, count))  # the first distance whose cumulative count reaches count
        at_cut = count - (int(cum[cut - 1]) if cut else 0)
    return _select(lib, dist, hist, step, cut, at_cut, min(count, len(dist)))


def score_table(proj: np.ndarray, words: int) -> np.ndarray:
    """(words * 8, 256) int32: entry [p, v] sums the query's projections 8p .. 8p+7, each with
    the sign that bit of the byte value v stores (+ set, - clear); padding bits score 0.

    The projections are rounded to integers whose absolute values sum to at most 2**30, so a
    code's score (the sum of its bytes' entries) is exact in int32 in any order of addition."""
    q = np.zeros(words * 64, np.float64)
    q[: len(proj)] = np.asarray(proj, np.float64)
    total = float(np.abs(q).sum())
    qi = np.rint(q * (2.0**30 / total)) if total > 0 else q
    while np.abs(qi).sum() > 2**30:  # rounding up can pass the bound by at most half a unit per bit
        qi -= np.sign(qi)
    signs = ((np.arange(256)[:, None] >> np.arange(8)[None, :]) & 1) * 2 - 1  # (256, 8): +-1 per bit
    return np.ascontiguousarray(qi.reshape(words * 8, 8) @ signs.T, np.int32)


def scores(proj: np.ndarray, codes: np.ndarray, rows: np.ndarray, *, threads: int | None = None) -> np.ndarray:
    """The query's score (int32) against the codes in the columns ``rows`` of word-major ``codes``.

    The score is the query's projections summed with the signs each code stores: the inner
    product of the centred, rotated query with the code's +-1 vector (quantised, see
    ``score_table``). It ranks the codes better than the Hamming distance between the query's
    own code and theirs, which throws away how far each projection is from zero (at 5M x 512,
    2,000 rescored: recall@10 0.983 against 0.950; docs/codes.md)."""
    from xmr.store import hamming_kernel

    words = codes.shape[0]
    table = score_table(proj, words)
    rows = np.ascontiguousarray(rows, np.int64)
    m = len(rows)
    lib = hamming_kernel.load()
    if lib is None or codes.strides[1] != 8 or codes.strides[0] % 8:
        total = np.zeros(m, np.int64)
        sub = codes[:, rows]
        for w in range(words):
            for b in range(8):
                total += table[8 * w + b][((sub[w] >> np.uint64(8 * b)) & np.uint64(255)).astype(np.intp)]
        return total.astype(np.int32)
    out = np.empty(m, np.int32)
    stride = codes.strides[0] // 8
    workers = workers_for(threads, m // ROWS_PER_WORKER)
    step = -(-m // workers)

    def part(w: int) -> None:
        s, e = w * step, min(m, (w + 1) * step)
        if s < e:
            lib.xmr_scored_rows(codes.ctypes.data, stride, words, table.ctypes.data, rows.ctypes.data + 8 * s,
                                e - s, out.ctypes.data + 4 * s)

    run_parts(part, workers)
    return out


def highest(values: np.ndarray, count: int) -> np.ndarray:
    """Positions (ascending) of the ``count`` highest values, ties at the cut broken by position."""
    n = len(values)
    if count >= n:
        return np.arange(n)
    if count <= 0:
        return np.arange(0)
    cut = np.partition(values, n - count)[n - count]  # the count-th highest value
    above = np.flatnonzero(values > cut)
    at = np.flatnonzero(values == cut)[: count - len(above)]
    return np.sort(np.concatenate([above, at]))


def workers_for(threads: int | None, shares: int) -> int:
    """Threads for a pass of ``shares`` worthwhile pieces: at most the cores and _MAX_THREADS."""
    return max(1, min(threads or _CORES, _MAX_THREADS, shares))


def run_parts(part: Callable[[int], None], workers: int) -> None:
    """part(0) ... part(workers - 1): part(0) on this thread, the others on the pool (ctypes
    releases the GIL), so the caller works instead of waiting for a pool thread to wake."""
    others = [_pool().submit(part, w) for w in range(1, workers)]
    try:
        part(0)
    finally:
        for f in others:
            f.result()


def _select(lib: Any, dist: np.ndarray, hist: np.ndarray, step: int, cut: int, at_cut: int, size: int) -> np.ndarray:
    """Positions (ascending) of the distances below ``cut`` and the first ``at_cut`` equal to it.

    Worker w's share is ``dist[w * step:]`` (``hist[w]`` its histogram): each share takes the
    ties at the cut that the shares before it left, so the answer is the one-thread one."""
    workers = len(hist)
    out = np.empty(size, np.int64)
    if workers == 1:
        return out[: lib.xmr_select(dist.ctypes.data, len(dist), cut, at_cut, out.ctypes.data)]
    below = hist[:, :cut].sum(axis=1)
    ties = hist[:, cut] if cut < hist.shape[1] else np.zeros(workers, np.int64)
    takes = []
    for w in range(workers):
        takes.append(min(int(ties[w]), at_cut))
        at_cut -= takes[-1]
    starts = np.concatenate([[0], np.cumsum(below + np.asarray(takes, np.int64))])

    def part(w: int) -> None:
        s, e, o = w * step, min(len(dist), (w + 1) * step), int(starts[w])
        if s < e:
            got = lib.xmr_select(dist.ctypes.data + 2 * s, e - s, cut, takes[w], out.ctypes.data + 8 * o)
            out[o : o + got] += s

    run_parts(part, workers)
    return out[: int(starts[-1])]


def _nearest_numpy(
    q: np.ndarray, codes: np.ndarray, count: int, allowed: np.ndarray | None, threads: int | None
) -> np.ndarray:
    far = np.iinfo(np.uint16).max
    dist = hamming(q, codes, threads=threads)
    if allowed is not None:
        dist[~allowed] = far
    pos = np.sort(smallest(dist, count))
    return pos[dist[pos] != far] if allowed is not None else pos


_MAX_THREADS = 4
_pools: list[ThreadPoolExecutor] = []
_pool_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """One pool for the process's Hamming passes (threads are not started afresh each query)."""
    with _pool_lock:
        if not _pools:
            _pools.append(ThreadPoolExecutor(max_workers=_MAX_THREADS, thread_name_prefix="xmr-hamming"))
        return _pools[0]


def smallest(dist: np.ndarray, count: int) -> np.ndarray:
    """Positions of ``count`` smallest distances (ties at the cut broken by position), unordered.

    Counting, not sorting: distances are small integers, so one bincount finds the cut."""
    n = len(dist)
    if count >= n:
        return np.arange(n)
    hist = np.bincount(dist, minlength=1)
    cut = int(np.searchsorted(np.cumsum(hist), count))  # first distance whose cumulative count reaches count
    below = np.flatnonzero(dist < cut)
    at = np.flatnonzero(dist == cut)[: count - len(below)]
    return np.concatenate([below, at])
