"""Minimal, dependency-free safetensors reader/writer (little-endian F32/I64 only).

Used by the test-checkpoint recipes so that rebuilding them needs nothing but the Python
standard library (no torch, no numpy). Output is deterministic: tensors are written in sorted
name order with a compact JSON header, so identical inputs give byte-identical files.
"""

import json
import struct


def read(path):
    """Returns {name: (dtype, shape, raw_bytes)} and the metadata dict."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    meta = header.pop("__metadata__", {})
    out = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        out[name] = (info["dtype"], list(info["shape"]), data[base + start : base + end])
    return out, meta


def write(path, tensors, metadata=None):
    """tensors: {name: (dtype, shape, raw_bytes)}; written in sorted name order."""
    header = {}
    if metadata:
        header["__metadata__"] = metadata
    offset = 0
    blobs = []
    for name in sorted(tensors):
        dtype, shape, raw = tensors[name]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    hbytes = json.dumps(header, separators=(",", ":"), sort_keys=False).encode("utf-8")
    hbytes += b" " * ((8 - len(hbytes) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hbytes)))
        f.write(hbytes)
        for b in blobs:
            f.write(b)


def f32_bytes(values):
    return struct.pack("<%df" % len(values), *values)


class Rng:
    """Deterministic uniform floats from Python's Mersenne Twister (random.random() is
    guaranteed reproducible across Python versions for an integer seed)."""

    def __init__(self, seed):
        import random

        self._r = random.Random(seed)

    def uniform(self, n, scale):
        r = self._r.random
        return [(2.0 * r() - 1.0) * scale for _ in range(n)]
