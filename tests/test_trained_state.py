"""What training changes is what a run saves: a frozen encoder that runs in train mode (the
official behaviour) moves its BatchNorm running statistics every step without a gradient, and a
model reloaded from the run's final weights or a checkpoint must see the moved statistics, not
the pretrained ones."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file
from shard_helpers import TONES_RECIPE

from xares_fusion.runner import RunRequest, build_model, make_accelerator, plan_run, train_stages
from xares_fusion.train import FINAL_WEIGHTS, last_good_checkpoint, load_final

ENCODER = '''
import torch


class NormedFramesEncoder(torch.nn.Module):
    """Frames of 320 samples through a linear map and a BatchNorm over the feature size."""

    def __init__(self) -> None:
        super().__init__()
        self.output_dim, self.frame_rate = 16, 50.0
        self.proj = torch.nn.Linear(320, 16)
        self.norm = torch.nn.BatchNorm1d(16)

    def forward(self, audio, audio_attention_mask=None):
        frames = audio[:, : audio.shape[1] // 320 * 320].unflatten(1, (-1, 320))
        features = self.norm(self.proj(frames).transpose(1, 2)).transpose(1, 2)
        if audio_attention_mask is None:
            return features, None
        return features, audio_attention_mask[:, 319::320][:, : features.shape[1]]
'''

# The smoke recipe of the tones task, shortened: 6 steps, a checkpoint at step 3.
_RECIPE = yaml.safe_load(TONES_RECIPE)
_RECIPE["data"]["shuffle_buffer"] = 8
_RECIPE["optim"].update(max_steps=6, warmup_steps=2, batch_size=4, save_steps=3, log_steps=3)
RECIPE = yaml.safe_dump(_RECIPE)


def test_reloaded_model_sees_the_batchnorm_statistics_training_moved(tmp_path: Path, synthetic_root: Path) -> None:
    (tmp_path / "normed.py").write_text(ENCODER)
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    request = RunRequest(
        encoder=str(tmp_path / "normed.py"),
        train=str(tmp_path / "recipe.yaml"),
        eval="tones",
        output_dir=tmp_path / "run",
        progress=False,
    )
    plan = plan_run(request)
    accelerator = make_accelerator("fp32")
    vocab = [s.task for s in plan.sources]
    trained = build_model(plan.recipe, vocab)
    initial_mean = trained.encoder.norm.running_mean.clone()
    train_stages(trained, plan, request, accelerator)
    moved = trained.encoder.norm.running_mean
    assert not torch.equal(moved, initial_mean)  # frozen, yet updated: the encoder ran in train mode
    assert not any(p.requires_grad for p in trained.encoder.parameters())

    reloaded = build_model(plan.recipe, vocab)
    assert load_final(reloaded, plan.run_dir) is not None
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(getattr(reloaded.encoder.norm, name), getattr(trained.encoder.norm, name)), name
    trained.eval(), reloaded.eval()
    audio = torch.randn(2, 16000)
    with torch.no_grad():
        torch.testing.assert_close(reloaded.encoder(audio)[0], trained.encoder(audio)[0], rtol=0, atol=0)

    checkpoint = last_good_checkpoint(plan.run_dir)
    assert checkpoint is not None and checkpoint["step"] in (3, 6)
    for state in (load_file(plan.run_dir / FINAL_WEIGHTS), checkpoint["trainable"]):
        assert {"encoder.norm.running_mean", "encoder.norm.running_var"} <= set(state)
        assert "encoder.proj.weight" not in state  # frozen parameters are not saved


# Trains the recipe on this process (run under torch.distributed.run), then saves its buffers.
WORKER = """
import sys
from pathlib import Path

import torch

from xares_fusion.model import persistent_buffers
from xares_fusion.runner import RunRequest, build_run_model, make_accelerator, plan_run, process_state, train_stages

encoder, recipe, out = sys.argv[1:4]
request = RunRequest(encoder=encoder, train=recipe, eval="tones", output_dir=Path(out) / "run", progress=False)
plan = plan_run(request, process_state())
accelerator = make_accelerator("fp32")
model = build_run_model(plan, accelerator)
train_stages(model, plan, request, accelerator)
torch.save(dict(persistent_buffers(model)), Path(out) / f"rank{accelerator.process_index}.pt")
"""


def test_every_process_evaluates_with_the_saved_statistics(tmp_path: Path, synthetic_root: Path) -> None:
    """On two processes each rank's last forward moves its own copy of the running statistics;
    after training every rank holds rank 0's, which are the ones saved (evaluation is sharded over
    the ranks, so a rank with other statistics would score its rows with another model)."""
    (tmp_path / "normed.py").write_text(ENCODER.replace("BatchNorm1d(16)", "BatchNorm1d(16, momentum=1.0)"))
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    (tmp_path / "worker.py").write_text(WORKER)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(tmp_path / "worker.py")]
    command += [str(tmp_path / "normed.py"), str(tmp_path / "recipe.yaml"), str(tmp_path)]
    done = subprocess.run(
        command, env={**os.environ, "ACCELERATE_USE_CPU": "1"}, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    saved = load_file(tmp_path / "run" / FINAL_WEIGHTS)
    assert set(ranks[0]) == set(ranks[1]) and "encoder.norm.running_mean" in ranks[0]
    for name, value in ranks[0].items():
        assert torch.equal(ranks[1][name], value), name
        assert torch.equal(saved[name], value), name
