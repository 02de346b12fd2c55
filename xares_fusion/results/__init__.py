"""Results: per-task outcomes, the official Overall, the scores table and the typed result record
(no torch import here, so leaderboards can load records anywhere).

* :mod:`.tasks`: :class:`TaskResult` and the Overall rule (:func:`overall`, :func:`weighted_overall`);
* :mod:`.scores`: the per-run scores table (``scores.tsv``);
* :mod:`.record`: :class:`ResultRecord`, the versioned ``result.json`` (docs/results.md);
* :mod:`.provenance`: package versions, git revision, machine and device.
"""

from .provenance import provenance
from .record import (
    RECORD_FILE,
    SCHEMA_VERSION,
    Parity,
    RecordError,
    ResultRecord,
    SystemIdentity,
    read_record,
    record_tasks,
    write_record,
)
from .scores import SCORES_FILE, format_table, scores_frame, write_scores
from .tasks import TaskResult, overall, weighted_overall

# The name the runner's plain-dict record uses for the version (read back as ``schema_version``).
RECORD_VERSION = SCHEMA_VERSION

__all__ = [
    "RECORD_FILE",
    "RECORD_VERSION",
    "SCHEMA_VERSION",
    "SCORES_FILE",
    "Parity",
    "RecordError",
    "ResultRecord",
    "SystemIdentity",
    "TaskResult",
    "format_table",
    "overall",
    "provenance",
    "read_record",
    "record_tasks",
    "scores_frame",
    "weighted_overall",
    "write_record",
    "write_scores",
]
