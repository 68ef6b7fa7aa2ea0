"""Talking to Slurm through its commands: sbatch, squeue, scontrol, scancel.

Only what the Slurm backend needs, with the output parsed into plain records. Every call goes
through one `Runner` (subprocess by default), so tests can script Slurm's answers. No
accounting database is assumed: what Slurm knows about finished jobs comes from `squeue -t all`
and `scontrol show job`, which keep a job for `MinJobAge` seconds after it ends.
"""

from __future__ import annotations

import logging
import re
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from shepard.backends.arrays import SchedulerBusy, SchedulerError, SchedulerRefused
from shepard.backends.slurm.spec import parse_indexes

log = logging.getLogger(__name__)

COMMAND_TIMEOUT = 60.0  # seconds a Slurm command may take before it counts as busy
IDS_PER_CALL = 200  # job ids per squeue call

# Task states in which a task's worker may still act on the catalog.
ALIVE = frozenset(
    {
        "PENDING", "RUNNING", "SUSPENDED", "COMPLETING", "CONFIGURING", "RESIZING", "REQUEUED",
        "REQUEUE_FED", "REQUEUE_HOLD", "SPECIAL_EXIT", "SIGNALING", "STAGE_OUT", "STOPPED",
        "RESV_DEL_HOLD",
    }
)  # fmt: skip

# What sbatch says when the submission itself is wrong: retrying cannot help.
_REFUSALS = re.compile(
    r"invalid|not available|can ?not be satisfied|unrecognized option|unknown option"
    r"|not permitted|access denied|no partition specified|requires an argument",
    re.IGNORECASE,
)
_UNKNOWN_JOB = "Invalid job id specified"


COMMENT_PREFIX = "shepard:"  # sbatch --comment of our arrays: shepard:TOKEN


def comment(token: str) -> str:
    """The `--comment` of the array submitted as `token`."""
    return f"{COMMENT_PREFIX}{token}"


def token_of(comment_text: str) -> str | None:
    """The submission token in an array's `--comment`, if it is one of ours."""
    return (
        comment_text.removeprefix(COMMENT_PREFIX)
        if comment_text.startswith(COMMENT_PREFIX)
        else None
    )


class SlurmError(SchedulerError):
    """A Slurm command failed."""


class SlurmBusy(SlurmError, SchedulerBusy):
    """Slurm could not answer now (controller busy or unreachable, a timeout): try later."""


class SlurmRefused(SlurmError, SchedulerRefused):
    """Slurm refused a submission as configured (bad partition, option, size): fix the flock."""


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


Runner = Callable[[Sequence[str], str | None], Result]


def run_command(args: Sequence[str], stdin: str | None = None) -> Result:
    """Run one Slurm command; a missing command or a timeout raises SlurmError/SlurmBusy."""
    try:
        proc = subprocess.run(
            list(args), input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT
        )
    except FileNotFoundError:
        raise SlurmError(
            f"{args[0]} not found: the slurm backend runs where Slurm's commands are installed "
            "(a login or submit node) and on PATH"
        ) from None
    except subprocess.TimeoutExpired:
        raise SlurmBusy(f"{args[0]} did not answer within {COMMAND_TIMEOUT:g}s") from None
    return Result(proc.returncode, proc.stdout, proc.stderr)


@dataclass(frozen=True)
class Limits:
    """The cluster limits that shape submissions (from `scontrol show config`)."""

    max_array_size: int = 1001  # task indexes go up to MaxArraySize - 1
    max_array_tasks: int | None = None  # SchedulerParameters max_array_tasks, if set
    max_job_count: int = 10000  # jobs in the controller at once; each array task counts

    @property
    def tasks_per_array(self) -> int:
        """The most tasks one sbatch --array=0-(n-1) may ask for."""
        cap = self.max_array_size
        if self.max_array_tasks is not None:
            cap = min(cap, self.max_array_tasks)
        return max(1, cap)


