"""`run_attempt`: one attempt of a claimed job, from an empty workspace to an Outcome.

This is the runtime contract every backend shares. The steps, in order:
1. create `<workspace_root>/<UUID>/{input,output}` (and `<efs|lustre>/<UUID>/{input,output}`),
   first removing what an earlier attempt may have left;
2. copy the secrets into `input/secrets/`, the quick-deploy folder (if the job names one) into
   `input/<folder>/`, and the input bundle (not unpacked) into `input/`;
3. run the payload through the flock's payload kind (`ctx.payload`, shepard/payloads/): its
   `prepare` says what runs (the flock's command through `/bin/sh -c` with the job's `<UUID>`
   folder as working directory, `sh run.sh` in `input/<folder>` for quick deploy, an image's
   own command), its `environment` builds the environment, its `run` runs it (a process
   group, a container) with stdout and stderr in the logs store (`log_key`): written there
   directly when it is a folder, else to local files uploaded while they grow and at the end
   (runtime/logsink.py);
4. on exit 0, publish the non-empty output folders as result zips; on failure, store an error
   bundle; on stop, publish nothing;
5. always remove the job's folders.

A shepherd job (its bundle key names a bucket of its own: runtime/buckets.py) takes its
inputs from that bucket instead of a bundle, runs its model's payload, and leaves its outputs
(unzipped) and its status there instead of result zips; the other steps are the same.

Outcomes (job-level problems never raise):
- SUCCEEDED: exit_code 0; `outputs` holds the result keys (empty when nothing was written).
- FAILED: `reason` is `exit code N`, `killed by signal SIGKILL`, `timeout after 30s`,
  `setup: ...`, `outputs: ...`, `internal error: ...` (all with an error bundle), or
  SUPERSEDED (nothing stored). `exit_code` follows Popen (negative N: killed by signal N) and
  is None when the payload never ran. `retryable` is False for problems another attempt would
  meet again (no command, bad QUICK_DEPLOY_DIRECTORY, unstartable payload) and when superseded.
- CANCELLED: `control.stop` was set; `reason` is `control.stop_reason`; nothing is stored.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from shepard.errors import PayloadError, StorageError
from shepard.model import Job, JobStatus, Outcome
from shepard.runtime import buckets
from shepard.runtime.context import AttemptControl, RuntimeContext
from shepard.runtime.contract import attempt_timeout
from shepard.runtime.environ import inherited_env
from shepard.runtime.errorbundle import (
    AttemptReport,
    error_bundle_key,
    signal_name,
    write_error_bundle,
)
from shepard.runtime.inputs import fetch_bundle
from shepard.runtime.logsink import SPOOL, AttemptLogs
from shepard.runtime.outputs import output_key, publish, zip_outputs
from shepard.runtime.process import KILL_GRACE, Ending, ProcessResult
from shepard.runtime.secrets import place_secrets
from shepard.runtime.workspace import (
    SetupError,
    Workspace,
    create_workspace,
    plan_workspace,
    remove_workspace,
)
from shepard.storage import ObjectStore

if TYPE_CHECKING:
    from shepard.payloads.base import Launch

SUPERSEDED = "superseded: a newer attempt owns this job"


def run_attempt(
    job: Job,
    ctx: RuntimeContext,
    control: AttemptControl,
    *,
    clock: Callable[[], float] = time.time,
    grace: float = KILL_GRACE,
    base_env: Mapping[str, str] | None = None,
    slot: Path | None = None,
) -> Outcome:
    """Run the current attempt of the claimed `job` and say how it ended. Never raises for a
    job-level problem (only BaseExceptions such as KeyboardInterrupt propagate, after the
    payload's process group is killed and the workspace removed).

    `job.started_at` is the attempt's START_TIME (`clock()` when unset). The timeout (the job's,
    else `ctx.timeout`) counts from the payload's start; END_TIME (START_TIME + timeout) is
    never later. `grace` is the time
    between SIGTERM and SIGKILL; `base_env` (default os.environ) is the inherited environment.
    `slot`: a folder owned by the calling worker slot, used (emptied) as the job's root folder
    instead of `<workspace_root>/<UUID>`.
    """
    env = inherited_env() if base_env is None else base_env
    return _Attempt(job, ctx, control, clock, grace, env, slot).run()


class _Attempt:
    def __init__(
        self,
        job: Job,
        ctx: RuntimeContext,
        control: AttemptControl,
        clock: Callable[[], float],
        grace: float,
        base_env: Mapping[str, str],
        slot: Path | None = None,
    ) -> None:
        self.job, self.ctx, self.control, self.slot = job, ctx, control, slot
        self.clock, self.grace, self.base_env = clock, grace, base_env
        self.start_time = job.started_at if job.started_at is not None else int(clock())
        self.ws: Workspace | None = None
        self.logs: tuple[Path, Path] | None = None
        self.sink: AttemptLogs | None = None
        self.returncode: int | None = None
        self.detail: str | None = None  # for the job's history, e.g. which image ran
        self.bucket_name = buckets.bucket_of(job)  # a shepherd job's own bucket
        self.bucket: ObjectStore | None = None
        self.pushed = False  # a shepherd job's outputs are in its bucket

    def run(self) -> Outcome:
        """The attempt's Outcome; the workspace is removed whatever happens."""
        try:
            outcome = self._guarded()
            if self.bucket is not None:
                self._settle_bucket(outcome)
            return outcome if self.detail is None else replace(outcome, detail=self.detail)
        finally:
            if self.sink is not None:
                self.sink.close()  # logs bound for a store that is not a folder go up
            if self.ws is not None:
                remove_workspace(self.ws)

    def _guarded(self) -> Outcome:
        try:
            return self._execute()
        except SetupError as exc:
            return self._fail(f"setup: {exc}", retryable=exc.retryable)
        except PayloadError as exc:
            return self._fail(f"setup: {exc}", retryable=False)
        except Exception as exc:
            reason = f"internal error: {type(exc).__name__}: {exc}"
            return self._fail(reason, detail=traceback.format_exc())

    def _execute(self) -> Outcome:
        job, ctx = self.job, self.ctx
        if self.bucket_name is not None and ctx.models is not None:
            ctx = self.ctx = ctx.models.context_for(job, ctx)
        ws = self.ws = plan_workspace(ctx, job.id, self.slot)
        spare = None if self.slot is None else self.slot.name  # one attempt at a time
        spool = ctx.workspace_root / SPOOL
        sink = self.sink = AttemptLogs(ctx.logs, job.id, job.attempt, spool, spare=spare)
        logs = self.logs = sink.paths
        launch, env = self._prepare(ws)
        if self.control.stop.is_set():
            return self._cancelled()
        sink.start()
        result = ctx.payload.run(
            launch, job=job, ctx=ctx, ws=ws, env=env, logs=logs, deadline=self._deadline(),
            stop=self.control.stop, grace=self.grace,
        )  # fmt: skip
        self.returncode, self.detail = result.returncode, result.detail
        return self._finish(result, ws)

    def _prepare(self, ws: Workspace) -> tuple[Launch, dict[str, str]]:
        """Fill the workspace; return what the payload runs and its environment."""
        job, ctx = self.job, self.ctx
        create_workspace(ws)
        _place_secrets(ctx.secrets, ws.secrets)
        launch = ctx.payload.prepare(job, ctx, ws)
        if self.bucket_name is not None:
            self._stage_bucket(self.bucket_name, ws)
        elif job.bundle_key is not None:
            fetch_bundle(ctx.inputs, job.bundle_key, ws.input)
        env = ctx.payload.environment(
            job, ctx, start_time=self.start_time, ws=ws, base=self.base_env
        )
        return launch, env

    def _stage_bucket(self, name: str, ws: Workspace) -> None:
        """A shepherd job: its inputs from its bucket, and `processing` in its status."""
        job = self.job
        try:
            bucket = self.bucket = buckets.open_bucket(name)
        except StorageError as exc:  # boto3 missing
            raise SetupError(str(exc), retryable=False) from exc
        buckets.pull_inputs(bucket, ws.input)
        record = buckets.status_record(
            buckets.PROCESSING, buckets.model_of(job.params), enqueued_at=job.submitted_at,
            started_at=self.start_time,
        )  # fmt: skip
        try:
            buckets.put_status(bucket, record)
        except StorageError as exc:
            raise SetupError(f"cannot record the job's status: {exc}") from exc

    def _settle_bucket(self, outcome: Outcome) -> None:
        """A shepherd job's end: partial outputs kept after a failure (as shepherd does), and
        the outcome in `job_status.json` (the routes answer from the catalog, which stays
        the source of truth; a failed status write is noted in the job's history)."""
        bucket, job = self.bucket, self.job
        assert bucket is not None
        if outcome.reason == SUPERSEDED or (
            outcome.status is JobStatus.CANCELLED and outcome.reason != "cancelled"
        ):
            return  # another attempt owns the job, or will (lease lost, shutdown): its status
        failures = []
        if not self.pushed and self.ws is not None and outcome.status is JobStatus.FAILED:
            try:
                buckets.push_outputs(bucket, self.ws.output)
            except (StorageError, OSError) as exc:
                failures.append(f"partial outputs not stored: {exc}")
        if outcome.status is JobStatus.SUCCEEDED:
            status, error = buckets.DONE, None
        else:
            status = buckets.FAILED
            error = outcome.reason or outcome.status.value
            if outcome.status is JobStatus.CANCELLED:
                error = f"cancelled: {error}" if error != "cancelled" else error
        record = buckets.status_record(
            status, buckets.model_of(job.params), enqueued_at=job.submitted_at,
            started_at=self.start_time, finished_at=self.clock(), error=error,
        )  # fmt: skip
        try:
            buckets.put_status(bucket, record)
        except StorageError as exc:
            failures.append(f"{buckets.STATUS_KEY} not written: {exc}")
        if failures:
            note = "; ".join(failures)
            self.detail = note if self.detail is None else f"{self.detail}; {note}"

    def _deadline(self) -> float | None:
        """time.monotonic() value at which the payload is stopped: `timeout` seconds after it
        starts. START_TIME is whole seconds taken at the claim, so END_TIME (START_TIME +
        timeout) is never later than this; counting from START_TIME instead would cut up to a
        second, plus the setup time, off a short timeout."""
        timeout = attempt_timeout(self.job, self.ctx)
        if timeout is None:
            return None
        return time.monotonic() + timeout

    def _finish(self, result: ProcessResult, ws: Workspace) -> Outcome:
        if result.ending is Ending.STOPPED:
            return self._cancelled()
        if result.ending is Ending.TIMED_OUT:
            return self._fail(f"timeout after {_seconds(attempt_timeout(self.job, self.ctx))}")
        if result.returncode > 0:
            return self._fail(f"exit code {result.returncode}")
        if result.returncode < 0:
            return self._fail(f"killed by signal {signal_name(-result.returncode)}")
        return self._succeed(ws)

    def _succeed(self, ws: Workspace) -> Outcome:
        if self.bucket is not None:
            return self._succeed_to_bucket(self.bucket, ws)
        try:
            zips = zip_outputs(ws, log=self.logs and self.logs[1])  # notes left-out links
        except OSError as exc:
            return self._fail(f"outputs: cannot zip the outputs: {exc}")
        if self.control.stop.is_set():
            return self._cancelled()
        if not self.control.still_current():
            return Outcome(JobStatus.FAILED, reason=SUPERSEDED, exit_code=0, retryable=False)
        job = self.job
        keys = [output_key(job.params, job.id, self.start_time, kind) for kind, _ in zips]
        try:
            publish(self.ctx.outputs, zips, keys)
        except StorageError as exc:
            return self._fail(f"outputs: {exc}")
        return Outcome(JobStatus.SUCCEEDED, exit_code=0, outputs=tuple(keys))

    def _succeed_to_bucket(self, bucket: ObjectStore, ws: Workspace) -> Outcome:
        """A shepherd job's success: every output file in its bucket, unzipped."""
        if self.control.stop.is_set():
            return self._cancelled()
        if not self.control.still_current():
            return Outcome(JobStatus.FAILED, reason=SUPERSEDED, exit_code=0, retryable=False)
        try:
            buckets.push_outputs(bucket, ws.output)
        except (StorageError, OSError) as exc:
            return self._fail(f"outputs: {exc}")
        finally:
            self.pushed = True
        return Outcome(JobStatus.SUCCEEDED, exit_code=0)

    def _cancelled(self) -> Outcome:
        reason = self.control.stop_reason
        return Outcome(JobStatus.CANCELLED, reason=reason, exit_code=self.returncode)

    def _fail(self, reason: str, *, retryable: bool = True, detail: str | None = None) -> Outcome:
        """A FAILED outcome, with an error bundle when one can be stored."""
        job, ws = self.job, self.ws
        key = error_bundle_key(job.id, self.start_time)
        stored: str | None = key
        report = AttemptReport(
            job.id, job.attempt, self.start_time, self.clock(), reason, self.returncode, detail
        )
        try:
            write_error_bundle(
                self.ctx.errors,
                key,
                report,
                logs=self.logs,
                folders=ws.folders() if ws is not None else (),
                secrets=ws.secrets if ws is not None else None,
            )
        except Exception as exc:
            reason, stored = f"{reason} (the error bundle could not be stored: {exc})", None
        return Outcome(
            JobStatus.FAILED,
            reason=reason,
            exit_code=self.returncode,
            error_bundle=stored,
            retryable=retryable,
        )


def _place_secrets(source: ObjectStore, dest: Path) -> None:
    try:
        place_secrets(source, dest)
    except (OSError, StorageError) as exc:
        raise SetupError(f"cannot place the secrets: {exc}") from exc


def _seconds(value: float | None) -> str:
    """`30s`, `1.5s`: a timeout as people write it."""
    value = value or 0.0
    return f"{int(value)}s" if float(value).is_integer() else f"{value}s"
