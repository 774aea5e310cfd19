"""A small compiled kernel for the codes: Hamming distances with a histogram, selection, the
query's scores of kept codes, row reads.

numpy 1.x (which laion-clap pins) has no vectorised popcount, and emulating one (SWAR, in
``xmr.store.codes``) costs about a dozen passes over memory per 64-bit word: ~0.2 s for the first
two words of 5M codes on a 2-core machine, where this loop's ``popcount`` instruction takes ~10 ms.
The C source below is compiled once per machine with the system C compiler into the user cache
dir (``XMR_KERNELS_DIR`` overrides it) and loaded with ctypes: no new dependency. Where there is
no compiler, it fails, or ``XMR_CODES_KERNEL=numpy`` is set, ``load()`` returns None and the
callers use numpy. ctypes releases the GIL during each call, so threads can split the columns.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from xmr import paths

SOURCE = r"""
#define _GNU_SOURCE
#include <stdint.h>
#include <fcntl.h>
#include <unistd.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/uio.h>

/* d[i] = Hamming distance from q (words 64-bit words) to column i of word-major codes (row
   stride `stride` words), for i in [start, stop); columns not allowed get 0xFFFF and are not
   counted; hist[d] += 1 for the others. */
void xmr_hamming(const uint64_t *codes, int64_t stride, int32_t words, const uint64_t *q,
                 const uint8_t *allowed, int64_t start, int64_t stop, uint16_t *d, int64_t *hist) {
    if (words == 2 && !allowed) {  /* the prefilter: two streams, no branch, counted as they go */
        const uint64_t *a = codes, *b = codes + stride;
        uint64_t q0 = q[0], q1 = q[1];
        int64_t g[4][129] = {{0}};
        int64_t i = start;
        for (; i + 4 <= stop; i += 4) {
            uint16_t d0 = (uint16_t)(__builtin_popcountll(a[i] ^ q0) + __builtin_popcountll(b[i] ^ q1));
            uint16_t d1 = (uint16_t)(__builtin_popcountll(a[i + 1] ^ q0) + __builtin_popcountll(b[i + 1] ^ q1));
            uint16_t d2 = (uint16_t)(__builtin_popcountll(a[i + 2] ^ q0) + __builtin_popcountll(b[i + 2] ^ q1));
            uint16_t d3 = (uint16_t)(__builtin_popcountll(a[i + 3] ^ q0) + __builtin_popcountll(b[i + 3] ^ q1));
            d[i] = d0; d[i + 1] = d1; d[i + 2] = d2; d[i + 3] = d3;
            g[0][d0] += 1; g[1][d1] += 1; g[2][d2] += 1; g[3][d3] += 1;
        }
        for (; i < stop; i++) {
            d[i] = (uint16_t)(__builtin_popcountll(a[i] ^ q0) + __builtin_popcountll(b[i] ^ q1));
            g[0][d[i]] += 1;
        }
        for (int32_t v = 0; v < 129; v++) hist[v] += g[0][v] + g[1][v] + g[2][v] + g[3][v];
        return;
    } else {
        for (int64_t i = start; i < stop; i++) {
            if (allowed && !allowed[i]) { d[i] = 0xFFFF; continue; }
            uint32_t c = 0;
            for (int32_t w = 0; w < words; w++) c += (uint32_t)__builtin_popcountll(codes[w * stride + i] ^ q[w]);
            d[i] = (uint16_t)c;
        }
    }
    /* four histograms: consecutive equal distances do not wait on each other's increment */
    int64_t h[4][16 * 64 + 1];
    int32_t top = 64 * words + 1;
    if (words > 16) {  /* codes this long: one histogram */
        for (int64_t i = start; i < stop; i++) if (d[i] != 0xFFFF) hist[d[i]] += 1;
        return;
    }
    for (int r = 0; r < 4; r++) for (int32_t v = 0; v < top; v++) h[r][v] = 0;
    int64_t i = start;
    for (; i + 4 <= stop; i += 4) {
        h[0][d[i] == 0xFFFF ? 0 : d[i]] += d[i] != 0xFFFF;
        h[1][d[i + 1] == 0xFFFF ? 0 : d[i + 1]] += d[i + 1] != 0xFFFF;
        h[2][d[i + 2] == 0xFFFF ? 0 : d[i + 2]] += d[i + 2] != 0xFFFF;
        h[3][d[i + 3] == 0xFFFF ? 0 : d[i + 3]] += d[i + 3] != 0xFFFF;
    }
    for (; i < stop; i++) h[0][d[i] == 0xFFFF ? 0 : d[i]] += d[i] != 0xFFFF;
    for (int32_t v = 0; v < top; v++) hist[v] += h[0][v] + h[1][v] + h[2][v] + h[3][v];
}

