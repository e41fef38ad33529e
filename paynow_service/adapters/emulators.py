"""The local Pub/Sub and Firestore emulators, run from the installed gcloud SDK.

Used by `paynow-service dev` and by the test fixtures. Each emulator is a Java process
started directly (faster than through gcloud, and we hold its PID), bound to loopback,
ready only once a real call succeeds. Pause/resume (SIGSTOP/SIGCONT) simulates an
outage without losing the emulator's in-memory state.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from paynow_service.domain.errors import EmulatorError as EmulatorError

HOST = "127.0.0.1"
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A currently free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def sdk_root() -> Path | None:
    """The gcloud SDK's root, or None where gcloud is not installed."""
    gcloud = shutil.which("gcloud")
    if not gcloud:
        return None
    out = subprocess.run(
        [gcloud, "info", "--format=value(installation.sdk_root)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    root = Path(out.stdout.strip())
    return root if out.returncode == 0 and root.is_dir() else None


def _die_with_parent() -> None:
    # Linux: the emulator gets SIGTERM if the process that started it dies, even by
    # SIGKILL, so no Java process outlives `dev` or a crashed test run.
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _all_threads_stopped(pid: int) -> bool:
    """Every thread of `pid` is stopped (`T`) according to /proc (True where there is no /proc)."""
    tasks = Path(f"/proc/{pid}/task")
    if not tasks.is_dir():
        return True
    for stat in tasks.glob("*/stat"):
        with contextlib.suppress(OSError):
            if stat.read_text().rsplit(")", 1)[1].split()[0] not in ("T", "t", "Z", "X"):
                return False
    return True


@dataclass
class Emulator:
    """One running emulator process."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    project: str
    paused: bool = field(default=False)

    @property
    def host_port(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def pause(self, timeout: float = 5) -> None:
        """SIGSTOP the emulator's process group: connections hang, state is kept. Returns once every
        thread of the JVM is stopped, so that no call made after it can still be answered."""
        os.killpg(self.pid, signal.SIGSTOP)
        self.paused = True
        deadline = time.monotonic() + timeout
        while not _all_threads_stopped(self.pid):
            if time.monotonic() > deadline:
                raise EmulatorError(f"the {self.name} emulator did not stop within {timeout:g} s")
            time.sleep(0.01)

    def resume(self) -> None:
        """SIGCONT a paused emulator."""
        os.killpg(self.pid, signal.SIGCONT)
        self.paused = False

    def stop(self, timeout: float = 10) -> None:
        """Stop the process group by PID, resuming it first so it can exit."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGCONT)
            os.killpg(self.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.process.wait(5)

    def reset_firestore(self) -> None:
        """Delete every document (Firestore emulator only)."""
        url = f"http://{self.host_port}/emulator/v1/projects/{self.project}/databases/(default)/documents"
        request = urllib.request.Request(url, method="DELETE")
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback URL)
            response.read()


def _jars(root: Path) -> tuple[Path, Path]:
    platform = root / "platform"
    pubsub = sorted((platform / "pubsub-emulator" / "lib").glob("cloud-pubsub-emulator-*.jar"))
    firestore = platform / "cloud-firestore-emulator" / "cloud-firestore-emulator.jar"
    if not pubsub or not firestore.is_file():
        raise EmulatorError(f"the gcloud SDK at {root} lacks the Pub/Sub or Firestore emulator component")
    return pubsub[-1], firestore


def _probe(name: str, host_port: str, project: str) -> bool:
    """A real call: list topics (Pub/Sub) or read the root (Firestore)."""
    headers: dict[str, str] = {}
    if name == "pubsub":
        url = f"http://{host_port}/v1/projects/{project}/topics"
    else:
        url = f"http://{host_port}/v1/projects/{project}/databases/(default)/documents/probe/probe"
        # The emulator's own token bypasses security rules, so one started with rules answers too.
        headers["Authorization"] = "Bearer owner"
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (loopback URL)
    try:
        with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310 (loopback URL)
            return int(response.status) < 500
    except urllib.error.HTTPError as err:
        return err.code == 404  # Firestore: the document does not exist, the server answered.
    except (OSError, ValueError):
        return False


def launch_emulator(
    name: str,
    *,
    port: int | None = None,
    project: str = "paynow-local",
    log_dir: Path | None = None,
    rules: Path | None = None,
) -> Emulator:
    """Start `pubsub` or `firestore` on a loopback port (not yet ready: see wait_ready).

    `rules` (Firestore only): a security rules file the emulator enforces on client calls.
    """
    if rules is not None and (name != "firestore" or not rules.is_file()):
        raise EmulatorError(f"rules {rules} need the firestore emulator and an existing file")
    root = sdk_root()
    if root is None:
        raise EmulatorError("gcloud is not installed: the Pub/Sub and Firestore emulators come with its SDK")
    pubsub_jar, firestore_jar = _jars(root)
    port = port or free_port()
    if name == "pubsub":
        cmd = ["java", "-jar", str(pubsub_jar), f"--host={HOST}", f"--port={port}"]
    elif name == "firestore":
        cmd = [
            "java",
            "-cp",
            str(firestore_jar),
            "com.google.cloud.datastore.emulator.firestore.CloudFirestore",
            "start",
            f"--host={HOST}",
            f"--port={port}",
        ]
        if rules is not None:
            cmd.append(f"--rules={rules.resolve()}")
    else:
        raise EmulatorError(f"unknown emulator {name!r}")
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="paynow-emulators-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    return Emulator(name=name, port=port, process=process, log_path=log_path, project=project)


def wait_ready(emulator: Emulator, timeout: float = 90) -> Emulator:
    """Wait until a real call to the emulator succeeds; stop it and raise if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if emulator.process.poll() is not None:
            raise EmulatorError(
                f"the {emulator.name} emulator exited with {emulator.process.returncode};"
                f" see {emulator.log_path}"
            )
        if _probe(emulator.name, emulator.host_port, emulator.project):
            return emulator
        time.sleep(0.25)
    emulator.stop()
    raise EmulatorError(
        f"the {emulator.name} emulator was not ready after {timeout:.0f} s; see {emulator.log_path}"
    )


@dataclass
class EmulatorStack:
    """Both emulators, started together, stopped together."""

    pubsub: Emulator
    firestore: Emulator

    @classmethod
    def start(cls, project: str = "paynow-local", log_dir: Path | None = None) -> EmulatorStack:
        # Both JVMs boot in parallel; each is ready only once a real call succeeds.
        pubsub = launch_emulator("pubsub", project=project, log_dir=log_dir)
        try:
            firestore = launch_emulator("firestore", project=project, log_dir=log_dir)
        except BaseException:
            pubsub.stop()
            raise
        stack = cls(pubsub=pubsub, firestore=firestore)
        try:
            wait_ready(pubsub)
            wait_ready(firestore)
        except BaseException:
            stack.stop()
            raise
        return stack

    def env(self) -> dict[str, str]:
        """The variables that point the Google clients at these emulators."""
        return {
            "PUBSUB_EMULATOR_HOST": self.pubsub.host_port,
            "FIRESTORE_EMULATOR_HOST": self.firestore.host_port,
            "GOOGLE_CLOUD_PROJECT": self.pubsub.project,
        }

    def stop(self) -> None:
        for emulator in (self.firestore, self.pubsub):
            emulator.stop()
