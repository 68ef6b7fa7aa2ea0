#!/usr/bin/env python3
"""Entry point of the emulator's Lambda runtime image (scripts/services-aws builds it).

moto's Lambda runs `<image> <handler> <event as JSON>` with the function's code mounted at
/var/task (layers at /opt) and takes the LAST line the container prints as the function's
answer; a non-zero exit status makes the invocation a function error. So this script imports
the handler, calls it with the event and a context shaped like Lambda's, keeps everything
the handler prints on stderr (the function's log) and prints the answer, as one JSON line,
last on stdout.
"""

import importlib
import json
import os
import sys
import time
import traceback
import uuid


def fix_environment() -> None:
    # moto points functions at host.docker.internal, which Podman 4.3 does not resolve
    # (it writes a literal "host-gateway" line into /etc/hosts); its own name for the host
    # works. moto sets AWS_REGION only, while boto3 reads AWS_DEFAULT_REGION.
    for name in ("AWS_ENDPOINT_URL", "MOTO_HTTP_ENDPOINT"):
        value = os.environ.get(name, "")
        if "host.docker.internal" in value:
            os.environ[name] = value.replace("host.docker.internal", "host.containers.internal")
    region = os.environ.get("AWS_REGION") or "us-east-1"
    os.environ.setdefault("AWS_REGION", region)
    os.environ.setdefault("AWS_DEFAULT_REGION", region)


class Context:
    """The attributes and method of Lambda's context object that handlers use."""

    def __init__(self) -> None:
        env = os.environ
        self.function_name = env.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = env.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        self.log_group_name = env.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = env.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.aws_request_id = str(uuid.uuid4())
        self.invoked_function_arn = env.get("AWS_LAMBDA_FUNCTION_ARN", self.function_name)
        timeout = float(env.get("AWS_LAMBDA_FUNCTION_TIMEOUT") or 3)
        self._deadline = time.monotonic() + timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def main() -> int:
    fix_environment()
    handler_name = sys.argv[1]
    event = json.loads(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2] else {}
    sys.path[:0] = ["/var/task", "/opt/python"]
    answer_to = sys.stdout
    sys.stdout = sys.stderr  # what the handler prints is its log, not its answer
    module_name, _, function_name = handler_name.rpartition(".")
    try:
        handler = getattr(importlib.import_module(module_name), function_name)
        result = handler(event, Context())
        line, status = json.dumps(result), 0
    except Exception as exc:
        traceback.print_exc()
        error = {"errorMessage": str(exc), "errorType": type(exc).__name__}
        line, status = json.dumps(error), 1
    sys.stderr.flush()
    answer_to.write(line + "\n")
    answer_to.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
