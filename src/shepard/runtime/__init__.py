"""The job runtime: runs one attempt of a claimed job under the runtime contract."""

from shepard.runtime.context import AttemptControl, RuntimeContext, log_key
from shepard.runtime.worker import run_attempt

__all__ = ["AttemptControl", "RuntimeContext", "log_key", "run_attempt"]
