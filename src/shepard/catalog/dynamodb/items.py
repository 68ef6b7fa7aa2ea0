"""Jobs as DynamoDB items and back, and the update that writes a state-machine Change.

Items are built in DynamoDB's typed JSON by hand (no boto3 serializer): a million-job
submission spends its time here. Numbers are written with `repr`, which round-trips floats
exactly. Index keys live in attributes of their own (`gb`, `gbs`, `gu`, `gp`) prefixed so
they are never empty strings, which an index key may not be.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from shepard.catalog.states import Change, Facts
from shepard.model import Job, JobEvent, JobSpec, JobStatus

INTS = frozenset({"seq", "attempt", "max_attempts", "started_at", "exit_code", "lost", "ver"})
FLOATS = frozenset({"timeout", "submitted_at", "not_before", "finished_at", "lease_until"})
SEQ_WIDTH = 20

_to_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def job_key(job_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"j#{job_id}"}}


def seq_text(seq: int) -> str:
    return f"{seq:0{SEQ_WIDTH}d}"


def batch_sort(status: str, seq: int) -> str:
    """The `by_batch` sort key: the status first, so one status of a batch is one range."""
    return f"{status}#{seq_text(seq)}"


def value(name: str, v: Any) -> dict[str, Any]:
    """The typed value of attribute `name` (None is never stored: it is removed)."""
    if name in INTS:
        return {"N": str(int(v))}
    if name in FLOATS:
        return {"N": repr(float(v))}
    if name == "outputs":
        return {"S": _to_json(list(v))}
    return {"S": str(v)}


def new_job(
    job_id: str,
    seq: int,
    spec: JobSpec,
    *,
    now: float,
    default_attempts: int,
    batch: str | None,
    sub: str,
) -> dict[str, Any]:
    """The item of a new QUEUED job, written by submission `sub`."""
    params = spec.params if isinstance(spec.params, dict) else dict(spec.params)
    attempts = default_attempts if spec.max_attempts is None else spec.max_attempts
    seq_n = {"N": str(seq)}
    item: dict[str, Any] = {
        "pk": {"S": f"j#{job_id}"}, "kind": {"S": "job"}, "id": {"S": job_id}, "seq": seq_n,
        "status": {"S": "queued"}, "params": {"S": _to_json(params)},
        "attempt": {"N": "0"}, "max_attempts": {"N": str(attempts)},
        "submitted_at": {"N": repr(float(now))}, "lost": {"N": "0"}, "ver": {"N": "0"},
        "sub": {"S": sub},
    }  # fmt: skip
    if spec.bundle_key is not None:
        item["bundle_key"] = {"S": spec.bundle_key}
        item["gu"] = {"S": f"u#{spec.bundle_key}"}
    if spec.timeout is not None:
        item["timeout"] = {"N": repr(float(spec.timeout))}
    label = spec.batch if batch is None else batch
    if label is not None:
        item["batch"] = {"S": label}
        item["gb"] = {"S": f"b#{label}"}
        item["gbs"] = {"S": batch_sort("queued", seq)}
    return item


def plain(item: Mapping[str, Any]) -> dict[str, Any]:
    """A job item's attributes as Python values (ints, floats, strings; `ev` as a list)."""
    out: dict[str, Any] = {}
    for name, typed in item.items():
        if "S" in typed:
            out[name] = typed["S"]
        elif "N" in typed:
            out[name] = int(typed["N"]) if name in INTS else float(typed["N"])
        elif "L" in typed:
            out[name] = typed["L"]
    return out


def to_job(row: Mapping[str, Any]) -> Job:
    """The Job of a plain row (see `plain`)."""
    outputs = row.get("outputs")
    return Job(
        id=row["id"],
        seq=row["seq"],
        status=JobStatus(row["status"]),
        params=json.loads(row["params"]),
        bundle_key=row.get("bundle_key"),
        attempt=row["attempt"],
        max_attempts=row["max_attempts"],
        timeout=row.get("timeout"),
        batch=row.get("batch"),
        submitted_at=row["submitted_at"],
        not_before=row.get("not_before"),
        started_at=row.get("started_at"),
        finished_at=row.get("finished_at"),
        lease_until=row.get("lease_until"),
        worker=row.get("worker"),
        reason=row.get("reason"),
        exit_code=row.get("exit_code"),
        outputs=tuple(json.loads(outputs)) if outputs else (),
        error_bundle=row.get("error_bundle"),
        placement=row.get("placement"),
    )


