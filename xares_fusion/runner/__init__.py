"""The runner: recipe + tasks + encoder -> trained audio LLM -> predictions -> scores -> records.

Everything that can be wrong with the request (configs, encoder, missing shards, a run directory
holding another configuration) is found before any training starts. Training resumes from the
last checkpoint; a finished run is reused; a task's score is cached under a hash of everything
that changes it. Results already computed are written before a failure is raised.

One module per step of a run: ``planning`` (request -> checked plan, claimed run directory),
``backend`` (process group, Accelerator, deterministic mode), ``building`` (the model),
``training`` (the stages), ``evaluation`` (one task, its score cache), ``pipeline`` (``run``
putting them together, the result record).
"""

from __future__ import annotations

from .backend import PRECISION_TO_ACCELERATE, make_accelerator, process_state, set_deterministic, use_cpu
from .building import apply_tf32, build_model, build_run_model
from .evaluation import evaluate_task
from .pipeline import RunFailed, RunResult, run, summary_text
from .planning import Plan, RunRequest, _ensure_generated, plan_run
from .training import aux_loss_weights, train_stages, training_loader, training_stream

__all__ = [
    "PRECISION_TO_ACCELERATE",
    "Plan",
    "RunFailed",
    "RunRequest",
    "RunResult",
    "_ensure_generated",
    "apply_tf32",
    "aux_loss_weights",
    "build_model",
    "build_run_model",
    "evaluate_task",
    "make_accelerator",
    "plan_run",
    "process_state",
    "run",
    "set_deterministic",
    "summary_text",
    "train_stages",
    "training_loader",
    "training_stream",
    "use_cpu",
]
