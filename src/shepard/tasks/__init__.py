"""Cloudburst's tasks.json pipelines, run by the `tasks` payload kind (docs/tasks.md).

- `document`: read, check against the shipped schema (`tasks.schema.json`), substitute;
- `runner`: phases, modes, the error flow and the exit codes;
- `commands` (tasks steps), `files` (move), `transfer` (fetch and store, S3), `sevenzip`;
- `__main__`: `python -m shepard.tasks DOCUMENT`, the process a tasks job runs.

Nothing here is imported by the plain CLI until a tasks document is checked or run; the heavy
parts (jsonschema, boto3, py7zr) are imported on first use.
"""