def to_facts(row: Mapping[str, Any]) -> Facts:
    return Facts(
        JobStatus(row["status"]),
        row["attempt"],
        row["max_attempts"],
        row.get("lost", 0),
        row.get("placement"),
        row.get("started_at"),
    )


def to_events(row: Mapping[str, Any]) -> list[JobEvent]:
    """The job's history: the QUEUED entry of its submission, then each stored entry."""
    job_id = row["id"]
    events = [JobEvent(job_id, 0, JobStatus.QUEUED, row["submitted_at"])]
    for entry in row.get("ev", []):
        attempt, status, at, detail = entry["L"]
        events.append(
            JobEvent(
                job_id,
                int(attempt["N"]),
                JobStatus(status["S"]),
                float(at["N"]),
                detail.get("S"),
            )
        )
    return events


def changed(row: Mapping[str, Any], change: Change) -> dict[str, Any]:
    """`row` as `change` leaves it."""
    after = dict(row)
    after["status"] = change.status.value
    for name, v in change.fields.items():
        if v is None:
            after.pop(name, None)
        elif name == "outputs":
            after[name] = _to_json(list(v))
        else:
            after[name] = v
    after["ver"] = row.get("ver", 0) + 1
    return after


def update(
    row: Mapping[str, Any],
    change: Change,
    *,
    now: float,
    record: bool = True,
    token: str | None = None,
) -> dict[str, Any]:
    """The UpdateItem (as a TransactWriteItems `Update`, without TableName) writing `change`
    to the job of `row`, appending its history entry (`record`) and bumping `ver`.

    The write is conditioned on `token`, the reservation this writer holds on the job (see
    `reserve`), which it removes; without one, on the job being unchanged since `row` was
    read and not reserved by anyone (`ver`)."""
    names: dict[str, str] = {"#ver": "ver"}
    values: dict[str, Any] = {":one": {"N": "1"}}
    sets: list[str] = []
    removes: list[str] = []
    fields: dict[str, Any] = {"status": change.status.value, **change.fields}
    if row.get("batch") is not None:
        fields["gbs"] = batch_sort(change.status.value, row["seq"])
    if "placement" in change.fields:
        placement = change.fields["placement"]
        fields["gp"] = None if placement is None else f"p#{placement}"
    for i, (name, v) in enumerate(fields.items()):
        names[f"#f{i}"] = name
        if v is None:
            removes.append(f"#f{i}")
        else:
            values[f":f{i}"] = value(name, v)
            sets.append(f"#f{i} = :f{i}")
    if record:
        attempt = change.fields.get("attempt", row["attempt"])
        detail = {"NULL": True} if change.detail is None else {"S": change.detail}
        entry = {"L": [{"N": str(attempt)}, {"S": change.status.value}, {"N": repr(now)}, detail]}
        names["#ev"] = "ev"
        values[":ev"] = {"L": [entry]}
        values[":nil"] = {"L": []}
        sets.append("#ev = list_append(if_not_exists(#ev, :nil), :ev)")
    names["#tx"], names["#txat"] = "tx", "tx_at"
    if token is not None:
        removes += ["#tx", "#txat"]
        values[":tok"] = {"S": token}
        check = "#tx = :tok"
    else:
        values[":ver0"] = {"N": str(row.get("ver", 0))}
        check = "#ver = :ver0 AND attribute_not_exists(#tx)"
        del names["#txat"]
    expression = "SET " + ", ".join(sets)
    if removes:
        expression += " REMOVE " + ", ".join(removes)
    expression += " ADD #ver :one"
    return {
        "Key": job_key(row["id"]),
        "UpdateExpression": expression,
        "ConditionExpression": check,
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
    }


