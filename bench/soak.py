"""The soak (issue 15 item 8): the load test at its moderate pace for a long time, with each
Portico process's memory sampled; it must stay flat.

    python -m bench.soak [--minutes 30] [--interval 20] [--warmup 5] [--mappings FILE]
                         [-- bench.load options]

Runs `python -m bench.load --duration MINUTES*60` (two `portico serve`, two `portico worker`,
simulated firms, 500 subscribers; its own exact account of mail and events) and, every
INTERVAL seconds, reads the resident memory (VmRSS in /proc) of each `portico serve` and
`portico worker` process under it. Flat: the floor (lowest sample) of each process's last
WARMUP minutes is within 10 % of the floor of the WARMUP minutes after the first WARMUP
(caches, pools and the first pages of every query fill in the first minutes). The floor,
not the median: each sign-in holds argon2id's 64 MiB for its hash, so on a busy machine half
the samples of a process can catch one in flight, and its median jumps by 64 MiB with no
byte leaked; a leak raises the floor. Reported per process: the two floors, the two
medians, the highest sample and the growth. --mappings FILE writes every sample's RSS and
the process's largest mappings (a 64 MiB one fully resident is a hash in flight). The exit
status is 1 when a process grew more, or bench.load itself failed. Never part of `make
test`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

FLAT = 0.10


@dataclass
class Samples:
    name: str
    values: list[tuple[float, int]] = field(default_factory=list)  # (seconds, RSS bytes)

    def between(self, start: float, end: float) -> list[int]:
        return [rss for at, rss in self.values if start <= at < end]


def portico_processes(root: int) -> dict[int, str]:
    """The `portico serve` and `portico worker` processes descending from `root`: pid ->
    a short name."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                # The parent is the 4th field, after the command in parentheses.
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found: dict[int, str] = {}
    for pid in parents:
        ancestor = parents.get(pid)
        while ancestor not in (None, 0, 1, root):
            ancestor = parents.get(ancestor)  # type: ignore[arg-type]
        if ancestor != root:
            continue
        try:
            argv = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [Path(a.decode(errors="replace")).name for a in argv if a]
        role = next((w for w in ("serve", "worker") if w in words), None)
        if role is not None and any(w == "portico" for w in words):
            found[pid] = f"portico {role} ({pid})"
    return found


def largest_mappings(pid: int, count: int = 3) -> list[tuple[int, int, str]]:
    """The process's `count` mappings with the most resident memory: (resident bytes, size
    bytes, name), to tell a grown malloc arena (a 64 MB mapping) from a grown heap."""
    found: list[tuple[int, int, str]] = []
    size, name = 0, ""
    try:
        lines = (Path("/proc") / str(pid) / "smaps").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        head = line.split()
        if head and "-" in head[0] and not head[0].endswith(":"):
            start, end = (int(part, 16) for part in head[0].split("-"))
            size, name = end - start, head[5] if len(head) > 5 else "[anon]"
        elif head and head[0] == "Rss:":
            found.append((int(head[1]) * 1024, size, name))
    return sorted(found, reverse=True)[:count]


def rss(pid: int) -> int | None:
    try:
        for line in (Path("/proc") / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--interval", type=float, default=20, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=5, help="minutes left to warm up")
    parser.add_argument(
        "--mappings", type=Path, help="write each sample's largest mappings per process here"
    )
    args, load_options = parser.parse_known_args()
    duration = args.minutes * 60
    warmup = args.warmup * 60
    if duration < 3 * warmup:
        sys.exit("error: --minutes must be at least three --warmup periods")
    command = [sys.executable, "-m", "bench.load", "--duration", str(duration)]
    command += [o for o in load_options if o != "--"]
    load = subprocess.Popen(command, env=os.environ)
    samples: dict[int, Samples] = {}
    started: float | None = None  # when the Portico processes first showed
    try:
        while load.poll() is None:
            now = time.monotonic()
            for pid, name in portico_processes(load.pid).items():
                size = rss(pid)
                if size is None:
                    continue
                started = now if started is None else started
                samples.setdefault(pid, Samples(name)).values.append((now - started, size))
                if args.mappings:
                    with args.mappings.open("a") as out:
                        out.write(f"{now - started:.0f}\t{name}\t{size >> 20} MB RSS\n")
                        for resident, length, what in largest_mappings(pid):
                            out.write(
                                f"{now - started:.0f}\t{name}\t{resident >> 20} MB resident"
                                f"\tof {length >> 20} MB\t{what}\n"
                            )
            time.sleep(args.interval)
    except KeyboardInterrupt:
        load.terminate()
        load.wait()
        raise
    print(f"\nsoak: {args.minutes:g} min of bench.load, memory sampled every {args.interval:g} s")
    ok = load.returncode == 0
    if not ok:
        print(f"bench.load failed (exit {load.returncode})")
    grown = report(samples, warmup, duration)
    sys.exit(0 if ok and not grown else 1)


def report(samples: dict[int, Samples], warmup: float, duration: float) -> list[str]:
    """Prints each process's memory; returns the names of those not flat."""
    grown: list[str] = []
    rows: dict[str, list[str]] = defaultdict(list)
    for process in samples.values():
        early = process.between(warmup, 2 * warmup)
        late = process.between(duration - warmup, duration + warmup)
        highest = max(value for _, value in process.values)
        if not early or not late:
            rows[process.name].append("too few samples (it stopped early?)")
            grown.append(process.name)
            continue
        growth = min(late) / min(early) - 1
        if growth > FLAT:
            grown.append(process.name)
        mb = 2**20
        rows[process.name].append(
            f"floor {min(early) / mb:6.1f} MB after warm-up, {min(late) / mb:6.1f} MB at the end"
            f" (medians {statistics.median(early) / mb:6.1f}, {statistics.median(late) / mb:6.1f}),"
            f" highest {highest / mb:6.1f} MB: {growth:+.1%}"
            + ("" if growth <= FLAT else f"  NOT FLAT (over {FLAT:.0%})")
        )
    for name in sorted(rows):
        print(f"  {name:24} {' '.join(rows[name])}")
    if not samples:
        print("  no Portico process was seen")
        grown.append("none")
    return grown


if __name__ == "__main__":
    main()
