"""Start-up time of the `xares-fusion` command: wall seconds of cheap commands, each in a fresh process.

    python scripts/startup_bench.py [--repeat 3]

Prints one row per command (median, min and max over the repeats) and whether the process
imported torch. The figures depend on the machine and its load; compare them on one machine.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

# Each command runs as `python -c PROBE ARGS...`: the probe runs the CLI in-process, then reports
# whether torch was imported, so one process gives both figures.
PROBE = (
    "import sys\n"
    "from xares_fusion.cli import main\n"
    "try:\n"
    "    code = main(sys.argv[1:])\n"
    "except SystemExit as exit_:\n"
    "    code = exit_.code\n"
    "print('TORCH_IMPORTED=' + str('torch' in sys.modules), file=sys.stderr)\n"
    "sys.exit(code)\n"
)
COMMANDS = (["--help"], ["list"], ["validate"], ["run", "--help"], ["score", "--help"])


def time_command(args: list[str], repeat: int) -> tuple[list[float], bool, int]:
    """Wall seconds of each repeat, whether torch was imported, and the last exit status."""
    times, torch_imported, code = [], False, 0
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        torch_imported = "TORCH_IMPORTED=True" in done.stderr
        code = done.returncode
    return times, torch_imported, code


def main() -> None:
    """Time every command and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per command (default 3)")
    repeat = parser.parse_args().repeat
    time_command(["--help"], 1)  # warms the file cache, so the first row is not an outlier
    print(f"{'command':<28}{'median s':>10}{'min s':>8}{'max s':>8}  torch  exit")
    for args in COMMANDS:
        times, torch_imported, code = time_command(args, repeat)
        label = "xares-fusion " + " ".join(args)
        print(
            f"{label:<28}{statistics.median(times):>10.2f}{min(times):>8.2f}{max(times):>8.2f}"
            f"  {'yes' if torch_imported else 'no ':<5}  {code}"
        )


if __name__ == "__main__":
    main()