/* s[j] = the query's score against row rows[j]'s code: the sum over the code's bytes p of
   lut[p * 256 + byte p] (the query's quantised projections, each with the sign its bit stores).
   Integer sums: the same in any order, so the numpy path and any thread split agree. */
void xmr_scored_rows(const uint64_t *codes, int64_t stride, int32_t words, const int32_t *lut,
                     const int64_t *rows, int64_t m, int32_t *s) {
    for (int64_t j = 0; j < m; j++) {
        int64_t i = rows[j];
        if (j + 8 < m) {  /* scattered columns: ask for row j + 8's words while row j is scored */
            int64_t p = rows[j + 8];
            for (int32_t w = 0; w < words; w++) __builtin_prefetch(codes + w * stride + p);
        }
        int32_t acc = 0;
        for (int32_t w = 0; w < words; w++) {
            uint64_t c = codes[w * stride + i];
            const int32_t *t = lut + (int64_t)w * 2048;
            acc += t[c & 255] + t[256 + ((c >> 8) & 255)] + t[512 + ((c >> 16) & 255)]
                 + t[768 + ((c >> 24) & 255)] + t[1024 + ((c >> 32) & 255)] + t[1280 + ((c >> 40) & 255)]
                 + t[1536 + ((c >> 48) & 255)] + t[1792 + (c >> 56)];
        }
        s[j] = acc;
    }
}

/* Positions (ascending) of d < cut and of the first at_cut with d == cut; returns how many. */
int64_t xmr_select(const uint16_t *d, int64_t n, uint32_t cut, int64_t at_cut, int64_t *out) {
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) {
        uint32_t v = d[i];
        if (v < cut) out[k++] = i;
        else if (v == cut && at_cut > 0) { out[k++] = i; at_cut--; }
    }
    return k;
}

/* Copy rows[0..m) (each rowbytes long, at base + row * rowbytes) of fd into out: all are asked
   of the kernel first (their reads overlap on disk), then read. 0, or errno of a failed read,
   or -1 for a short one. */
static int64_t read_row(int fd, int64_t at, int64_t rowbytes, char *dst) {
    int64_t got = 0;
    while (got < rowbytes) {
        ssize_t r = pread(fd, dst + got, rowbytes - got, at + got);
        if (r < 0) { if (errno == EINTR) continue; return errno; }
        if (r == 0) return -1;
        got += r;
    }
    return 0;
}

