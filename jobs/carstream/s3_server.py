"""An S3-compatible server on this machine: Versity S3 Gateway (versitygw), posix backend.

What `carstream run --storage s3` starts next to its embedded broker, and what the tests use
as "S3": objects are plain files under the data folder (`<data>/<bucket>/<key>`), one port on
loopback, strict like AWS where storage bugs live (signature region, credentials, bucket
policies, NoSuchBucket, no leftover folders). docs/storage.md says why this server.

The root credentials are drawn for each server unless given; `credentials()` hands them to
clients as the standard AWS environment variables, the only way carstream takes S3 credentials.
"""

from __future__ import annotations

import atexit
import http.client
import os
import secrets
import subprocess
import time
from pathlib import Path
from types import TracebackType

from carstream import toolchain
from carstream.broker import death_signal_setter, free_port, log_tail, stop_process
from carstream.config import S3Settings

REGION = "us-east-1"
START_TIMEOUT_SECONDS = 20.0
STOP_TIMEOUT_SECONDS = 10.0


class S3ServerError(RuntimeError):
    """The server did not start, or an admin command failed."""


class S3Server:
    """One versitygw process serving `data_dir` at http://127.0.0.1:<port>.

    With `users=True` it keeps IAM accounts in `<data_dir>/../<name>-iam` and
    `create_user` adds accounts that see only what bucket policies grant them.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int = 0,
        users: bool = False,
        access_key: str | None = None,
        secret_key: str | None = None,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.host = "127.0.0.1"
        self._requested_port = port
        self.port: int | None = None
        self.iam_dir = self.data_dir.with_name(f"{self.data_dir.name}-iam") if users else None
        self.log_file = self.data_dir.with_name(f"{self.data_dir.name}.log")
        self.access_key = access_key or "carstream-" + secrets.token_hex(6)
        self.secret_key = secret_key or secrets.token_urlsafe(24)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        assert self.port is not None, "the server is not started"
        return f"http://{self.host}:{self.port}"

    @property
    def settings(self) -> S3Settings:
        return S3Settings(endpoint=self.endpoint, region=REGION)

    def credentials(self) -> dict[str, str]:
        """The root account as the AWS SDKs' environment variables."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> S3Server:
        if self._process is not None:
            raise S3ServerError("the S3 server is already started")
        binary = toolchain.binary("versitygw")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self._requested_port or free_port(self.host)
        command = [str(binary), "--port", f"{self.host}:{self.port}", "--region", REGION, "--quiet"]
        if self.iam_dir is not None:
            self.iam_dir.mkdir(parents=True, exist_ok=True)
            command += ["--iam-dir", str(self.iam_dir)]
        command += ["posix", str(self.data_dir)]
        # The root keys go through the environment, never the command line (which every
        # process of the machine may read).
        environment = {
            **os.environ,
            "ROOT_ACCESS_KEY_ID": self.access_key,
            "ROOT_SECRET_ACCESS_KEY": self.secret_key,
        }
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=death_signal_setter(),
            )
        atexit.register(self.stop)
        self._wait_until_ready()
        return self

    def stop(self) -> None:
        atexit.unregister(self.stop)
        process, self._process = self._process, None
        if process is not None:
            stop_process(process, STOP_TIMEOUT_SECONDS)

    def create_user(self, access_key: str, secret_key: str, role: str = "user") -> None:
        """An IAM account (role user: no bucket of its own, only what policies grant; userplus:
        may create buckets). Needs `users=True`. `versitygw admin` takes the account's secret
        as an argument, visible to the machine's processes: for test accounts only."""
        if self.iam_dir is None:
            raise S3ServerError("start the server with users=True to create users")
        command = [
            str(toolchain.binary("versitygw")),
            "admin",
            "--endpoint-url",
            self.endpoint,
            "create-user",
            "--access",
            access_key,
            "--secret",
            secret_key,
            "--role",
            role,
        ]
        environment = {
            **os.environ,
            "ADMIN_ACCESS_KEY_ID": self.access_key,
            "ADMIN_SECRET_ACCESS_KEY": self.secret_key,
        }
        result = subprocess.run(command, env=environment, capture_output=True, text=True)
        if result.returncode != 0:
            raise S3ServerError(f"creating user {access_key} failed: {result.stderr.strip()}")

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if not self.is_running():
                raise S3ServerError(
                    f"the S3 server exited during start-up; end of {self.log_file}:\n"
                    f"{log_tail(self.log_file)}"
                )
            if self._answers():
                return
            time.sleep(0.05)
        self.stop()
        raise S3ServerError(
            f"the S3 server did not answer within {START_TIMEOUT_SECONDS:.0f} s; end of "
            f"{self.log_file}:\n{log_tail(self.log_file)}"
        )

    def _answers(self) -> bool:
        """Any HTTP answer (an anonymous request gets 403) means it serves."""
        assert self.port is not None
        connection = http.client.HTTPConnection(self.host, self.port, timeout=1)
        try:
            connection.request("GET", "/")
            connection.getresponse().read()
        except OSError:
            return False
        finally:
            connection.close()
        return True
