"""What training changes is what a run saves: a frozen encoder that runs in train mode (the
official behaviour) moves its BatchNorm running statistics every step without a gradient, and a
model reloaded from the run's final weights or a checkpoint must see the moved statistics, not
the pretrained ones."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

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

RECIPE = """
name: trained-state
model:
  llm: {name_or_path: toy-llama}
data:
  mixture: [{task: tones}]
  shuffle_buffer: 8
optim:
  max_steps: 6
  lr: 3.0e-3
  warmup_steps: 2
  batch_size: 4
  save_steps: 3
  log_steps: 3
"""


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
