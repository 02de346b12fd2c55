"""Download a task set's shards from their hub dataset repos into the data home.

`huggingface_hub` does the transfer (progress bar, resuming ``.incomplete`` files); we decide
which files are needed, skip those already complete, and verify every file's size against the
repo's metadata. Offline, the error lists the missing files, where they belong and what to do.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import atomic_write_text
from ..config import TaskConfig
from ..errors import DataError
from .shards import SIZES_FILE, expand_patterns, repo_base

log = logging.getLogger("xares_fusion")


class FetchError(DataError, RuntimeError):
    """Some files could not be fetched; the message lists them and how to provide them."""


@dataclass
class FetchReport:
    downloaded: list[Path] = field(default_factory=list)
    present: list[Path] = field(default_factory=list)


def needed_files(tasks: list[TaskConfig], splits: tuple[str, ...] = ("train", "eval")) -> dict[str, list[str]]:
    """Hub repo -> file names (in order, without duplicates) for the given tasks' splits."""
    files: dict[str, dict[str, None]] = defaultdict(dict)
    for task in tasks:
        for split in splits:
            spec = task.train if split == "train" else task.eval
            if spec is not None and spec.repo_id:
                for name in expand_patterns(spec.shards):
                    files[spec.repo_id].setdefault(name, None)
    return {repo: list(names) for repo, names in files.items()}


def _remote_sizes(repo_id: str, names: list[str]) -> dict[str, int]:
    from huggingface_hub import HfApi

    sizes: dict[str, int] = {}
    for start in range(0, len(names), 500):  # the paths-info endpoint takes batches
        for info in HfApi().get_paths_info(repo_id, names[start : start + 500], repo_type="dataset"):
            if getattr(info, "size", None) is not None:
                sizes[info.path] = int(info.size)
    return sizes


def _record_sizes(base: Path, sizes: dict[str, int]) -> None:
    """Keep the hub's file sizes beside the files: a later run that misses some of them says how
    much they take to download (:class:`~xares_fusion.data.shards.MissingDataError`)."""
    manifest = base / SIZES_FILE
    known = json.loads(manifest.read_text()) if manifest.is_file() else {}
    atomic_write_text(manifest, json.dumps({**known, **sizes}, indent=0, sort_keys=True))


def fetch(tasks: list[TaskConfig], splits: tuple[str, ...] = ("train", "eval"), command: str = "") -> FetchReport:
    """Download every missing or incomplete shard of ``tasks``; raises :class:`FetchError` listing
    what could not be fetched (nothing already downloaded is removed)."""
    from huggingface_hub import hf_hub_download

    report = FetchReport()
    failures: list[tuple[Path, str]] = []
    for repo_id, names in needed_files(tasks, splits).items():
        base = repo_base(repo_id)
        try:
            sizes = _remote_sizes(repo_id, names)
        except Exception as err:
            failures += [
                (base / n, f"hub unreachable: {type(err).__name__}") for n in names if not (base / n).is_file()
            ]
            report.present += [base / n for n in names if (base / n).is_file()]
            continue
        _record_sizes(base, sizes)
        for name in names:
            path = base / name
            if name not in sizes:
                failures.append((path, f"not in the hub repo {repo_id}"))
                continue
            if path.is_file() and path.stat().st_size == sizes[name]:
                report.present.append(path)
                continue
            try:
                hf_hub_download(
                    repo_id, name, repo_type="dataset", local_dir=base, force_download=path.is_file()
                )  # a complete-looking file of the wrong size
            except Exception as err:
                failures.append((path, f"download failed: {type(err).__name__}: {err}"))
                continue
            if path.stat().st_size != sizes[name]:
                failures.append((path, f"size {path.stat().st_size} != {sizes[name]} bytes after download"))
            else:
                report.downloaded.append(path)
    if failures:
        shown = "\n  ".join(f"{p}  ({why})" for p, why in failures[:15])
        more = f"\n  ... and {len(failures) - 15} more" if len(failures) > 15 else ""
        raise FetchError(
            f"{len(failures)} file(s) could not be fetched:\n  {shown}{more}\n"
            f"Fix: run `{command or 'xares-fusion fetch-data ...'}` on a machine that reaches the hub "
            f"(it resumes partial files), or copy the files to the paths above "
            f"(or point $XARES_DATA_HOME at a directory that holds them)."
        )
    return report
