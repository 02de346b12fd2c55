"""The `xares-fusion` command. It only parses arguments and ties the layers together."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

EXIT_USAGE = 2


class UserError(Exception):
    """An error the user can fix; printed without a traceback."""


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err}); e.g. --encoder-args '{{\"n_mels\": 64}}'")
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"n_mels\": 64}'")
    return value


def _cmd_run(args: argparse.Namespace) -> int:
    from .runner import RunRequest, process_state, run, summary_text

    shortcuts = [f"{key}={value}" for key, value in (("optim.precision", args.precision),
                                                     ("speed.feature_cache", args.feature_cache),
                                                     ("speed.cache_dtype", args.cache_dtype),
                                                     ("speed.tf32", "true" if args.tf32 else None)) if value]
    result = run(RunRequest(encoder=args.encoder, train=args.train, eval=args.eval, encoder_args=args.encoder_args,
                            overrides=args.set + shortcuts, output_dir=args.output_dir, max_steps=args.max_steps,
                            limit=args.limit, progress=not args.no_progress))
    if process_state().is_main_process:
        print(summary_text(result))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    print(run_demo(args.output_dir or Path("experiments") / "demo", max_steps=args.max_steps, limit=args.limit,
                   with_fusion=args.with_fusion,
                   progress=not args.no_progress))
    return 0


def _cmd_check_encoder(args: argparse.Namespace) -> int:
    from .encoders import check_encoder

    summary = check_encoder(args.encoder, args.encoder_args)
    print(f"PASS {args.encoder}: output_dim={summary['output_dim']}, valid frames for 1 s / 2 s clips = "
          f"{summary['frames']}, frame rate ~{summary['frame_rate_measured']:.1f}/s"
          + (f" (declared {summary['frame_rate_declared']})" if summary["frame_rate_declared"] else ""))
    return 0


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from .leaderboard.report import SUFFIX, make_report, update_readme

    if args.update_readme:
        folder = args.out or Path("leaderboard")
        print(f"wrote {update_readme(folder)}")
        return 0
    results = args.results or ([Path("experiments")] if Path("experiments").is_dir() and not args.with_reference else [])
    text, images = make_report(results, args.format, args.baseline, args.out, args.with_reference, args.names)
    print(text)
    if args.out is not None:
        table = args.out / f"leaderboard.{SUFFIX[args.format]}"
        table.write_text(text)
        print(f"wrote {table}" + "".join(f", {p}" for p in images))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import format_bench, run_bench
    from .runner import process_state

    results = run_bench(args.encoder, args.recipe, args.task, args.steps, args.rows, args.eval_batch, args.encoder_args,
                        args.set, tuple(args.precision))
    print(format_bench(results, str(process_state().device)))
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    import pandas as pd

    from . import metrics

    path = Path(args.predictions)
    if not path.is_file():
        raise UserError(f"{path}: file not found.")
    frame = pd.read_csv(path, keep_default_na=False, dtype=str)
    missing = [c for c in ("predict", "labels") if c not in frame.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {missing}; a predictions file has 'predict' and 'labels' "
                        f"columns (as written by `xares-fusion run`). Columns found: {list(frame.columns)}")
    value = metrics.score(args.metric, frame["predict"].tolist(), frame["labels"].tolist(), **args.metric_args)
    print(f"{args.metric}\t{value:.6f}\t({len(frame)} rows, {path})")
    return 0


def _cmd_make_data(args: argparse.Namespace) -> int:
    from .paths import data_home

    root = args.out or data_home() / "generated" / args.generator
    if args.generator == "mini":
        from .data.mini import MiniSizes, make_mini

        sizes = MiniSizes(train_shards=args.train_shards, per_shard=args.per_shard, test=args.test)
        make_mini(root, seed=args.seed, sizes=sizes, force=args.force, progress=lambda task: print(f"  {task}"))
    else:
        from .data.synthetic import make_synthetic

        make_synthetic(root, seed=args.seed, force=args.force)
    print(f"{args.generator} shards in {root}")
    return 0


def _cmd_export_model(args: argparse.Namespace) -> int:
    from .export import export_model

    files = export_model(args.name, args.directory)
    print(f"{args.name} written to {args.directory}: {', '.join(files)}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from .config import catalogue
    from .registry import ENCODERS, METRICS

    if args.what in ("tasks", "all"):
        print("tasks:", ", ".join(sorted(n for n, kind in catalogue("tasks").items() if kind == "task")))
    if args.what in ("groups", "all"):
        print("groups:", ", ".join(sorted(n for n, kind in catalogue("tasks").items() if kind == "group")))
    if args.what in ("recipes", "all"):
        print("recipes:", ", ".join(sorted(catalogue("recipes"))))
    if args.what in ("encoders", "all"):
        from . import encoders  # noqa: F401  (registers the built-ins)
        print("encoders:", ", ".join(ENCODERS.names()))
    if args.what in ("metrics", "all"):
        from . import metrics  # noqa: F401
        print("metrics:", ", ".join(METRICS.names()))
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from .config import validate_files

    problems, checked = validate_files([Path(p) for p in args.paths])
    for problem in problems:
        print(f"INVALID {problem}")
    print(f"{checked - len(problems)} of {checked} config files valid")
    return 1 if problems else 0


def _cmd_fetch_data(args: argparse.Namespace) -> int:
    from .config import load_eval_tasks
    from .data.fetch import fetch

    _, tasks = load_eval_tasks(args.name)
    splits = ("train", "eval") if args.split == "both" else (args.split,)
    report = fetch(tasks, splits, command=f"xares-fusion fetch-data {args.name} --split {args.split}")
    print(f"{len(report.downloaded)} file(s) downloaded, {len(report.present)} already complete")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xares-fusion", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log every step")
    sub = parser.add_subparsers(dest="command", required=True)

    def add_run_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--output-dir", type=Path, default=None,
                       help="run directory (default experiments/<recipe>/<encoder>)")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")

    run = sub.add_parser("run", help="train the audio LLM around an encoder and score it on a task set")
    run.add_argument("encoder", help="registered name, path/to/file.py[:Class] or package.module.Class")
    run.add_argument("train", nargs="?", default="all", help="recipe name or YAML path (default: all)")
    run.add_argument("eval", nargs="?", default=None,
                     help="task, group name or YAML path (default: the recipe's eval set, else TRAIN)")
    run.add_argument("--encoder-args", type=_json_object, default={}, help="JSON kwargs for the encoder")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a recipe field, e.g. --set optim.lr=5e-5 (repeatable)")
    run.add_argument("--max-steps", type=int, default=None, help="shortcut for --set optim.max_steps=N")
    run.add_argument("--limit", type=int, default=None, help="at most N eval rows per task (smoke runs)")
    run.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default=None,
                     help="shortcut for --set optim.precision=... (fp32 is the parity default)")
    run.add_argument("--feature-cache", choices=["off", "read", "readwrite"], default=None,
                     help="shortcut for --set speed.feature_cache=... (off is the parity default)")
    run.add_argument("--cache-dtype", choices=["fp16", "fp32"], default=None,
                     help="shortcut for --set speed.cache_dtype=... (fp32 equals uncached runs)")
    run.add_argument("--tf32", action="store_true", help="shortcut for --set speed.tf32=true (GPU matmuls)")
    add_run_options(run)
    run.set_defaults(func=_cmd_run)

    demo = sub.add_parser("demo", help="the offline demo: mini suite, three encoders, SmolLM2 (about 15 min on CPU)")
    demo.add_argument("--max-steps", type=int, default=None, help="training steps per encoder (default: the recipe's)")
    demo.add_argument("--limit", type=int, default=None, help="at most N eval rows per task")
    demo.add_argument("--with-fusion", action="store_true",
                      help="also train the gated fusion of whisper-tiny.en-offline + logmel (a fourth column)")
    add_run_options(demo)
    demo.set_defaults(func=_cmd_demo)

    check = sub.add_parser("check-encoder", help="check an encoder against the contract")
    check.add_argument("encoder")
    check.add_argument("--encoder-args", type=_json_object, default={})
    check.set_defaults(func=_cmd_check_encoder)

    score = sub.add_parser("score", help="rescore a predictions CSV without retraining")
    score.add_argument("predictions")
    score.add_argument("--metric", required=True, help="Accuracy, mAP, iWER, iCER, ...")
    score.add_argument("--metric-args", type=_json_object, default={}, help="e.g. '{\"num_classes\": 200}'")
    score.set_defaults(func=_cmd_score)

    bench = sub.add_parser("bench", help="time one workload in parity mode and with each speed option")
    bench.add_argument("encoder", nargs="?", default="whisper-tiny.en-offline",
                       help="encoder, fusion or front-end recipe file (default: whisper-tiny.en-offline)")
    bench.add_argument("--recipe", default="demo", help="recipe giving the LLM and training mixture (default: demo)")
    bench.add_argument("--task", default="mini-asr", help="task whose eval rows are generated (default: mini-asr)")
    bench.add_argument("--steps", type=int, default=10, help="timed training steps per mode")
    bench.add_argument("--rows", type=int, default=32, help="eval rows per mode")
    bench.add_argument("--eval-batch", type=int, default=16, help="batch size of the batched evaluation")
    bench.add_argument("--encoder-args", type=_json_object, default={})
    bench.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe overrides")
    bench.add_argument("--precision", action="append", default=[], choices=["bf16", "fp16"],
                       help="also time this precision with a warm cache and batched evaluation (repeatable)")
    bench.set_defaults(func=_cmd_bench)

    board = sub.add_parser("leaderboard", help="comparison tables (and plots) from stored result records")
    board.add_argument("results", nargs="*", type=Path,
                       help="run directories (searched for result.json) or record files (default: experiments/)")
    board.add_argument("--format", default="md", choices=["md", "csv", "latex", "html"])
    board.add_argument("--baseline", default=None, help="a system label: adds a Δ column per other system")
    board.add_argument("--out", type=Path, default=None, help="write leaderboard.<ext> and PNG plots here")
    board.add_argument("--with-reference", action="store_true",
                       help="add the published tables of leaderboard/reference/ (labelled as published)")
    board.add_argument("--names", type=Path, default=None, help="YAML renaming systems: {auto label: {label, group}}")
    board.add_argument("--update-readme", action="store_true",
                       help="regenerate leaderboard/README.md (or --out DIR/README.md) from its runs/ and reference/")
    board.set_defaults(func=_cmd_leaderboard)

    for generator, text in (("mini", "synthesise the mini suite (speech from eSpeak NG, sounds from numpy)"),
                            ("synthetic", "write the synthetic tone shards (smoke tests)")):
        make = sub.add_parser(f"make-{generator}", help=text)
        make.add_argument("--out", type=Path, default=None, help="default: <data home>/generated/" + generator)
        make.add_argument("--seed", type=int, default=0)
        make.add_argument("--force", action="store_true", help="rewrite even if present")
        if generator == "mini":
            from .data.mini import MiniSizes

            make.add_argument("--train-shards", type=int, default=MiniSizes.train_shards)
            make.add_argument("--per-shard", type=int, default=MiniSizes.per_shard, help="clips per training shard")
            make.add_argument("--test", type=int, default=MiniSizes.test, help="test clips per task")
        make.set_defaults(func=_cmd_make_data, generator=generator)

    export = sub.add_parser("export-model", help="write an offline model (e.g. whisper-base-offline) as a Hugging "
                                                 "Face directory that from_pretrained(DIR) loads without a hub")
    export.add_argument("name", help="offline model, e.g. whisper-base-offline, whisper-tiny.en-offline, "
                                     "smollm2-135m-instruct-offline")
    export.add_argument("directory", type=Path, help="new or empty directory to write")
    export.set_defaults(func=_cmd_export_model)

    lst = sub.add_parser("list", help="list tasks, groups, recipes, encoders or metrics")
    lst.add_argument("what", nargs="?", default="all",
                     choices=["all", "tasks", "groups", "recipes", "encoders", "metrics"])
    lst.set_defaults(func=_cmd_list)

    val = sub.add_parser("validate", help="check task, group and recipe YAML files (default: every shipped one)")
    val.add_argument("paths", nargs="*", help="files or directories (default: the shipped tasks/ and recipes/)")
    val.set_defaults(func=_cmd_validate)

    fetch = sub.add_parser("fetch-data", help="download the shards of a task, group or suite (task1, task2, all)")
    fetch.add_argument("name", help="task1 | task2 | all | a task or group name or YAML")
    fetch.add_argument("--split", choices=["train", "eval", "both"], default="both")
    fetch.set_defaults(func=_cmd_fetch_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="[%(levelname)s] %(message)s")
    logging.getLogger("xares_fusion").setLevel(logging.INFO)
    from .config import ConfigError
    from .data.shards import MissingDataError
    from .data.fetch import FetchError
    from .encoders import EncoderContractError
    from .export import ExportError
    from .llm import LLMLoadError
    from .metrics.caption import CaptionMetricUnavailable
    from .registry import RegistryError
    from .runner import RunFailed
    from .train import TooManySkippedError

    try:
        return args.func(args)
    except (UserError, ConfigError, MissingDataError, EncoderContractError, RegistryError, RunFailed,
            TooManySkippedError, LLMLoadError, FetchError, CaptionMetricUnavailable, ExportError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1 if isinstance(err, (RunFailed, TooManySkippedError, FetchError)) else EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