def parse_config(text: str) -> Limits:
    """Limits from `scontrol show config` output (Slurm's defaults for what is missing)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    tasks = re.search(r"max_array_tasks=(\d+)", values.get("SchedulerParameters", ""))
    return Limits(
        max_array_size=_int(values.get("MaxArraySize"), 1001),
        max_array_tasks=int(tasks.group(1)) if tasks else None,
        max_job_count=_int(values.get("MaxJobCount"), 10000),
    )


def _int(text: str | None, default: int) -> int:
    match = re.match(r"\s*(\d+)", text or "")
    return int(match.group(1)) if match else default


@dataclass(frozen=True)
class TaskRecord:
    """One squeue line: one task, or a range of an array's pending tasks."""

    array_id: str
    indexes: frozenset[int]  # empty for a job that is not an array
    state: str
    reason: str = ""
    name: str = ""
    comment: str = ""

    @property
    def alive(self) -> bool:
        return self.state in ALIVE


_SQUEUE_FORMAT = "%F|%K|%T|%r|%j|%k"


def parse_squeue(text: str) -> list[TaskRecord]:
    """Records from `squeue -h -o '%F|%K|%T|%r|%j|%k'` (array id, indexes, state, reason,
    name, comment); malformed lines are skipped with a warning."""
    records = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split("|", 5)
        if len(fields) < 6:
            log.warning("ignoring an squeue line in an unexpected format: %r", line)
            continue
        array_id, expr, state, reason, name, comment = (f.strip() for f in fields)
        try:
            indexes = frozenset() if expr in ("N/A", "") else frozenset(parse_indexes(expr))
        except ValueError:
            log.warning("ignoring an squeue line with unreadable indexes: %r", line)
            continue
        records.append(TaskRecord(array_id, indexes, state, reason, name, comment))
    return records


