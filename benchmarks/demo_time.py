"""How long `neurolabel demo` takes, stage by stage, as a newcomer runs it.

    python benchmarks/demo_time.py [--runs 3] [--load 2] [--json benchmarks/results_demo_time.json]

Each run is the README's command, `neurolabel demo --quiet`, in a fresh process with a fresh
cache folder (a newcomer's first run: nothing cached), timed from outside: wall seconds,
user and system CPU seconds of the process, peak memory, and the stage seconds the result
records (`settings.stage_seconds`: setup, exemplar pass, patches, scoring, explain); what
remains of the wall time is start-up, writing the probing images, saving and the HTML
report. `--load N` runs N busy processes beside it (a machine shared with other jobs).
Prints JSON: every run, and the median of each figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def busy_processes(count: int) -> list[subprocess.Popen]:
    """``count`` processes that keep one core each busy until killed."""
    loop = "while True: pass"
    return [subprocess.Popen([sys.executable, "-c", loop]) for _ in range(count)]


def run_demo() -> dict:
    """One `neurolabel demo` in a fresh process and cache folder: its figures."""
    with tempfile.TemporaryDirectory() as scratch:
        out, cache = Path(scratch) / "demo", Path(scratch) / "cache"
        env = {**os.environ, "NEUROLABEL_CACHE_DIR": str(cache)}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        command = [sys.executable, "-m", "neurolabel", "demo", "--out", str(out), "--quiet"]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise SystemExit(f"neurolabel demo failed:\n{done.stderr}")
        result = json.loads((out / "result.json").read_text())
        settings = result["settings"]
        stages = settings.get("stage_seconds", {})
        logits = result["neurons"]["classifier"]
        classes = result["model"]["class_names"]
        own = sum(classes[n["unit"]].lower() in [c for c, _ in n["concepts"][:5]] for n in logits)
        return {
            "wall_seconds": round(wall, 2),
            "user_seconds": round(after.ru_utime - before.ru_utime, 2),
            "system_seconds": round(after.ru_stime - before.ru_stime, 2),
            # ru_maxrss of children is the largest child's peak, in KiB on Linux.
            "peak_rss_mib": round(after.ru_maxrss / 1024, 1),
            "labeling_seconds": settings.get("seconds"),
            "stage_seconds": stages,
            "startup_images_save_and_report_seconds": round(
                wall - (settings.get("seconds") or 0), 2
            ),
            "logit_units_with_own_class_in_top5": f"{own}/{len(logits)}",
            "images_used": result["dataset"]["num_used"],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--load", type=int, default=0, help="busy processes beside the demo")
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    hogs = busy_processes(args.load)
    try:
        runs = [run_demo() for _ in range(args.runs)]
    finally:
        for hog in hogs:
            hog.kill()
    figures = ("wall_seconds", "user_seconds", "system_seconds", "peak_rss_mib")
    report = {
        "command": "neurolabel demo --quiet (fresh process and cache folder per run)",
        "cpus": os.cpu_count(),
        "busy_processes_beside": args.load,
        "median": {k: statistics.median(r[k] for r in runs) for k in figures},
        "runs": runs,
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
