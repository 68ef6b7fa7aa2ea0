"""The job runtime: runs one attempt of a claimed job under the runtime contract.

`run_attempt` (runtime/worker.py, with the output, secrets and log machinery behind it) is
imported on first use: commands that only look at a flock (`query`, `show`, `submit`) never
load it, while backends import it before they fork their runners.
"""

from typing import TYPE_CHECKING, Any

from shepard.runtime.context import AttemptControl, RuntimeContext, log_key

if TYPE_CHECKING:
    from shepard.runtime.worker import run_attempt

__all__ = ["AttemptControl", "RuntimeContext", "log_key", "run_attempt"]


def __getattr__(name: str) -> Any:
    if name == "run_attempt":
        from shepard.runtime.worker import run_attempt

        return run_attempt
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