int64_t xmr_read_rows(int fd, int64_t base, int64_t rowbytes, const int64_t *rows, int64_t m, char *out) {
    int64_t *todo = NULL, left = m;
#if defined(RWF_NOWAIT) && defined(__linux__)
    /* A warm server finds most rows in the page cache: copy those at once (RWF_NOWAIT fails
       instead of waiting on the disk), so only the others cost a hint and a blocking read. */
    todo = m > 1 ? (int64_t *)malloc(sizeof(int64_t) * m) : NULL;
    if (todo) {
        left = 0;
        for (int64_t j = 0; j < m; j++) {
            struct iovec v = {out + j * rowbytes, (size_t)rowbytes};
            if (preadv2(fd, &v, 1, base + rows[j] * rowbytes, RWF_NOWAIT) != rowbytes) todo[left++] = j;
        }
    }
#endif
#define ROW(t) (todo ? todo[t] : (t))
#ifdef POSIX_FADV_WILLNEED
    if (left > 1)
        for (int64_t t = 0; t < left; t++)
            posix_fadvise(fd, base + rows[ROW(t)] * rowbytes, rowbytes, POSIX_FADV_WILLNEED);
#endif
    int64_t why = 0;
    for (int64_t t = 0; t < left && !why; t++)
        why = read_row(fd, base + rows[ROW(t)] * rowbytes, rowbytes, out + ROW(t) * rowbytes);
#undef ROW
    free(todo);
    return why;
}
"""

_lock = threading.Lock()
_loaded: list = []  # [library or None] once tried in this process


def _flags() -> list[str]:
    flags = ["-O3", "-shared", "-fPIC", "-std=c99"]
    if platform.machine().lower() in ("x86_64", "amd64"):
        with contextlib.suppress(OSError):
            with open("/proc/cpuinfo") as f:
                if " popcnt" in f.read(1 << 16):  # every x86-64 CPU since ~2008; without it a table
                    flags.append("-mpopcnt")
    return flags


def _library_path(flags: list[str]) -> Path:
    key = hashlib.blake2b(
        "\0".join([SOURCE, *flags, sys.platform, platform.machine()]).encode(), digest_size=8
    ).hexdigest()
    return paths.kernels_dir() / f"hamming-{key}.so"


def _compile(target: Path, flags: list[str]) -> None:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise OSError("no C compiler")
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    src = target.with_name(f".{target.stem}.{os.getpid()}.c")
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        src.write_text(SOURCE)
        subprocess.run([cc, *flags, "-o", str(tmp), str(src)], check=True, capture_output=True, timeout=120)
        os.replace(tmp, target)  # atomic: a concurrent process loads either none or a whole library
    finally:
        for p in (src, tmp):
            with contextlib.suppress(OSError):
                p.unlink()


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    p, i64, i32, u32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_uint32
    lib.xmr_hamming.argtypes = [p, i64, i32, p, p, i64, i64, p, p]
    lib.xmr_hamming.restype = None
    lib.xmr_scored_rows.argtypes = [p, i64, i32, p, p, i64, p]
    lib.xmr_scored_rows.restype = None
    lib.xmr_select.argtypes = [p, i64, u32, i64, p]
    lib.xmr_select.restype = i64
    lib.xmr_read_rows.argtypes = [ctypes.c_int, i64, i64, p, i64, p]
    lib.xmr_read_rows.restype = i64
    return lib


def load() -> ctypes.CDLL | None:
    """The compiled kernel (compiled on first use on this machine), or None to use numpy."""
    if _loaded:
        return _loaded[0]
    with _lock:
        if _loaded:
            return _loaded[0]
        lib = None
        if os.environ.get("XMR_CODES_KERNEL", "").strip().lower() != "numpy" and os.name == "posix":
            flags = _flags()
            path = _library_path(flags)
            failed = path.with_suffix(".failed")  # a build that failed once is not retried by every search
            try:
                if not path.exists() and not failed.exists():
                    try:
                        _compile(path, flags)
                    except (OSError, subprocess.SubprocessError):
                        with contextlib.suppress(OSError):
                            failed.touch()
                        raise
                lib = _bind(ctypes.CDLL(str(path)))
            except (OSError, subprocess.SubprocessError, AttributeError):
                lib = None  # no compiler, a failed build or an unloadable file: numpy does it
        _loaded.append(lib)
        return lib


def reset() -> None:
    """Forget what ``load`` found (tests switch the kernel off and on)."""
    with _lock:
        _loaded.clear()
