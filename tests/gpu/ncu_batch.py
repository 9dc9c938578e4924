#!/usr/bin/env python3
"""One steady batch's kernels from two ncu runs of the same job, one with a single batch and
one with two: per kernel name, launches and GPU time of the second run less the first.

Whatever a job launches once (loading and converting the weights, the first batch's
allocations) cancels, so the table is what every later batch costs, which a single run's
first N launches cannot tell apart from the load (the third H100 run's profile could not).

    ncu --csv --metrics gpu__time_duration.sum ... job with 1 batch  > one.csv
    ncu --csv --metrics gpu__time_duration.sum ... job with 2 batches > two.csv
    tests/gpu/ncu_batch.py one.csv two.csv

The input is ncu's raw CSV (one row per launch and metric; lines before the header, such as
ncu's own messages and the job's output, are skipped). Standard library only."""
import csv
import sys

UNITS = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3, "second": 1e6, "s": 1e6}


def short(name):
    """The kernel's name without its parameter list (the last balanced "(...)"; template
    arguments may hold parentheses of their own)."""
    name = name.strip()
    if name.endswith(")"):
        depth = 0
        for i in range(len(name) - 1, -1, -1):
            depth += {")": 1, "(": -1}.get(name[i], 0)
            if depth == 0:
                return name[:i].strip() or name
    return name


def per_kernel(path):
    """{kernel: [launches, microseconds]} of one ncu CSV file."""
    with open(path, newline="", errors="replace") as f:
        lines = f.read().splitlines()
    start = next((i for i, ln in enumerate(lines) if '"Kernel Name"' in ln and '"Metric Value"' in ln), None)
    if start is None:
        raise SystemExit(f"ncu_batch.py: {path}: no ncu CSV header (with \"Kernel Name\" and \"Metric Value\") found")
    out = {}
    for row in csv.DictReader(lines[start:]):
        if row.get("Metric Name") != "gpu__time_duration.sum":
            continue
        unit = UNITS.get((row.get("Metric Unit") or "").strip())
        try:
            value = float((row.get("Metric Value") or "").replace(",", ""))
        except ValueError:
            continue
        if unit is None:
            raise SystemExit(f"ncu_batch.py: {path}: unknown time unit {row.get('Metric Unit')!r}")
        k = out.setdefault(short(row.get("Kernel Name") or "?"), [0, 0.0])
        k[0] += 1
        k[1] += value * unit
    return out


def main(argv):
    if len(argv) != 3 or argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(argv) == 2 else 2
    one, two = per_kernel(argv[1]), per_kernel(argv[2])
    rows = []
    for name in sorted(set(one) | set(two)):
        a, b = one.get(name, [0, 0.0]), two.get(name, [0, 0.0])
        if b[0] - a[0] or abs(b[1] - a[1]) > 0.5:
            rows.append((b[1] - a[1], b[0] - a[0], name))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    print(f"one steady batch: {sum(r[1] for r in rows)} launches, {total / 1e3:.3f} ms of kernels")
    print(f"{'kernel':58} {'launches':>8} {'ms':>9} {'share':>6}")
    for us, n, name in rows:
        print(f"{name[:58]:58} {n:8d} {us / 1e3:9.3f} {100 * us / total if total else 0:5.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
