"""Every shell command of the README works as written, or is explicitly excused.

The commands are read from the README's ```bash blocks. Each is in exactly one list below: RUN
(run as written, cheap), PARSE (the command line is parsed by the real parser, so its subcommand,
arguments and options exist; running it would train or download for long) or EXCUSED (not an
`xares-fusion` command, with the reason). A new README command in none of them fails the test.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from xares_fusion.cli import build_parser
from xares_fusion.demo import demo_requests

REPO = Path(__file__).resolve().parents[1]

RUN = {"xares-fusion list", "xares-fusion validate"}
PARSE = {
    "xares-fusion check-encoder my_encoder.py",
    "xares-fusion run my_encoder.py synthetic",
    "xares-fusion run logmel synthetic tones --limit 20",
    "xares-fusion run ENCODER TRAIN EVAL --set optim.lr=5e-5 --max-steps 500 --encoder-args '{\"n_mels\": 64}'",
    "xares-fusion score experiments/demo/logmel/predictions_mini-keywords.csv",
    "xares-fusion --import my_plugin run my-encoder synthetic",
    "xares-fusion run whisper task1 --feature-cache readwrite",
    "xares-fusion run whisper task1 --feature-cache read --cache-dtype fp32",
    "xares-fusion run whisper task1 --precision bf16 --tf32",
    "xares-fusion cache-features whisper mini --recipe task1",
    "xares-fusion export-model whisper-base-offline /tmp/whisper-base",
    "xares-fusion check-encoder examples/xares-llm/whisper_base.py "
    """--encoder-args '{"model_name": "/tmp/whisper-base"}'""",
    "xares-fusion run recipes/fusion/gated-stft.yaml task1 task1",
    'xares-fusion run gated task1 --encoder-args \'{"encoders": ["whisper", "dasheng"], "dim": 512}\'',
    "xares-fusion demo --with-fusion",
    "xares-fusion leaderboard experiments/ --baseline logmel",
    "xares-fusion leaderboard runs/ --format latex --out board/",
    "xares-fusion leaderboard experiments/ --with-reference",
    "xares-fusion leaderboard --update-readme",
    "xares-fusion leaderboard experiments/ --compare gated logmel",
    "xares-fusion fetch-data task1",
    "xares-fusion run my_encoder.py task1",
    "xares-fusion run my_encoder.py all all",
    "xares-fusion run my_encoder.py esc-50",
}
EXCUSED = {
    "make demo": "the whole set-up and a 15-minute demo; the demo's parts are tested in test_demo.py",
    "make test": "this test suite itself",
    "xares-fusion bench [ENCODER] [--steps 10 --rows 32 --precision bf16]": "a usage line: [..] marks optional parts",
    "accelerate launch --multi_gpu --num_processes 4 -m xares_fusion.cli run my_encoder.py synthetic": "needs GPUs",
    "ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 -m xares_fusion.cli run logmel synthetic tones": (
        "two-process runs are tested in test_end_to_end.py"
    ),
}


def readme_commands() -> list[str]:
    """The command of every line of the README's bash blocks (comments and blank lines dropped)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    lines = [line for block in re.findall(r"```bash\n(.*?)```", text, re.S) for line in block.splitlines()]
    return list(dict.fromkeys(re.split(r"\s+#", line)[0].strip() for line in lines if line.strip()))


def test_every_readme_command_is_run_parsed_or_excused() -> None:
    commands = set(readme_commands())
    assert commands - RUN - PARSE - set(EXCUSED) == set(), "a new README command: add it to RUN, PARSE or EXCUSED"
    assert (RUN | PARSE | set(EXCUSED)) - commands == set(), "a listed command is no longer in the README"


@pytest.mark.parametrize("command", sorted(PARSE))
def test_readme_command_parses(command: str) -> None:
    argv = shlex.split(command)[1:]
    args = build_parser(argv).parse_args(argv)
    assert callable(args.func)


@pytest.mark.parametrize("command", sorted(RUN))
def test_readme_command_runs(command: str) -> None:
    argv = shlex.split(command)[1:]
    done = subprocess.run([sys.executable, "-m", "xares_fusion.cli", *argv], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr


def test_score_example_reads_a_file_the_demo_writes() -> None:
    """`make demo` runs first in the README; the score example's file is one the demo writes."""
    from xares_fusion.config import load_eval_tasks, load_recipe

    (command,) = [c for c in PARSE if c.startswith("xares-fusion score ")]
    path = Path(shlex.split(command)[2])
    requests = demo_requests(Path("experiments") / "demo", None, None, True, with_fusion=False)
    written = {
        request.output_dir / f"predictions_{task.name}.csv"
        for request in requests.values()
        for task in load_eval_tasks(request.eval or load_recipe(request.train).eval)[1]
    }
    assert path in written
