"""The Lambda functions of a serverless flock (docs/aws-functions.md): `scheduler` (the
events queue: dropped bundles, dispatch kicks), `reconciler` (on a schedule) and `api` (a
function URL). Each handler goes through the service layer only (Flock, the inbox, views)."""
