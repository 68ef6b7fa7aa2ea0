"""boto3 clients for the commands that manage a deployed flock (`shepard aws ...`).

The endpoint and credentials come from boto3's usual chain (AWS_ENDPOINT_URL, AWS_PROFILE...),
so the same commands reach AWS or an emulator. An AWS error a user can act on (no
credentials, no such stack, access denied, an unreachable endpoint) becomes an AwsError: one
line, exit code 2, no traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from shepard.errors import ShepardError

READ_TIMEOUT_S = 900


class AwsError(ShepardError):
    """AWS refused or could not be reached; the message says what was being done."""


class Aws:
    """Clients of one region, made on first use and kept (boto3 is imported here only)."""

    def __init__(self, region: str) -> None:
        self.region = region
        self._clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        if service not in self._clients:
            import boto3
            from botocore.config import Config

            if not self._clients:
                self._session = boto3.session.Session()
            # an emulator answers SendMessage and Invoke once the function they trigger has
            # run (minutes on a busy machine); AWS answers at once either way
            config = Config(read_timeout=READ_TIMEOUT_S, retries={"mode": "standard"})
            self._clients[service] = self._session.client(
                service, region_name=self.region, config=config
            )
        return self._clients[service]


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError ('' for anything else)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))


@contextmanager
def aws_errors(doing: str) -> Iterator[None]:
    """Turn botocore's errors raised in the block into an AwsError saying `doing`."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        yield
    except NoCredentialsError:
        raise AwsError(
            f"cannot {doing}: no AWS credentials (set AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY)"
        ) from None
    except ClientError as exc:
        raise AwsError(f"cannot {doing}: {exc}") from None
    except BotoCoreError as exc:
        raise AwsError(f"cannot {doing}: {exc}") from None
