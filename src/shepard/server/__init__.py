"""`shepard serve`: a flock over HTTP (the REST API, shepherd's routes, the dashboard).

Needs the `server` extra (FastAPI, uvicorn). Everything here is a thin layer over the
service layer (`Flock`), like the CLI.
"""
