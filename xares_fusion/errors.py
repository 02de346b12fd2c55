"""The one root of every error a user can fix, and the exit status of each kind.

`xares-fusion` catches :class:`XaresError` alone and prints its message (which names the file,
the field or the sample, and the fix) without a traceback; the process exits with the kind's
``exit_code``. Any other exception is a bug: the command prints its traceback under one line
that says so and where the run's log is. The exit codes (README, "Exit codes"):

==== ======================================================================================
code meaning
==== ======================================================================================
0    success
1    :class:`RunFailed`: the run ended, but some tasks could not be scored (the rest is written)
2    :class:`UsageError`: the command line is wrong (argparse uses 2 as well)
3    :class:`ConfigError`: a task, group or recipe file or a ``--set`` value is wrong
4    :class:`DataError`: shards missing, unreadable or losing too many samples
5    :class:`EncoderError`: the encoder breaks the contract or cannot be built
6    :class:`ModelError`: the LLM or an exported model cannot be loaded or written
7    :class:`MetricError`: a metric cannot run here
8    :class:`CacheError`: a feature or score cache entry cannot be used
9    :class:`RunDirError`: the run directory holds another configuration
10   :class:`RunLockError`: another live run holds the run directory
70   a bug: an unexpected exception (its traceback is printed)
==== ======================================================================================

This module imports nothing from the package, so every layer may raise these.
"""

from __future__ import annotations

from pathlib import Path

EXIT_BUG = 70
"""Exit status of an unexpected exception (sysexits' EX_SOFTWARE)."""


class XaresError(Exception):
    """An error the user can fix; the message names the file, field or sample and the fix."""

    exit_code = 1


class RunFailed(XaresError):
    """Some tasks could not be scored; everything else was written (the message says where)."""

    exit_code = 1


class UsageError(XaresError):
    """The command line is wrong: a missing, conflicting or unusable argument."""

    exit_code = 2


class ConfigError(XaresError):
    """A config file or value is wrong. The message names the file, the field and the fix."""

    exit_code = 3


class DataError(XaresError):
    """The data of a task is missing or unusable; the message names the shard (and member)."""

    exit_code = 4


class EncoderError(XaresError):
    """The encoder cannot be built or breaks the contract; the message says what to return instead."""

    exit_code = 5


class ModelError(XaresError):
    """The LLM or a model to export cannot be loaded or written."""

    exit_code = 6


class MetricError(XaresError):
    """A metric cannot be computed on this machine; the message says what to install."""

    exit_code = 7


class CacheError(XaresError):
    """A cache entry (features, scores) cannot be used; the message names the file."""

    exit_code = 8


class RunDirError(XaresError):
    """The run directory cannot take this run: it holds another configuration's work."""

    exit_code = 9


class RunLockError(RunDirError):
    """Another live run holds the run directory; the message names its pid, host and start."""

    exit_code = 10


_run_log: Path | None = None


def note_run_log(path: Path) -> None:
    """Remember the log file of the run in progress, for the header of a bug report."""
    global _run_log
    _run_log = path


def run_log() -> Path | None:
    """The log file of the last run this process started, or None when none got that far."""
    return _run_log
