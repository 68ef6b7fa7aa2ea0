"""Per-job cost of an image payload against `podman run` of the same image, in a loop.

    .venv/bin/python bench/container.py [--jobs 30] [--rounds 3] [--image IMAGE] [--engine URL]

Both sides run `echo "$ITEM" > <output folder>/o.txt` in the same image, one job at a time.
The baseline is `podman run --rm -v OUT:OUT IMAGE sh -c '...'` N times in a shell loop; Shepard
runs N jobs through `shepard submit --range ITEM=1-N --wait` on a flock with one worker whose
payload is that image (registration, claim, workspace, a container created, started, waited
for, its logs copied and removed, output zipped and stored, outcome recorded). A flock running
the same command as a plain process is measured too, to show what the container itself costs.
Rounds alternate the sides; the figures are medians of the rounds, measured in one run.
Needs scripts/services-podman (its socket and the busybox test image).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHEPARD = str(Path(sys.executable).with_name("shepard"))
PAYLOAD = 'echo "$ITEM" > "$ROOT_OUTPUT_NAME/o.txt"'
IMAGE = os.environ.get("SHEPARD_TEST_BUSYBOX", "localhost/shepard-test-busybox:1")
ENGINE = os.environ.get("SHEPARD_TEST_DOCKER_HOST", "unix:///run/shepard-podman/podman.sock")


def run_podman(jobs: int, image: str, scratch: Path) -> float:
    out = scratch / "podman-out"
    out.mkdir()
    loop = (
        f'for i in $(seq 1 {jobs}); do podman run --rm -v "{out}:{out}" {image} '
        f'sh -c "echo $i > {out}/$i.txt" || exit 1; done'
    )
    began = time.perf_counter()
    subprocess.run(["sh", "-c", loop], check=True)
    elapsed = time.perf_counter() - began
    assert len(os.listdir(out)) == jobs
    return elapsed


def run_shepard(jobs: int, scratch: Path, image: str | None, engine: str) -> float:
    flock = scratch / ("flock-image" if image else "flock-process")
    env = {**os.environ, "SHEPARD_FLOCK": str(flock)}
    init = [SHEPARD, "init", str(flock), "--payload-command", PAYLOAD, "--workers", "1"]
    if image:
        init += ["--payload-image", image]
    subprocess.run(init, check=True, env=env, capture_output=True)
    if image:
        with open(flock / "flock.toml", "a") as fh:
            fh.write(f'\n[container]\nengine = "{engine}"\n')
    began = time.perf_counter()
    subprocess.run(
        [SHEPARD, "submit", "--range", f"ITEM=1-{jobs}", "--wait"],
        check=True,
        env=env,
        capture_output=True,
    )
    elapsed = time.perf_counter() - began
    produced = len(list((flock / "outputs").glob("result@*_root.zip")))
    assert produced == jobs, f"{produced} outputs for {jobs} jobs"
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--image", default=IMAGE)
    parser.add_argument("--engine", default=ENGINE, help="the engine's API URL, for Shepard")
    args = parser.parse_args()
    if shutil.which("podman") is None:
        sys.exit("podman is not installed: run scripts/services-podman first")
    per_job: dict[str, list[float]] = {
        "podman run": [],
        "shepard, image": [],
        "shepard, process": [],
    }
    for round_ in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory(prefix="bench-container-") as tmp:
            scratch = Path(tmp)
            measured = {
                "podman run": run_podman(args.jobs, args.image, scratch),
                "shepard, image": run_shepard(args.jobs, scratch, args.image, args.engine),
                "shepard, process": run_shepard(args.jobs, scratch, None, args.engine),
            }
        for name, seconds in measured.items():
            per_job[name].append(seconds / args.jobs)
        shown = ", ".join(f"{k} {v / args.jobs:.3f} s/job" for k, v in measured.items())
        print(f"round {round_}: {shown}", flush=True)
    median = {name: statistics.median(values) for name, values in per_job.items()}
    print(f"\n{args.jobs} jobs one at a time, median of {args.rounds} rounds:")
    for name, value in median.items():
        print(f"  {name:<18} {value:.3f} s per job")
    baseline, ours = median["podman run"], median["shepard, image"]
    print(
        f"  image payload vs podman run: {ours / baseline:.2f}x, {ours - baseline:+.3f} s per job"
    )
    container = ours - median["shepard, process"]
    print(f"  the container's own cost in Shepard (image - process): {container:+.3f} s per job")


if __name__ == "__main__":
    main()
