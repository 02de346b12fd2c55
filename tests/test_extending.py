"""The worked examples of docs/extending.md run: examples/extending/ holds a task, an encoder, a
fusion, a projector and a metric, each used here the way the document tells a user to use it."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from xares_fusion.cli import main as cli_main
from xares_fusion.config import load_task
from xares_fusion.encoders import build_encoder, check_encoder
from xares_fusion.registry import load_module_from_file

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "extending"
SR = 16000


@pytest.fixture(scope="module", autouse=True)
def plugins() -> dict[str, object]:
    """Each example module imported once, as run_with_plugins.py does (a module registers its
    names on import; a second import of the same file would register them twice)."""
    return {
        name: load_module_from_file(EXAMPLES / f"{name}.py")
        for name in ("my_encoder", "my_fusion", "my_projector", "my_metric")
    }


def _cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """The command line in a fresh process (files given by path are loaded there, once)."""
    code = "import sys; from xares_fusion.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def _clips(seconds: list[float], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    lengths = [int(s * SR) for s in seconds]
    audio, mask = torch.zeros(len(lengths), max(lengths)), torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for i, n in enumerate(lengths):
        audio[i, :n] = 0.1 * torch.randn(n, generator=gen)
        mask[i, :n] = 1
    return audio, mask


# -- the encoder ------------------------------------------------------------------------------


def test_encoder_file_passes_the_checker_on_the_command_line() -> None:
    done = _cli("check-encoder", "examples/extending/my_encoder.py", "--encoder-args", '{"n_bands": 40}')
    assert done.returncode == 0, done.stderr
    # 1 s and 2 s clips at hop 320: 50 and 100 valid frames, 50 frames/s declared.
    assert "PASS" in done.stdout and "output_dim=40" in done.stdout and "[50, 100]" in done.stdout, done.stdout


def test_registered_encoder_frames_mask_and_batch_independence() -> None:
    summary = check_encoder("band-energy")
    assert summary["output_dim"] == 64 and summary["frames"] == [50, 100] and summary["frame_rate_declared"] == 50
    encoder = build_encoder("band-energy", {"n_bands": 16})
    audio, mask = _clips([0.5, 1.3])
    features, frame_mask = encoder(audio, mask)
    assert features.shape == (2, 65, 16)
    assert frame_mask.sum(-1).tolist() == [8000 // 320, 20800 // 320]
    assert torch.all(features[0, 25:] == 0)  # padding frames are zero
    alone, _ = encoder(audio[:1, :8000], mask[:1, :8000])
    torch.testing.assert_close(alone[0], features[0, :25])  # same features alone as in a batch
    with torch.autocast("cpu", dtype=torch.float16):  # the spectrum stays fp32 under autocast
        half, _ = encoder(audio, mask)
    assert half.dtype == torch.float32 and torch.isfinite(half).all()


# -- the fusion -------------------------------------------------------------------------------


def test_fusion_over_two_builtin_encoders_gives_the_declared_dim_and_the_common_mask() -> None:
    args = {"encoders": ["logmel", {"name": "random", "args": {"output_dim": 48}}], "dim": 32}
    fusion = build_encoder("scalar-mix", args)
    summary = check_encoder("scalar-mix", args)
    assert summary["output_dim"] == 32
    seconds = [0.5, 1.0]
    audio, mask = _clips(seconds)
    fusion.train()
    features, fused_mask = fusion(audio, mask)
    # Reference stream: logmel, 100 frames/s, n // 160 + 1 frames; random runs at 50 frames/s with
    # n // 320 frames, each repeated twice. A frame is kept where both streams are valid.
    expected = [min(int(s * SR) // 160 + 1, 2 * (int(s * SR) // 320)) for s in seconds]
    assert features.shape == (2, int(seconds[-1] * SR) // 160 + 1, 32)
    assert fused_mask.sum(-1).tolist() == expected == [50, 100]
    assert torch.all(features[0, 50:] == 0) and torch.all(features[0, :50].abs().sum(-1) > 0)
    # The weights start uniform, so the balance loss starts at exactly 0; it takes a gradient.
    assert fusion.aux_losses["mix_balance"].item() == pytest.approx(0.0, abs=1e-7)
    features.pow(2).mean().backward()
    assert fusion.mix.grad is not None and all(p.grad is not None for p in fusion.projs.parameters())
    assert all(p.grad is None for p in fusion.encoders.parameters())  # sub-encoders stay frozen
    # In eval mode the mixing weights are recorded per task.
    fusion.eval()
    with torch.no_grad():
        fusion(audio, mask)
    stats = fusion.routing_stats()["per_task"]["all"]["mix_weights"]
    assert stats == pytest.approx([0.5, 0.5])


# -- the projector ----------------------------------------------------------------------------


def test_projector_maps_features_to_the_llm_width_inside_a_tiny_model(toy_llm) -> None:
    from xares_fusion.config import LoraSpec
    from xares_fusion.llm import apply_lora
    from xares_fusion.model import AudioLLM
    from xares_fusion.projectors import build_projector

    torch.manual_seed(0)
    llm, tokenizer = toy_llm
    llm = apply_lora(llm.__class__.from_pretrained(llm.config._name_or_path), LoraSpec())
    encoder = build_encoder("band-energy", {"n_bands": 24})
    projector = build_projector("stack-mlp", encoder.output_dim, llm.config.hidden_size, {"stack": 4, "hidden": 48})
    model = AudioLLM(encoder, projector, llm, tokenizer)
    audio, mask = _clips([0.5, 1.0])
    features, frame_mask = encoder(audio, mask)  # 25 and 50 valid frames of 50
    embeds, embed_mask = projector(features, frame_mask)
    assert embeds.shape == (2, math.ceil(50 / 4), llm.config.hidden_size)
    assert embed_mask.sum(-1).tolist() == [math.ceil(25 / 4), math.ceil(50 / 4)] == [7, 13]
    model.train()
    out = model(audio, mask, ["Which household sound is this?"] * 2, ["doorbell", "knock"])
    assert torch.isfinite(out.lm_loss) and out.num_target_tokens > 0
    out.lm_loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in projector.parameters())
    assert all(p.grad is None for n, p in model.llm.named_parameters() if "lora_" not in n)  # LLM stays frozen
    model.eval()
    answers = model.generate(audio, mask, ["Which household sound is this?"] * 2, max_new_tokens=3)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


# -- the metric -------------------------------------------------------------------------------


def test_metric_scores_a_hand_computed_case_exactly() -> None:
    from xares_fusion.metrics import score

    predictions = ["A dog barks.", "cat", "", "Rain-drops on a roof"]
    references = ["the dog barks loudly", "a cat", "", "raindrops on the roof"]
    # Row by row after normalisation (lower case, punctuation removed, hyphen -> space):
    #   {a, dog, barks} vs {the, dog, barks, loudly}: 2 shared -> 2*2/(3+4) = 4/7
    #   {cat} vs {a, cat}: 1 shared -> 2/3
    #   both empty -> empty_score (1 by default, 0 below)
    #   {rain, drops, on, a, roof} vs {raindrops, on, the, roof}: 2 shared -> 4/9
    expected = (4 / 7 + 2 / 3 + 1 + 4 / 9) / 4
    assert score("TokenF1", predictions, references) == pytest.approx(expected, abs=1e-12)
    assert score("TokenF1", predictions, references, empty_score=0.0) == pytest.approx(expected - 1 / 4, abs=1e-12)
    with pytest.raises(ValueError, match="does not take arguments"):
        score("TokenF1", predictions, references, num_classes=3)


# -- the task, and all of them in one run -----------------------------------------------------


def test_task_yaml_loads_and_validates() -> None:
    task = load_task(EXAMPLES / "my_task.yaml")
    assert (task.name, task.metric, task.key, task.weight) == ("my-home-sounds", "Accuracy", "label", 1.0)
    assert task.prompt_for("eval") == "Which household sound is this?"
    assert task.generation == {"max_new_tokens": 150, "repetition_penalty": 1.05}  # official defaults
    assert task.split("train").shards == ["my_data/home-sounds/train-{000..001}.tar"]
    assert task.split("eval").batch_size == 8
    assert cli_main(["validate", str(EXAMPLES / "my_task.yaml")]) == 0


def _write_home_sounds(root: Path) -> None:
    """Tiny shards in the official format where my_task.yaml expects them (relative to root)."""
    from xares_fusion.data.shard_writer import write_shard

    rng = np.random.default_rng(0)
    t = np.arange(int(0.6 * SR)) / SR
    sounds = {
        "doorbell": lambda: (
            0.3 * np.sin(2 * np.pi * 660 * t) * (t < 0.3) + 0.3 * np.sin(2 * np.pi * 550 * t) * (t >= 0.3)
        ),
        "knock": lambda: np.where((t * 5) % 1 < 0.02, 0.8, 0.0) * rng.standard_normal(t.size),
        "kettle": lambda: 0.1 * rng.standard_normal(t.size),
    }
    labels = list(sounds)
    base = root / "my_data" / "home-sounds"
    for shard, count in (("train-000", 6), ("train-001", 6), ("test-000", 6)):
        write_shard(
            base / f"{shard}.tar",
            [
                (f"{shard}-{i:03d}", sounds[labels[i % 3]]().astype(np.float32), {"label": labels[i % 3]})
                for i in range(count)
            ],
        )


def test_all_examples_in_one_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Train the toy LLM for two steps on my_task.yaml with the band-energy encoder and the
    stack-mlp projector, evaluate the task, then rescore its predictions with TokenF1."""
    _write_home_sounds(tmp_path)
    monkeypatch.chdir(tmp_path)  # the task's shard paths are relative to here
    # A variant of the task with short answers (extends: only what differs), for a fast test.
    task = str(tmp_path / "my_task_short.yaml")
    Path(task).write_text(f"extends: {EXAMPLES / 'my_task.yaml'}\ngeneration: {{max_new_tokens: 6}}\n")
    out = tmp_path / "run"
    code = cli_main(
        [
            "run",
            "band-energy",
            "synthetic",
            task,
            "--max-steps",
            "2",
            "--limit",
            "4",
            "--output-dir",
            str(out),
            "--no-progress",
            "--set",
            f"data.mixture=[{{task: '{task}'}}]",
            "--set",
            "model.projector.name=stack-mlp",
            "--set",
            "model.projector.args={stack: 2}",
            "--set",
            "optim.batch_size=2",
            "--set",
            "data.num_workers=0",
        ]
    )
    assert code == 0
    scores = pd.read_csv(out / "scores.tsv", sep="\t")
    row = scores[scores["Task"] == "my-home-sounds"].iloc[0]
    assert row["metric"] == "Accuracy" and 0.0 <= float(row["score"]) <= 1.0
    predictions = pd.read_csv(out / "predictions_my-home-sounds.csv", keep_default_na=False)
    assert len(predictions) == 4 and set(predictions["labels"]) <= {"doorbell", "knock", "kettle"}
    # The metric rescoring the run's predictions from the command line, as with any metric.
    from xares_fusion.metrics import score

    expected = score("TokenF1", list(predictions["predict"]), list(predictions["labels"]))
    capsys.readouterr()
    assert cli_main(["score", str(out / "predictions_my-home-sounds.csv"), "--metric", "TokenF1"]) == 0
    assert capsys.readouterr().out.startswith(f"TokenF1\t{expected:.6f}\t(4 rows")


def test_launcher_registers_every_example_name() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "run_with_plugins.py"), "list", "all"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line)
    assert {"band-energy", "scalar-mix"} <= set(lines["encoders"].split(", "))
    assert "TokenF1" in lines["metrics"].split(", ")


def test_extending_doc_quotes_the_example_files_verbatim() -> None:
    """Every code block of docs/extending.md that starts with '# examples/extending/FILE' is a
    verbatim excerpt of that file, so the page cannot drift from the code the tests run."""
    text = (REPO / "docs" / "extending.md").read_text()
    blocks = [block.split("\n", 1)[1] for block in text.split("```")[1::2]]
    quoted = 0
    for block in blocks:
        first, _, body = block.partition("\n")
        if first.startswith("# examples/extending/"):
            source = (REPO / first[2:].strip()).read_text()
            assert body.rstrip("\n") in source, f"docs/extending.md quotes {first[2:]} out of date:\n{body}"
            quoted += 1
    assert quoted >= 5
