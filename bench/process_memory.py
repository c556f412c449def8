"""Peak memory of every process a run involves, by role, sampled from /proc once a second (Linux).

Shared by the benches that report memory: `rehearse_vit_b16.py` finds a `flwr run`'s processes by a token in their
environment; `bench_scale.py` follows its own process tree (the ServerApp, Flower's Simulation Engine and its
in-memory LinkState run in the bench's process; Ray's services and actors are its descendants). RSS counts pages
processes share once per process; PSS splits them, so the PSS of all processes adds up to what the run holds.
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from dataclasses import dataclass, field

SAMPLE_EVERY_S = 1.0
THIS_PROCESS = "this process (ServerApp, Simulation Engine, in-memory LinkState)"
# (role, a string its command line holds), first match wins; Ray's workers name themselves `ray::<actor>`
ROLES = (
    ("flwr CLI (run, list)", "bin/flwr "),
    ("SuperLink", "flower-superlink"),
    ("SuperExec", "flower-superexec"),
    ("simulation (ServerApp + Ray driver)", "flwr-simulation"),
    ("ServerApp", "flwr-serverapp"),
    ("SuperNode", "flower-supernode"),
    ("ClientApp (one process per message)", "flwr-clientapp"),
    ("Ray workers (ClientApp actors)", "ray::"),  # a worker renames itself once it holds an actor
    ("Ray workers (ClientApp actors)", "default_worker.py"),
    ("Ray services (raylet, GCS, monitors)", "ray"),
)


def role_of(command: str) -> str:
    return next((role for role, marker in ROLES if marker in command), "other")


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as stream:
            return stream.read()
    except OSError:
        return b""


def _number(text: bytes, key: bytes) -> int:
    """The number after `key` in a /proc file of `key: value` lines (`VmRSS:`, `PPid:`, `Pss:`), 0 if none."""
    for line in text.splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def _cpu_times() -> tuple[int, int]:
    """(all jiffies, idle + iowait jiffies) of the machine, from /proc/stat."""
    fields = [int(v) for v in _read("/proc/stat").split(b"\n", 1)[0].split()[1:]]
    return sum(fields), fields[3] + fields[4]


@dataclass
class MemorySampler:
    """Samples, every second, the memory of a run's processes and the machine's load.

    `environment_entry` ("NAME=value"): the processes whose environment holds it (not this one). None: this
    process and all its descendants."""

    environment_entry: str | None = None
    peak_rss: dict[int, int] = field(default_factory=dict)  # pid -> KiB
    peak_pss: dict[int, int] = field(default_factory=dict)
    roles: dict[int, str] = field(default_factory=dict)
    role_sum_rss: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # role -> peak of the sum, KiB
    role_sum_pss: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    total_pss: int = 0
    others: dict[int, str] = field(default_factory=dict)  # pid -> command line of processes of no known role
    loads: list[float] = field(default_factory=list)
    busy: list[float] = field(default_factory=list)  # share of all cores busy, machine-wide

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _processes(self) -> dict[int, bytes]:
        """pid -> /proc status of the processes sampled now."""
        statuses = {int(name): _read(f"/proc/{name}/status") for name in os.listdir("/proc") if name.isdigit()}
        if self.environment_entry is not None:
            marker = self.environment_entry.encode()
            return {
                pid: status
                for pid, status in statuses.items()
                if pid != os.getpid() and marker in _read(f"/proc/{pid}/environ").split(b"\0")
            }
        children = defaultdict(list)
        for pid, status in statuses.items():
            children[_number(status, b"PPid:")].append(pid)
        tree, todo = {}, [os.getpid()]
        while todo:
            pid = todo.pop()
            if pid in statuses:
                tree[pid] = statuses[pid]
                todo += children[pid]
        return tree

    def _role(self, pid: int, status: bytes) -> str:
        if pid == os.getpid():
            return THIS_PROCESS
        command = _read(f"/proc/{pid}/cmdline").replace(b"\0", b" ").decode(errors="replace")
        parent = self.roles.get(_number(status, b"PPid:"), "")  # a SuperNode starts its own SuperExec
        role = role_of(command) + (" (the SuperNode's)" if parent == "SuperNode" else "")
        if role == "other":
            self.others[pid] = command[:200]
        return role

    def _loop(self) -> None:
        previous = _cpu_times()
        while not self._stop.wait(SAMPLE_EVERY_S):
            rss, pss = defaultdict(int), defaultdict(int)
            for pid, status in self._processes().items():
                resident = _number(status, b"VmRSS:")
                if not resident:  # a zombie, or gone
                    continue
                proportional = _number(_read(f"/proc/{pid}/smaps_rollup"), b"Pss:")
                if pid not in self.roles:
                    self.roles[pid] = self._role(pid, status)
                role = self.roles[pid]
                self.peak_rss[pid] = max(self.peak_rss.get(pid, 0), resident)
                self.peak_pss[pid] = max(self.peak_pss.get(pid, 0), proportional)
                rss[role] += resident
                pss[role] += proportional
            for role in rss:
                self.role_sum_rss[role] = max(self.role_sum_rss[role], rss[role])
                self.role_sum_pss[role] = max(self.role_sum_pss[role], pss[role])
            self.total_pss = max(self.total_pss, sum(pss.values()))
            self.loads.append(float(_read("/proc/loadavg").split()[0]))
            now = _cpu_times()
            total, idle = now[0] - previous[0], now[1] - previous[1]
            self.busy.append(1 - idle / total if total else 0.0)
            previous = now

    def table(self) -> str:
        lines = [
            "| process role | processes | peak RSS of one (MiB) | peak PSS of one (MiB) | peak PSS of all (MiB) |",
            "|---|---:|---:|---:|---:|",
        ]
        by_role = defaultdict(list)
        for pid, role in self.roles.items():
            by_role[role].append(pid)
        for role, pids in sorted(by_role.items(), key=lambda item: -self.role_sum_pss[item[0]]):
            one_rss = max(self.peak_rss[p] for p in pids) / 1024
            one_pss = max(self.peak_pss[p] for p in pids) / 1024
            lines.append(
                f"| {role} | {len(pids)} | {one_rss:.0f} | {one_pss:.0f} | {self.role_sum_pss[role] / 1024:.0f} |"
            )
        lines.append(f"| all of them, at their peak together | | | | {self.total_pss / 1024:.0f} |")
        lines += [f"other: {pid}: {command}" for pid, command in self.others.items()]
        return "\n".join(lines)