def reserve(row: Mapping[str, Any], token: str, *, clock: float, stale: float) -> dict[str, Any]:
    """The UpdateItem reserving the job of `row` for one transaction: it succeeds only if
    the job is unchanged since `row` was read and nobody else holds it (a reservation
    older than `stale` seconds is taken over: its holder died)."""
    return {
        "Key": job_key(row["id"]),
        "UpdateExpression": "SET #tx = :tok, #txat = :clock",
        "ConditionExpression": "#ver = :ver0 AND (attribute_not_exists(#tx) OR #txat < :old)",
        "ExpressionAttributeNames": {"#tx": "tx", "#txat": "tx_at", "#ver": "ver"},
        "ExpressionAttributeValues": {
            ":tok": {"S": token},
            ":clock": {"N": repr(clock)},
            ":old": {"N": repr(clock - stale)},
            ":ver0": {"N": str(row.get("ver", 0))},
        },
    }


def counter_update(
    shard: int, deltas: Mapping[str, int], *, ended_hour: int | None = None
) -> dict[str, Any] | None:
    """ADD the status `deltas` to counter shard `shard` (None when they are all zero), noting
    `ended_hour` as the hour of the shard's latest ended attempt when given."""
    deltas = {s: d for s, d in deltas.items() if d}
    if not deltas:
        return None
    names = {f"#c{i}": s for i, s in enumerate(deltas)}
    values = {f":c{i}": {"N": str(d)} for i, d in enumerate(deltas.values())}
    expression = "ADD " + ", ".join(f"#c{i} :c{i}" for i in range(len(deltas)))
    if ended_hour is not None:
        names["#h"], values[":h"] = "ended_hour", {"N": str(ended_hour)}
        expression += " SET #h = :h"
    return {
        "Key": {"pk": {"S": f"c#{shard}"}},
        "UpdateExpression": expression,
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
    }


ENDED = {JobStatus.SUCCEEDED.value: "s", JobStatus.FAILED.value: "f"}
"""The statuses of ended attempts that `Catalog.ended_per_minute` counts, and the letter
of their per-minute attributes in an hour's item."""


def hour_key(hour: int, shard: int) -> dict[str, Any]:
    """The item counting the attempts ended in `hour` (hours since the epoch), one shard."""
    return {"pk": {"S": f"e#{hour}#{shard}"}}


def ended_update(shard: int, at: float, ended: Mapping[str, int]) -> dict[str, Any] | None:
    """ADD `ended` (status -> attempts ended at `at`) to the minute of `at` in its hour's item
    (attributes `s07`, `f07`: succeeded and failed in minute 7 of the hour)."""
    minute = int(at // 60)
    hour, of_hour = divmod(minute, 60)
    counted = {ENDED[s]: n for s, n in ended.items() if s in ENDED and n}
    if not counted:
        return None
    return {
        "Key": hour_key(hour, shard),
        "UpdateExpression": "ADD " + ", ".join(f"#{c} :{c}" for c in counted),
        "ExpressionAttributeNames": {f"#{c}": f"{c}{of_hour:02d}" for c in counted},
        "ExpressionAttributeValues": {f":{c}": {"N": str(n)} for c, n in counted.items()},
    }


def _param_text(v: Any) -> str:
    """A parameter's value as a payload sees it (booleans as true/false), lower-cased."""
    return (("true" if v else "false") if isinstance(v, bool) else str(v)).lower()


def param_matches(row: Mapping[str, Any], key: str, wanted: str) -> bool:
    """The parameter filter of `Catalog.page`: a parameter named `key` (any case) whose text
    equals `wanted` (any case)."""
    key, wanted = key.upper(), wanted.lower()
    return any(
        k.upper() == key and _param_text(v) == wanted for k, v in json.loads(row["params"]).items()
    )


def tag_matches(row: Mapping[str, Any], tag: str) -> bool:
    """The tag filter of `Catalog.page`: a parameter named TAG (see `param_matches`)."""
    return param_matches(row, "TAG", tag)


def text_in(row: Mapping[str, Any], text: str) -> bool:
    """The text filter of `Catalog.page`: `text` anywhere in the parameters as stored (their
    JSON text), in any case."""
    return text.lower() in row["params"].lower()


def ids_of(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    return [r["id"] for r in sorted(rows, key=lambda r: r["seq"])]
