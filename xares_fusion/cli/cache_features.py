"""`xares-fusion cache-features`: fill the feature cache for every clip of some tasks' shards.

The encoder is built as `run` builds it (the recipe's seed, ``--encoder-args``, ``--set``), and
features are computed in the recipe's precision with its TF32 setting on this device, so a
later `run` with the same recipe, options and device reads them (``--feature-cache read``). Under
``torch.distributed.run`` the shards are shared out by rank. Clips already cached are not
decoded.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import UserError, json_object


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``cache-features`` subcommand."""
    parser = subparsers.add_parser(
        "cache-features", help="fill the feature cache for every clip of some tasks' train and eval shards"
    )
    parser.add_argument("encoder", help="registered name, path/to/file.py[:Class], package.module.Class or fusion YAML")
    parser.add_argument("tasks", help="task or group name or YAML path, as `run` takes it (e.g. mini)")
    parser.add_argument(
        "--recipe", default="all", help="recipe whose seed, precision and speed settings `run` will use (default: all)"
    )
    parser.add_argument("--encoder-args", type=json_object, default={}, help="JSON kwargs for the encoder")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field (repeatable)"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="clips encoded together (default: 8)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    """Resolve the recipe, encoder and shards, print the size estimate, then fill the cache."""
    import torch
    from accelerate.utils import gather_object, set_seed
    from tqdm.auto import tqdm

    from ..config import load_eval_tasks
    from ..data.batching import pad_audio
    from ..data.samples import SkipCounter, audio_seconds, iter_samples
    from ..data.shards import require_shards
    from ..encoders import build_encoder
    from ..encoders.contract import as_front_end, declared_extras
    from ..feature_cache import FeatureCache
    from ..fusion.base import FusionFrontEnd
    from ..paths import cache_home
    from ..runner import RunRequest, _ensure_generated, apply_tf32, make_accelerator, process_state
    from ..runner.planning import _is_front_end_file, _resolve_recipe

    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    front_end_file = args.encoder if _is_front_end_file(args.encoder) else None
    request = RunRequest(args.encoder, args.recipe, encoder_args=args.encoder_args, overrides=args.set)
    recipe = _resolve_recipe(request, front_end_file)
    _, tasks = load_eval_tasks(args.tasks)
    splits = [(task, split) for task in tasks for split in ("train", "eval") if getattr(task, split) is not None]
    state = process_state()
    if state.is_main_process:
        for task, split in splits:
            _ensure_generated(task, split)
    state.wait_for_everyone()
    shards: dict[Path, str | None] = {}  # every shard once, with the label key its first split reads
    for task, split in splits:
        for path in require_shards(task.split(split), task.name, split):
            shards.setdefault(path, task.key_for(split))

    accelerator = make_accelerator(recipe.optim.precision)
    set_seed(recipe.optim.seed)  # as `run` seeds before building the encoder: same weights, same key
    encoder = build_encoder(recipe.model.encoder, recipe.model.encoder_args).to(accelerator.device)
    apply_tf32(recipe)
    front_end = as_front_end(encoder)
    if isinstance(front_end, FusionFrontEnd) and front_end.needs_hidden_states:
        raise UserError(f"{recipe.model.encoder}: this fusion reads every layer's output, which is never cached")
    frozen = [e for e in (front_end.sub_encoders() or [encoder]) if not declared_extras(e).trainable]
    if not frozen:
        raise UserError(f"{recipe.model.encoder}: no frozen encoder to cache (every encoder trains)")
    cache = FeatureCache(cache_home() / "features", "readwrite", recipe.speed.cache_dtype, recipe.optim.precision)
    device_type = accelerator.device.type

    mine = list(shards)[accelerator.process_index :: accelerator.num_processes]
    clips, seconds = audio_seconds(mine)
    totals = gather_object([(clips, seconds)])
    all_clips, all_seconds = sum(c for c, _ in totals), sum(s for _, s in totals)
    per_second = sum(cache.bytes_per_second(e) for e in frozen)
    if accelerator.is_main_process:
        print(
            f"{len(shards)} shards, {all_clips} clips, {all_seconds / 3600:.2f} h of audio: about "
            f"{all_seconds * per_second / 2**20:.1f} MiB in {cache.root} ({cache.dtype}, "
            f"{recipe.optim.precision}, {device_type}), less what is already cached",
            flush=True,
        )
    bar = tqdm(total=clips, unit="clip", desc="cache-features", disable=args.no_progress or not state.is_main_process)

    def cached(clip: object) -> bool | None:
        """True (the clip is not decoded) when every frozen encoder has it stored."""
        return True if all(cache.contains(e, clip, device_type) for e in frozen) else None

    def encode(batch: list) -> None:
        batch.sort(key=lambda s: len(s.audio), reverse=True)  # less padding
        for start in range(0, len(batch), args.batch_size):
            part = batch[start : start + args.batch_size]
            audio, mask = (t.to(accelerator.device) for t in pad_audio([s.audio for s in part]))
            with accelerator.autocast(), torch.no_grad():
                for sub_encoder in frozen:
                    cache.encode(sub_encoder, audio, mask, [s.clip for s in part])
        bar.update(len(batch))

    already = skipped = 0
    for path in mine:
        counter, pending = SkipCounter(), []
        for sample in iter_samples([path], shards[path], counter, lookup=cached):
            if sample.features is not None:
                already += 1
                bar.update(1)
            elif sample.audio is not None:
                pending.append(sample)
            if len(pending) >= 16 * args.batch_size:  # a window sorted by length, bounded in memory
                encode(pending)
                pending = []
        if pending:
            encode(pending)
        skipped += counter.skipped
    bar.close()
    counts = gather_object([(already, cache.misses // len(frozen), skipped)])
    if accelerator.is_main_process:
        done, new, bad = (sum(c[i] for c in counts) for i in range(3))
        print(f"feature cache: {new} clips encoded and stored, {done} were cached already, {bad} samples skipped")
    return 0