@dataclass
class Snapshot:
    """What Slurm said about some arrays at one moment: alive and ended tasks."""

    records: list[TaskRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._by_task: dict[tuple[str, int], TaskRecord] = {}
        for record in self.records:
            for index in record.indexes:
                known = self._by_task.get((record.array_id, index))
                if known is None or (record.alive and not known.alive):
                    self._by_task[(record.array_id, index)] = record

    def task(self, array_id: str, index: int) -> TaskRecord | None:
        """The record of task `array_id`_`index`; None when Slurm does not know it (any more)."""
        return self._by_task.get((array_id, index))

    def alive(self, array_id: str, index: int) -> bool:
        record = self.task(array_id, index)
        return record is not None and record.alive

    def state(self, array_id: str, index: int) -> str | None:
        record = self.task(array_id, index)
        return None if record is None else record.state

    def arrays_of(self, token: str) -> set[str]:
        return self.with_comment(comment(token))

    def arrays(self) -> set[str]:
        return {r.array_id for r in self.records}

    def with_comment(self, comment: str) -> set[str]:
        """Ids of the arrays submitted with this `--comment`."""
        return {r.array_id for r in self.records if r.comment == comment}

    def tasks(self, *, states: Iterable[str]) -> dict[str, set[int]]:
        """Indexes of the tasks in `states`, per array id."""
        wanted = set(states)
        found: dict[str, set[int]] = {}
        for (array_id, index), record in self._by_task.items():
            if record.state in wanted:
                found.setdefault(array_id, set()).add(index)
        return found

    def count(self, *, alive: bool = True) -> int:
        return sum(1 for record in self._by_task.values() if record.alive == alive)


class SlurmCtl:
    """The Slurm commands, parsed. Raises SlurmBusy for what may pass and SlurmError (or
    SlurmRefused for sbatch) for what will not."""

    def __init__(self, run: Runner = run_command) -> None:
        self._run = run
        self._limits: Limits | None = None

    def limits(self) -> Limits:
        """The cluster's limits, read once from `scontrol show config`."""
        if self._limits is None:
            result = self._call(["scontrol", "show", "config"])
            self._limits = parse_config(result.out)
        return self._limits

    def sbatch(self, options: Sequence[str], script: str) -> str:
        """Submit `script` (read by sbatch from stdin) with `options`; return the job id."""
        result = self._run(["sbatch", "--parsable", *options], script)
        if result.code != 0:
            message = _message(result)
            if _REFUSALS.search(message):
                raise SlurmRefused(f"sbatch refused the submission: {message}")
            raise SlurmBusy(f"sbatch failed: {message}")
        job_id = result.out.strip().split(";", 1)[0]
        if not job_id.isdigit():
            raise SlurmBusy(f"sbatch printed no job id: {result.out.strip()!r}")
        return job_id

    def queue(self, *, job_ids: Sequence[str] = (), names: Sequence[str] = ()) -> Snapshot:
        """Every task (alive, or ended within MinJobAge) of `job_ids` and of jobs named `names`.

        Either filter may be empty; both empty means nothing is asked and nothing is returned.
        """
        records: list[TaskRecord] = []
        base = ["squeue", "-h", "-t", "all", "-o", _SQUEUE_FORMAT]
        ids = list(dict.fromkeys(job_ids))
        for start in range(0, len(ids), IDS_PER_CALL):
            chunk = ",".join(ids[start : start + IDS_PER_CALL])
            records += self._squeue([*base, "-j", chunk])
        if names:
            records += self._squeue([*base, "-n", ",".join(names)])
        return Snapshot(records)

    def job_count(self) -> int:
        """Jobs the controller holds now, every user's, each array task counted (as
        MaxJobCount counts them)."""
        records = self._squeue(["squeue", "-h", "-t", "all", "-o", _SQUEUE_FORMAT])
        return sum(max(1, len(r.indexes)) for r in records)

    def show_job(self, job: str) -> dict[str, str] | None:
        """`scontrol show job JOB` as a dict (JobState, Reason, ExitCode, ...); None when
        Slurm no longer knows the job."""
        result = self._run(["scontrol", "-o", "show", "job", job], None)
        if result.code != 0:
            if _UNKNOWN_JOB in result.err:
                return None
            raise SlurmBusy(f"scontrol show job {job} failed: {_message(result)}")
        line = result.out.strip().splitlines()[0] if result.out.strip() else ""
        return dict(re.findall(r"(\w[\w/:]*)=(\S*)", line))

    def scancel(self, targets: Sequence[str]) -> None:
        """Cancel jobs or tasks (`123`, `123_4`, `123_[1-3,7]`); unknown ones are ignored."""
        for start in range(0, len(targets), IDS_PER_CALL):
            chunk = list(targets[start : start + IDS_PER_CALL])
            result = self._run(["scancel", *chunk], None)
            if result.code != 0 and not _only_unknown(result.err):
                raise SlurmBusy(f"scancel failed: {_message(result)}")

    def _squeue(self, args: list[str]) -> list[TaskRecord]:
        result = self._run(args, None)
        if result.code != 0:
            if _UNKNOWN_JOB in result.err:  # all of the asked ids are gone
                return []
            raise SlurmBusy(f"squeue failed: {_message(result)}")
        return parse_squeue(result.out)

    def _call(self, args: list[str]) -> Result:
        result = self._run(args, None)
        if result.code != 0:
            raise SlurmBusy(f"{' '.join(args)} failed: {_message(result)}")
        return result


def _message(result: Result) -> str:
    lines = [
        line.removeprefix("sbatch: error: ").strip()
        for line in (result.err or result.out).splitlines()
        if line.strip()
    ]
    return "; ".join(lines) or f"exit status {result.code}"


def _only_unknown(err: str) -> bool:
    lines = [line for line in err.splitlines() if line.strip()]
    return bool(lines) and all(
        "Invalid job id" in line or "already completing or completed" in line for line in lines
    )
