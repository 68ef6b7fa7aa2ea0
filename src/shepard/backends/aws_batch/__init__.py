"""AWS Batch: a flock's jobs run as children of Batch array jobs (docs/aws-batch.md).

- `config.py`: the `[backend.aws-batch]` section (`BatchConfig`);
- `api.py`: the Batch and CloudWatch Logs calls, paced by a token bucket, retried with jittered
  back-off when throttled, their errors turned into messages that say the fix;
- `assign.py`: what a child reads (its job, the flock's settings) and writes (its outcome) in
  the flock's `manifests` store: Batch tasks never open the catalog, the head records outcomes;
- `backend.py`: `BatchBackend`, the hooks of the array template (backends/arrays.py);
- `image.py`: the worker image `shepard deploy` derives from the flock's image;
- what a child runs is `shepard.batch_task`, a process entry point beside `shepard.task`.

Importing this package loads nothing else, so the flock configuration can read the section.
"""
