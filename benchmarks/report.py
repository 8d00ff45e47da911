"""Turn a pytest-benchmark JSON file into the README's ratio table.

    python -m pytest benchmarks --benchmark-only --benchmark-json=bench.json
    python benchmarks/report.py bench.json

Within each benchmark group, entries are classified by their test name:
"torch" -> PyTorch, "numpy" -> fastgrad's NumPy backend, "fastgrad_py" ->
fastgrad's Python step on the native ops, anything else -> fastgrad (native).
Ratios are other-median / fastgrad-median (> 1: fastgrad is faster), all from
the same run.
"""
from __future__ import annotations

import json
import sys


def classify(name: str) -> str:
    low = name.lower()
    if "torch_foreach" in low:
        return "torch (foreach)"
    if "torch" in low:
        return "torch"
    if "fastgrad_py" in low:
        return "fastgrad (python step)"
    if "numpy" in low:
        return "numpy backend"
    return "fastgrad"


def fmt_time(s: float) -> str:
    if s >= 1:
        return f"{s:.3g} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} µs"


def main(path: str) -> None:
    data = json.load(open(path))
    groups: dict = {}
    for b in data["benchmarks"]:
        groups.setdefault(b["group"] or b["name"], {})[classify(b["name"])] = b
    cols = ["numpy backend", "torch", "torch (foreach)", "fastgrad (python step)"]
    print("| group | fastgrad median | " + " | ".join(f"vs {c}" for c in cols) + " | notes |")
    print("|---|---:|" + "---:|" * len(cols) + "---|")
    for g in sorted(groups):
        entries = groups[g]
        fg = entries.get("fastgrad")
        if fg is None:
            continue
        t = fg["stats"]["median"]
        cells = []
        for c in cols:
            o = entries.get(c)
            cells.append(f"{o['stats']['median'] / t:.2f}×" if o else "—")
        info = fg.get("extra_info") or {}
        notes = []
        if "GFLOPs" in info:
            notes.append(f"{info['GFLOPs']} GFLOP/s")
        if "GBps" in info:
            notes.append(f"{info['GBps']} GB/s")
        if "of_triad" in info:
            notes.append(f"{info['of_triad']:.0%} of triad")
        if "flop_lower_bound_s" in info:
            notes.append(f"{t / info['flop_lower_bound_s']:.2f}× the FLOP bound")
        notes += [f"{k}={v}" for k, v in info.items() if k.endswith("peak_rss_mib")]
        notes = ", ".join(notes)
        print(f"| {g} | {fmt_time(t)} | " + " | ".join(cells) + f" | {notes} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench.json")
