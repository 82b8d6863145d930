"""A real load balancer (Debian's HAProxy) in front of test hosts, and a steady client load.

moto has no data plane, so in "targets" mode the load balancer follows the test AWS server's
target group as an ALB would: healthy targets get new requests; any other (draining,
deregistered, unhealthy) finishes the requests it has and gets no new ones. In "health" mode it checks GET /ready itself
(every second, 2 failures to go down, 2 passes to come back), as any load balancer outside AWS.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field

from openai import OpenAI

import testhosts


class LoadBalancer:
    def __init__(self, port: int, backends: dict[str, int], mode: str = "health"):
        """backends: server name -> port on 127.0.0.1 (a test host's published gateway port)."""
        self.port, self.backends, self.mode = port, backends, mode
        self.dir = testhosts.scratch() / f"haproxy-{port}"
        self.process: subprocess.Popen | None = None
        self._stop = threading.Event()

    def config(self) -> str:
        check = " check inter 1s fall 2 rise 2" if self.mode == "health" else " disabled"
        servers = "".join(f"    server {name} 127.0.0.1:{port}{check}\n" for name, port in self.backends.items())
        return (
            "global\n"
            f"    stats socket {self.dir / 'admin.sock'} mode 600 level admin\n"
            "defaults\n"
            "    mode http\n"
            "    timeout connect 5s\n"
            "    timeout client 900s\n"
            "    timeout server 900s\n"
            "frontend clients\n"
            f"    bind 127.0.0.1:{self.port}\n"
            "    default_backend hosts\n"
            "backend hosts\n"
            "    balance leastconn\n"
            "    option httpchk GET /ready\n"
            "    http-response set-header X-Served-By %s\n"
            f"{servers}"
        )

    def start(self) -> LoadBalancer:
        # HAProxy binds with SO_REUSEPORT: one left by an interrupted run would share the port and
        # route part of the requests by its stale server states.
        subprocess.run(["pkill", "-f", f"{self.dir}/haproxy.cfg"], check=False)
        for _ in range(50):  # until a stale one has exited
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except OSError:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"127.0.0.1:{self.port} is taken: the test load balancer needs it")
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        (self.dir / "haproxy.cfg").write_text(self.config())
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        log = open(self.dir / "haproxy.log", "w")  # noqa: SIM115 - kept open for the process's life
        self.process = subprocess.Popen([haproxy, "-db", "-f", str(self.dir / "haproxy.cfg")], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return self
            time.sleep(0.1)
        raise RuntimeError(f"haproxy did not listen: {(self.dir / 'haproxy.log').read_text()}")

    def stop(self) -> None:
        self._stop.set()
        if self.process:
            self.process.terminate()
            self.process.wait(timeout=10)

    def admin(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.dir / "admin.sock"))
            sock.sendall(command.encode() + b"\n")
            return b"".join(iter(lambda: sock.recv(65536), b"")).decode()

    def states(self) -> dict[str, str]:
        """server name -> HAProxy's operational and admin state, e.g. "UP", "DRAIN", "MAINT", "DOWN"."""
        lines = self.admin("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
        return {r["svname"]: r["status"] for r in rows if r["pxname"] == "hosts" and r["svname"] in self.backends}

    def follow(self, target_health, targets: dict[str, str], interval: float = 0.5) -> None:
        """Keep the servers in step with the target group: target_health() -> {"<id>:<port>": state};
        targets: server name -> "<id>:<port>"."""

        def loop():
            while not self._stop.is_set():
                with contextlib.suppress(Exception):  # a moto hiccup: keep the last states
                    health = target_health()
                    for name, target in targets.items():
                        state = "ready" if health.get(target) == "healthy" else "drain"
                        self.admin(f"set server hosts/{name} state {state}")
                self._stop.wait(interval)

        threading.Thread(target=loop, daemon=True).start()


# (test, label, stats) of every load that ran; conftest prints them in the terminal summary.
REPORT: list[tuple[str, str, Stats]] = []


@dataclass
class Stats:
    sent: int = 0
    completed: int = 0
    failed: int = 0
    streams: int = 0
    long: int = 0
    served_by: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"requests sent {self.sent}, completed {self.completed}, failed {self.failed} "
            f"(streams {self.streams}, long {self.long}, served by {self.served_by})"
        )


class Load:
    """Client threads sending chat requests one after another, PAUSE seconds apart: streaming
    and not, short and long (every third generates LONG_TOKENS tokens, ignoring the
    end-of-sequence token, so that it spans a drain). Light enough to leave the 2-core test
    machine room for the playbooks: after its last request vLLM's worker busy-waits for the next
    one for a second (shm_broadcast's busy_loop_s), a core's worth under back-to-back requests."""

    def __init__(
        self, base_url: str, key: str, model: str, workers: int = 2, long_tokens: int = 100, pause: float = 6.0
    ):
        self.client = OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=300)
        self.model, self.workers, self.long_tokens, self.pause = model, workers, long_tokens, pause
        self.stats = Stats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _one(self, n: int) -> None:
        stream, long = n % 2 == 0, n % 3 == 1
        options = {"max_tokens": self.long_tokens if long else 8, "extra_body": {"ignore_eos": long}}
        messages = [{"role": "user", "content": f"request {n}: say something"}]
        with self._lock:
            self.stats.sent += 1
            self.stats.streams += stream
            self.stats.long += long
        try:
            if stream:
                raw = self.client.chat.completions.with_raw_response.create(
                    model=self.model, messages=messages, stream=True, **options
                )
                served = raw.headers.get("x-served-by", "?")
                finish = [c.choices[0].finish_reason for c in raw.parse() if c.choices and c.choices[0].finish_reason]
                ok = finish in (["length"], ["stop"])
            else:
                raw = self.client.chat.completions.with_raw_response.create(
                    model=self.model, messages=messages, **options
                )
                served = raw.headers.get("x-served-by", "?")
                ok = bool(raw.parse().choices)
            error = None if ok else f"request {n} ended without a finish reason"
        except Exception as exc:  # noqa: BLE001 - every failure counts, whatever its kind
            response = getattr(exc, "response", None)  # an HTTP error: the load balancer names the host
            served = response.headers.get("x-served-by", "?") if response is not None else "?"
            error = f"request {n} ({time.strftime('%H:%M:%S')}, {served}): {type(exc).__name__}: {exc}"
        with self._lock:
            if error:
                self.stats.failed += 1
                self.stats.errors.append(error)
            else:
                self.stats.completed += 1
                self.stats.served_by[served] = self.stats.served_by.get(served, 0) + 1

    def _worker(self, first: int) -> None:
        n = first
        while not self._stop.is_set():
            self._one(n)
            n += self.workers
            self._stop.wait(self.pause)

    def start(self) -> Load:
        self._threads = [threading.Thread(target=self._worker, args=(i,), daemon=True) for i in range(self.workers)]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, label: str = "load") -> Stats:
        """Stop sending; wait for the requests in flight; report and return the counts."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=600)
        test = os.environ.get("PYTEST_CURRENT_TEST", "?").split("::")[-1].split(" ")[0]
        REPORT.append((test, label, self.stats))
        print(f"{label}: {self.stats}")
        for error in self.stats.errors[:30]:
            print(f"load: {error}")
        return self.stats


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
