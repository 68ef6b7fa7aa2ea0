"""A scripted stand-in for Slurm's commands, at the subprocess boundary (a SlurmCtl Runner).

It keeps arrays and task states in memory and answers sbatch, squeue, scontrol and scancel the
way Slurm 22.05 does, closely enough for the backend's logic; tests move tasks between states
by hand. The real thing is exercised by the slurm test tier.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from shepard.backends.slurm.ctl import ALIVE, Result
from shepard.backends.slurm.spec import format_indexes, parse_indexes


@dataclass
class Array:
    id: str
    name: str
    comment: str
    options: list[str]
    script: str
    states: dict[int, str] = field(default_factory=dict)


class FakeSlurm:
    def __init__(self, *, max_array_size: int = 1001, max_job_count: int = 10000) -> None:
        self.max_array_size, self.max_job_count = max_array_size, max_job_count
        self.arrays: dict[str, Array] = {}
        self.calls: list[list[str]] = []
        self.sbatch_failures: list[Result] = []  # answers for the next sbatch calls
        self.squeue_failures: list[Result] = []  # answers for the next squeue calls
        self.submit_despite_failure = False  # a failing sbatch still creates its array
        self.other_jobs = 0  # jobs of other users, for MaxJobCount
        self._next_id = 100

    def __call__(self, args: Sequence[str], stdin: str | None = None) -> Result:
        self.calls.append(list(args))
        command = args[0]
        if command == "sbatch":
            return self._sbatch(list(args[1:]), stdin or "")
        if command == "squeue":
            return self._squeue(list(args[1:]))
        if command == "scancel":
            return self._scancel(list(args[1:]))
        if command == "scontrol" and args[1:3] == ["show", "config"]:
            return Result(
                0,
                f"MaxArraySize = {self.max_array_size}\nMaxJobCount = {self.max_job_count}\n",
                "",
            )
        if command == "scontrol" and args[1:4] == ["-o", "show", "job"]:
            return self._show(args[4])
        raise AssertionError(f"unexpected command {args}")

    # -- what tests look at and change -----------------------------------------------------

    def sbatches(self) -> list[list[str]]:
        return [c for c in self.calls if c[0] == "sbatch"]

    def set(self, array_id: str, index: int, state: str) -> None:
        self.arrays[array_id].states[index] = state

    def purge(self, array_id: str) -> None:
        """Forget an array, as slurmctld does MinJobAge seconds after it ended."""
        del self.arrays[array_id]

    def alive(self) -> dict[str, builtins.set[int]]:
        return {
            a.id: {i for i, s in a.states.items() if s in ALIVE}
            for a in self.arrays.values()
            if any(s in ALIVE for s in a.states.values())
        }

    # -- commands ---------------------------------------------------------------------------

    def _sbatch(self, options: list[str], script: str) -> Result:
        assert options[0] == "--parsable"
        created = None
        if not self.sbatch_failures or self.submit_despite_failure:
            created = self._create(options[1:], script)
        if self.sbatch_failures:
            return self.sbatch_failures.pop(0)
        assert created is not None
        return Result(0, f"{created.id}\n", "")

    def _create(self, options: list[str], script: str) -> Array:
        values = dict(o.split("=", 1) for o in options if o.startswith("--") and "=" in o)
        size = int(values["--array"].removeprefix("0-")) + 1
        assert size <= self.max_array_size, "the backend must respect MaxArraySize"
        array_id = str(self._next_id)
        self._next_id += 1
        array = Array(array_id, values["--job-name"], values.get("--comment", ""), options, script)
        array.states = dict.fromkeys(range(size), "PENDING")
        self.arrays[array_id] = array
        return array

    def _squeue(self, args: list[str]) -> Result:
        if self.squeue_failures:
            return self.squeue_failures.pop(0)
        ids = names = None
        if "-j" in args:
            ids = set(args[args.index("-j") + 1].split(","))
        if "-n" in args:
            names = set(args[args.index("-n") + 1].split(","))
        if ids is not None and not ids & set(self.arrays) and len(ids) == 1:
            return Result(1, "", "slurm_load_jobs error: Invalid job id specified\n")
        lines = []
        for array in self.arrays.values():
            if ids is not None and array.id not in ids:
                continue
            if names is not None and array.name not in names:
                continue
            pending = [i for i, s in array.states.items() if s == "PENDING"]
            if pending:  # compressed, as squeue prints an array's pending tasks
                lines.append(self._line(array, f"[{format_indexes(pending)}]", "PENDING"))
            for index, state in array.states.items():
                if state != "PENDING":
                    lines.append(self._line(array, str(index), state))
        lines += [f"{900 + n}|N/A|RUNNING|None|other|" for n in range(self.other_jobs)]
        return Result(0, "".join(f"{line}\n" for line in lines), "")

    @staticmethod
    def _line(array: Array, indexes: str, state: str) -> str:
        return f"{array.id}|{indexes.strip('[]')}|{state}|None|{array.name}|{array.comment}"

    def _scancel(self, targets: list[str]) -> Result:
        for target in targets:
            match = re.fullmatch(r"(\d+)(?:_\[?([^\]]+)\]?)?", target)
            assert match, target
            array = self.arrays.get(match.group(1))
            if array is None:
                continue
            chosen = parse_indexes(match.group(2)) if match.group(2) else set(array.states)
            for index in chosen & set(array.states):
                if array.states[index] in ALIVE:
                    array.states[index] = "CANCELLED"
        return Result(0, "", "")

    def _show(self, job: str) -> Result:
        array_id, _, index = job.partition("_")
        array = self.arrays.get(array_id)
        if array is None or (index and int(index) not in array.states):
            return Result(1, "", "slurm_load_jobs error: Invalid job id specified\n")
        state = array.states[int(index)] if index else next(iter(array.states.values()))
        output = next((o for o in array.options if o.startswith("--output=")), "=")
        stdout = output.split("=", 1)[1].replace("%a", index or "0")
        return Result(
            0, f"JobId={job} JobState={state} Reason=None ExitCode=0:0 StdOut={stdout}\n", ""
        )
