"""The README's first command, timed from a fresh clone: venv, installs, `grefel demo`.

    python bench/bench_readme.py [--repo .] [--keep DIR]

Clones the repository's committed HEAD into a temporary folder (or DIR), runs the first ```bash
block of its README there with `bash -e`, and prints the wall time of the whole command, the demo's
own steps (from grefel-demo/demo.json), the RB comparison per noise level, the machine's CPU and its
load average before and after: the figures bench/RESULTS.md records. Needs the network (or a
local index) for the installs, like the README's reader.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def first_bash_block(readme: str) -> str:
    m = re.search(r"```bash\n(.*?)```", readme, re.S)
    if not m:
        raise SystemExit("README.md has no ```bash block")
    return m.group(1).strip()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", default=".", help="the repository to clone (its committed HEAD)")
    ap.add_argument("--keep", default=None, help="clone into this folder and keep it")
    args = ap.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="grefel-readme-"))
    clone = root / "grefel"
    subprocess.run(["git", "clone", "-q", str(Path(args.repo).resolve()), str(clone)], check=True)
    command = first_bash_block((clone / "README.md").read_text())
    print(f"{cpu_name()}, {os.cpu_count()} CPUs, load {os.getloadavg()}; python {sys.version.split()[0]}")
    print(f"$ {command}")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    t0 = time.perf_counter()
    done = subprocess.run(["bash", "-e", "-c", command], cwd=clone, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    print(f"exit {done.returncode}; wall {wall:.1f} s = {wall // 60:.0f} min {wall % 60:.0f} s; load {os.getloadavg()}")
    demo = clone / "grefel-demo" / "demo.json"
    if not demo.is_file():
        raise SystemExit(f"no {demo}: the demo did not finish")
    d = json.loads(demo.read_text())
    print(f"demo {d['total_s']:.1f} s; installs and start-up {wall - d['total_s']:.1f} s")
    for s in d["steps"]:
        print(f"  {s['seconds']:7.1f} s  {s['step']}")
    for e in d["rb_effect"]:
        lo, hi = (100 * x for x in e["ci"])
        print(f"  {e['regime']}: {100 * e['diff_mean']:+.2f} points, 95 % CI {lo:+.2f} to {hi:+.2f}, p {e['p']:.3g}")
    print(f"kept in {root}" if args.keep else f"(clone in {root}; delete it when done)")


if __name__ == "__main__":
    main()
