"""`portico worker` under cProfile timed in CPU time, for bench.deliveries --profile.

    python -m bench.profiled_worker OUTPUT

`python -m cProfile` times by the wall clock: on a shared machine every function then
includes the time the process waited for a core. This counts the process's CPU time only
(time.process_time), and writes the profile to OUTPUT when the worker stops (SIGTERM).
"""

from __future__ import annotations

import cProfile
import sys
import time

from portico.cli import main

if __name__ == "__main__":
    profile = cProfile.Profile(time.process_time)
    try:
        profile.runcall(main, ["worker"])
    finally:
        profile.dump_stats(sys.argv[1])
