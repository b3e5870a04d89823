#!/usr/bin/env python3
"""Writes tests/goldens/numpy<major>.json: what `np.percentile` (linear) and Python's
`sum(list) / len(list)` return for lists mixing NumPy float32 scalars and Python floats — the
exact situation in llmlingua's LLMLingua-2 path. Run once under NumPy 2.x and once under NumPy
1.x (only numpy needed):

    /work/ref-venv/bin/python tools/make_numpy_fixture.py      # NumPy 2.4 → numpy2.json
    <venv with numpy==1.26.4>/bin/python tools/make_numpy_fixture.py   # → numpy1.json
"""

import json
import os
import random

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    r = random.Random(5)
    cases = []
    for _ in range(400):
        n = r.randint(1, 40)
        vals = [np.float32(r.random() ** r.choice([1, 3])) for _ in range(n)]
        kinds = ["f32"] * n
        if r.random() < 0.4:
            for _ in range(r.randint(1, 3)):
                j = r.randrange(n)
                vals[j] = r.choice([1.0, 0.0])
                kinds[j] = "py"
        if r.random() < 0.3:  # duplicates / ties
            k = r.randrange(n)
            for j in range(r.randrange(n)):
                vals[j] = vals[k]
                kinds[j] = kinds[k]
        q = r.choice([0, 1, 10, 18, 20, 25, 31, 45, 50, 51, 68, 76, 99, 100, r.randint(0, 100)])
        p = np.percentile(vals, q)
        mean = sum(vals) / len(vals)
        # The reference also takes percentiles of lists of means (NumPy 1: float64 scalars).
        cases.append({
            "values": [float(v) for v in vals],
            "kinds": kinds,
            "q": q,
            "percentile": float(p),
            "percentile_is_f32": isinstance(p, np.float32),
            "mean": float(mean),
            "mean_is_f32": isinstance(mean, np.float32),
        })
    major = np.__version__.split(".")[0]
    path = os.path.join(REPO, "tests", "goldens", f"numpy{major}.json")
    with open(path, "w") as f:
        json.dump({"numpy": np.__version__, "cases": cases}, f, indent=0)
        f.write("\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
