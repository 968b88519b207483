"""A daemon's stdout and stderr pointed at its log by the process itself (what a Windows
instance does; run here in a child process, as it takes over descriptors 1 and 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import sys
from pathlib import Path
from sarra.cli.logs import stdio_into_log
stdio_into_log(Path(sys.argv[1]))
print("to stdout")
sys.stderr.write("to stderr\\n")
raise SystemExit("a start-up error")
"""


def test_prints_tracebacks_and_errors_land_in_the_log(tmp_path: Path) -> None:
    log = tmp_path / "log" / "sr_x_y_001.log"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(log)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert done.stdout == "" and done.stderr == ""
    # (stdout is buffered until exit, stderr is not: the order between them is not fixed)
    assert sorted(log.read_text().splitlines()) == ["a start-up error", "to stderr", "to stdout"]
    assert log.stat().st_mode & 0o777 == 0o600
