"""What a Batch child runs: `python -m shepard.batch_task --store URL --token T`
(in the worker image, `/opt/shepard-worker/bin/shepard-batch-task ...`).

The child learns its index from its environment (backend.batch_identity), reads its job (or
its pack of jobs, when the array's token says `-pK`) and the flock's settings from the store
(assign.py), runs each attempt in turn through the same runtime as every backend (environment,
folders, bundle, secrets, result zips, error bundles, logs in the flock's store, the job's
timeout) and writes each outcome to the store for the head to record; a job of a pack that the
head marked as cancelled is skipped.
It never opens the catalog. Inside the task, `AWS_ENDPOINT_URL` (from `worker_env`) replaces
the stores' endpoint of flock.toml: the tasks may reach the stores by another address than
the head. SIGTERM (TerminateJob, Batch's time limit) stops the payload and reports nothing:
the head records Batch's reason.
"""

import gc

gc.disable()

import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Run this child's job; the exit status (0 once an outcome is stored)."""
    import argparse
    import logging
    import signal
    import threading

    from shepard import config
    from shepard.backends.arraytasks import token_pack
    from shepard.backends.aws_batch import assign
    from shepard.backends.aws_batch.backend import batch_identity
    from shepard.errors import ShepardError
    from shepard.flock import Flock
    from shepard.model import JobStatus
    from shepard.runtime import AttemptControl, run_attempt
    from shepard.storage import StoreOptions, open_store

    parser = argparse.ArgumentParser(prog="shepard-batch-task")
    parser.add_argument("--store", required=True, help="the flock's manifests store")
    parser.add_argument("--token", required=True, help="the array's submission token")
    parser.add_argument("--index", type=int, default=None, help="default: from the environment")
    parser.add_argument("--folder", default=None, help="the flock's folder, as the head has it")
    args = parser.parse_args(argv)
    level = os.environ.get("SHEPARD_LOG_LEVEL", "WARNING").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    control = AttemptControl(stop_reason="terminated by AWS Batch")
    terminated = threading.Event()

    def on_term(signum: int, frame: object) -> None:
        terminated.set()
        control.stop.set()

    signal.signal(signal.SIGTERM, on_term)
    env = os.environ
    identity = batch_identity(env)
    array_id = identity[0] if identity else "local"
    index = args.index if args.index is not None else (identity[1] if identity else None)
    if index is None:
        print("error: give --index: this process is not a Batch child", file=sys.stderr)
        return 2
    endpoint = env.get("AWS_ENDPOINT_URL") or None
    try:
        # the region is boto3's (AWS_REGION, which Batch sets): with the same options as the
        # flock's stores (unless flock.toml names a region), one S3 client serves them all
        store = open_store(args.store, options=StoreOptions(endpoint_url=endpoint))
        pack = token_pack(args.token)
        jobs = assign.read_assignments(store, args.token, range(index * pack, (index + 1) * pack))
        folder = _folder(args.folder)
        (folder / config.CONFIG_NAME).write_bytes(store.get_bytes(assign.toml_key(args.token)))
        loaded = config.load(folder)
        cfg = loaded.config
        if endpoint:
            storage = cfg.storage.model_copy(update={"endpoint_url": endpoint})
            cfg = cfg.model_copy(update={"storage": storage})
        if cfg.payload.image:  # this container is the image: run its command in it
            # a command payload in this container (model_copy does not infer the kind)
            command = image_command(cfg.payload.command)
            payload = cfg.payload.model_copy(
                update={"image": None, "kind": "command", "command": command}
            )
            cfg = cfg.model_copy(update={"payload": payload})
        flock = Flock(config.Flockdir(folder, cfg))
        for line, job in zip(range(index * pack, index * pack + len(jobs)), jobs, strict=True):
            if pack > 1 and store.exists(assign.cancelled_key(job.id)):
                print(f"job {job.id}: cancelled, skipped")
                continue
            outcome = run_attempt(job, flock.runtime_context(), control)
            if terminated.is_set() and outcome.status is not JobStatus.SUCCEEDED:
                print(f"job {job.id}: stopped by AWS Batch", file=sys.stderr)
                return 143
            assign.write_outcome(store, array_id, line, job, outcome)
            print(f"job {job.id} attempt {job.attempt}: {outcome.status.value}", flush=True)
    except ShepardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _folder(wanted: str | None) -> Path:
    """The flock's folder at the head's path (so workspaces are `<flock>/work/<UUID>` as on
    every backend), else a new temporary folder when that path cannot be made here."""
    import tempfile

    if wanted:
        try:
            Path(wanted).mkdir(parents=True, exist_ok=True)
            return Path(wanted)
        except OSError:
            pass
    return Path(tempfile.mkdtemp(prefix="shepard-flock-"))


def image_command(command: str | None) -> str:
    """The command of an image payload inside its own container: the flock's payload command
    if it has one, else the image's ENTRYPOINT and CMD (recorded by the worker image)."""
    import json
    import shlex

    if command:
        return command
    words = json.loads(os.environ.get("SHEPARD_IMAGE_COMMAND") or "[]")
    if not words:
        from shepard.errors import ShepardError

        raise ShepardError("the image has no ENTRYPOINT or CMD and the flock no payload command")
    return shlex.join(words)


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
