"""Slurm's notations and command outputs, parsed: sizes, time limits, array indexes,
`scontrol show config`, `squeue`, Slurm task identities, the [backend.slurm] section."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shepard import config
from shepard.backends import arraytasks
from shepard.backends.arrays import Pacer
from shepard.backends.slurm.backend import ARRAY_TASK, SHEEP_TASK, slurm_identity
from shepard.backends.slurm.config import SlurmConfig
from shepard.backends.slurm.ctl import Limits, comment, parse_config, parse_squeue, token_of
from shepard.backends.slurm.spec import (
    format_indexes,
    memory_megabytes,
    parse_indexes,
    slurm_time,
    time_seconds,
)
from shepard.errors import ConfigError

# -- sizes and time limits -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "mb"),
    [("2048", 2048), (512, 512), ("512M", 512), ("2G", 2048), ("2g", 2048), ("1T", 1 << 20),
     ("4096K", 4)],
)  # fmt: skip
def test_memory_sizes(text: str | int, mb: int) -> None:
    assert memory_megabytes(text) == mb


@pytest.mark.parametrize("text", ["", "2X", "-5", "0", "1.5G", "G"])
def test_bad_memory_sizes_say_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match=r"512M, 2G"):
        memory_megabytes(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 1800),
        (30, 1800),
        ("10:30", 630),
        ("1:00:00", 3600),
        ("2-00", 2 * 86400),
        ("1-12", 86400 + 12 * 3600),
        ("1-12:30", 86400 + 12 * 3600 + 1800),
        ("1-00:00:05", 86405),
    ],
)
def test_time_limits(text: str | int, seconds: int) -> None:
    assert time_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "UNLIMITED", "1:2:3:4", "a:b", "0", "-1", "1--2"])
def test_bad_time_limits_name_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError):
        time_seconds(text)


@given(st.integers(min_value=1, max_value=400 * 86400))
def test_slurm_time_round_trips(seconds: int) -> None:
    assert time_seconds(slurm_time(seconds)) == seconds


# -- array indexes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "indexes"),
    [
        ("7", {7}),
        ("2-5", {2, 3, 4, 5}),
        ("[0-2,8]", {0, 1, 2, 8}),
        ("0-9%2", set(range(10))),
        ("1-7:3", {1, 4, 7}),
    ],
)
def test_index_expressions_as_squeue_prints_them(text: str, indexes: set[int]) -> None:
    assert parse_indexes(text) == indexes


@pytest.mark.parametrize("text", ["", "a", "5-2", "[]", "1-3:0"])
def test_unreadable_index_expressions_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_indexes(text)


@given(st.sets(st.integers(min_value=0, max_value=5000), min_size=1, max_size=200))
def test_index_expressions_round_trip(indexes: set[int]) -> None:
    text = format_indexes(indexes)
    assert parse_indexes(text) == indexes
    assert len(text.split(",")) <= len(indexes)


def test_index_expressions_are_compact() -> None:
    assert format_indexes([5, 0, 1, 2, 3, 9, 11, 12]) == "0-3,5,9,11-12"


# -- scontrol show config, squeue --------------------------------------------------------------

CONFIG = """Configuration data as of 2026-11-22T05:45:00
AccountingStorageType   = accounting_storage/none
MaxArraySize            = 10001
MaxJobCount             = 200000
MinJobAge               = 300 sec
SchedulerParameters     = batch_sched_delay=0,max_array_tasks=2500,sched_interval=5
"""


def test_limits_from_scontrol_show_config() -> None:
    limits = parse_config(CONFIG)
    assert limits == Limits(max_array_size=10001, max_array_tasks=2500, max_job_count=200000)
    assert limits.tasks_per_array == 2500
    assert parse_config("MaxArraySize = 10001\n").tasks_per_array == 10001


def test_slurm_defaults_fill_in_what_the_config_omits() -> None:
    assert parse_config("") == Limits(max_array_size=1001, max_job_count=10000)


def test_squeue_lines_become_task_records() -> None:
    text = (
        "211|2-5|PENDING|Resources|shepard-a-1|shepard:tok\n"
        "211|0|RUNNING|None|shepard-a-1|shepard:tok\n"
        "211|1|CANCELLED|None|shepard-a-1|shepard:tok\n"
        "300|N/A|RUNNING|None|other|\n"
        "garbage\n"
        "212|x-y|PENDING|None|n|c\n"
    )
    records = parse_squeue(text)
    assert [(r.array_id, sorted(r.indexes), r.state) for r in records] == [
        ("211", [2, 3, 4, 5], "PENDING"),
        ("211", [0], "RUNNING"),
        ("211", [1], "CANCELLED"),
        ("300", [], "RUNNING"),
    ]
    from shepard.backends.slurm.ctl import Snapshot

    snapshot = Snapshot(records)
    assert snapshot.alive("211", 3) and snapshot.alive("211", 0)
    assert not snapshot.alive("211", 1) and snapshot.task("211", 1) is not None
    assert snapshot.task("211", 9) is None
    assert snapshot.with_comment("shepard:tok") == {"211"}
    assert snapshot.tasks(states=["PENDING"]) == {"211": {2, 3, 4, 5}}
    assert snapshot.count(alive=True) == 5


def test_pacer_spaces_calls_and_backs_off_on_failures() -> None:
    pacer = Pacer(2.0, cap=8.0)
    assert pacer.ready(0.0)
    pacer.sent(0.0)
    assert not pacer.ready(0.4) and pacer.ready(0.5)
    delays = [pacer.failed(10.0) for _ in range(6)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert not pacer.ready(17.9) and pacer.ready(18.0)
    pacer.succeeded()
    assert pacer.failed(20.0) == 1.0


# -- tokens, worker ids ------------------------------------------------------------------------


def test_tokens_ride_in_the_arrays_comment() -> None:
    token = arraytasks.new_token(1_795_000_000.0)
    assert token_of(comment(token)) == token
    assert token_of("someone else's comment") is None


def test_worker_ids_name_their_slurm_task() -> None:
    env = {"SLURM_ARRAY_JOB_ID": "225", "SLURM_ARRAY_TASK_ID": "7"}
    kinds = {ARRAY_TASK, SHEEP_TASK}
    worker = arraytasks.task_worker_id(SHEEP_TASK, slurm_identity(env))
    assert worker.endswith(" slurm-sheep 225_7")
    assert arraytasks.task_of(worker, kinds) == arraytasks.TaskRef(SHEEP_TASK, "225", 7)
    assert arraytasks.task_of(
        arraytasks.task_worker_id(ARRAY_TASK, slurm_identity(env)), kinds
    ) == arraytasks.TaskRef(ARRAY_TASK, "225", 7)
    assert slurm_identity({}) is None and slurm_identity({"SLURM_ARRAY_JOB_ID": "x"}) is None
    assert arraytasks.task_of(arraytasks.task_worker_id(ARRAY_TASK, None), kinds) is None
    assert arraytasks.task_of("vm:1234", kinds) is None and arraytasks.task_of(None, kinds) is None


# -- [backend.slurm] ---------------------------------------------------------------------------


def test_a_slurm_section_is_validated_and_normalised() -> None:
    cfg = config.parse(
        {
            "name": "f",
            "backend": {
                "kind": "slurm",
                "slurm": {"memory": "2g", "time": 90, "partition": "short", "mode": "sheep"},
            },
        }
    )
    slurm = cfg.backend.section()
    assert isinstance(slurm, SlurmConfig)
    assert (slurm.memory, slurm.time, slurm.mode, slurm.partition) == ("2G", "90", "sheep", "short")


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"memory": "lots"}, "backend.slurm.memory: .*512M, 2G"),
        ({"time": "soon"}, "backend.slurm.time: .*Slurm time limit"),
        ({"sheep_time": "0"}, "backend.slurm.sheep_time"),
        ({"mode": "pilot"}, "backend.slurm.mode"),
        ({"sbatch_options": ["--array=0-3"]}, "--array is set by shepard itself"),
        ({"sbatch_options": ["qos=short"]}, "is not an sbatch option"),
        ({"partitoin": "x"}, "unknown key 'backend.slurm.partitoin'"),
        ({"submit_rate": 0}, "backend.slurm.submit_rate"),
    ],
)
def test_bad_slurm_settings_are_refused_by_name(section: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.parse({"name": "f", "backend": {"kind": "slurm", "slurm": section}})
