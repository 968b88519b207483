"""Run a Python console script with cProfile in every thread; the merged stats go to
``$PROFWRAP_OUT`` at exit. Used by ``bench/profile_sub.py --how cprofile``.

Usage: ``python bench/profwrap.py SCRIPT ARGS...``
"""

from __future__ import annotations

import atexit
import contextlib
import cProfile
import os
import pstats
import runpy
import sys
import threading

_profiles: list[cProfile.Profile] = []
_lock = threading.Lock()
_orig_run = threading.Thread.run


def _run(self: threading.Thread) -> None:
    prof = cProfile.Profile()
    with _lock:
        _profiles.append(prof)
    prof.enable()
    try:
        _orig_run(self)
    finally:
        prof.disable()


def _dump() -> None:
    _main.disable()
    with _lock:
        stats = pstats.Stats(_main)
        for prof in _profiles:
            with contextlib.suppress(TypeError):  # a profile that recorded nothing
                stats.add(prof)
    stats.dump_stats(os.environ["PROFWRAP_OUT"])


threading.Thread.run = _run  # type: ignore[method-assign]
_main = cProfile.Profile()
atexit.register(_dump)
script = sys.argv[1]
sys.argv = sys.argv[1:]
_main.enable()
runpy.run_path(script, run_name="__main__")
