"""Point-cloud file readers that need no mesh library (PCD)."""
from __future__ import annotations

import numpy as np


def read_pcd(path_or_bytes) -> np.ndarray:
    """Read x, y, z of a PCD v0.7 file (DATA ascii or binary) as float32 [N, 3]."""
    data = path_or_bytes if isinstance(path_or_bytes, (bytes, bytearray)) else open(path_or_bytes, "rb").read()
    header: dict[str, list[str]] = {}
    pos = 0
    while True:
        end = data.index(b"\n", pos)
        line = data[pos:end].decode("ascii", "replace").strip()
        pos = end + 1
        if not line or line.startswith("#"):
            continue
        key, *vals = line.split()
        header[key.upper()] = vals
        if key.upper() == "DATA":
            break
    fields = header["FIELDS"]
    sizes = [int(s) for s in header.get("SIZE", ["4"] * len(fields))]
    types = header.get("TYPE", ["F"] * len(fields))
    counts = [int(c) for c in header.get("COUNT", ["1"] * len(fields))]
    n = int(header.get("POINTS", header.get("WIDTH", ["0"]))[0])
    kind = header["DATA"][0].lower()
    cols = [f for f, c in zip(fields, counts) for _ in range(c)]
    try:
        xyz_cols = [cols.index(a) for a in ("x", "y", "z")]
    except ValueError as e:
        raise ValueError("PCD file has no x/y/z fields") from e
    if kind == "ascii":
        arr = np.loadtxt(data[pos:].decode("ascii").splitlines(), dtype=np.float64, ndmin=2)
        return arr[:, xyz_cols].astype(np.float32)
    if kind != "binary":
        raise ValueError(f"PCD DATA {kind!r} is not supported (ascii or binary)")
    code = {"F": "f", "I": "i", "U": "u"}
    per_col = [(t, s) for t, s, c in zip(types, sizes, counts) for _ in range(c)]
    dtype = np.dtype([(f"c{j}", f"<{code[t]}{s}") for j, (t, s) in enumerate(per_col)])
    rec = np.frombuffer(data, dtype=dtype, count=n, offset=pos)
    return np.stack([rec[f"c{i}"] for i in xyz_cols], axis=1).astype(np.float32)
