"""check-encoder: every contract breach gets its own message and fix; good encoders pass."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from xares_fusion.cli import main
from xares_fusion.encoders import EncoderContractError, check_encoder

HEADER = "import torch\n\n"
GOOD_FORWARD = """
    def forward(self, audio, audio_attention_mask=None):
        frames = audio.shape[-1] // 160
        return torch.zeros(audio.shape[0], frames, 8), None
"""


def _encoder_file(tmp_path: Path, body: str, base: str = "torch.nn.Module", init: str = "self.output_dim = 8") -> str:
    code = HEADER + textwrap.dedent(f"""
        class BrokenEncoder({base}):
            def __init__(self):
                super().__init__()
                {init}
        """) + textwrap.indent(textwrap.dedent(body), "    ")
    path = tmp_path / "broken_encoder.py"
    path.write_text(code)
    return str(path)


CASES = {
    "not a module": (dict(base="object", init="self.output_dim = 8", body=GOOD_FORWARD), "not a torch.nn.Module"),
    "no output_dim": (dict(init="pass", body=GOOD_FORWARD), "has no attribute 'output_dim'"),
    "forward signature": (dict(body="""
        def forward(self, audio):
            return torch.zeros(audio.shape[0], 5, 8), None
        """), r"does not take \(audio, audio_attention_mask\)"),
    "wrong rank": (dict(body="""
        def forward(self, audio, mask=None):
            return torch.zeros(audio.shape[0], 8), None
        """), "rank 2"),
    "batch mismatch": (dict(body="""
        def forward(self, audio, mask=None):
            return torch.zeros(1, 5, 8), None
        """), "batch of 2 clips but returned features for 1"),
    "dim mismatch": (dict(body="""
        def forward(self, audio, mask=None):
            return torch.zeros(audio.shape[0], 5, 16), None
        """), "D=16 but output_dim=8"),
    "mask length": (dict(body="""
        def forward(self, audio, mask=None):
            return torch.zeros(audio.shape[0], 5, 8), mask
        """), r"mask has shape \(2, 32000\) but features have 5 frames"),
    "nan": (dict(body="""
        def forward(self, audio, mask=None):
            out = torch.zeros(audio.shape[0], 5, 8)
            out[0, 0, 0] = float("nan")
            return out, None
        """), "1 NaN/Inf values"),
    "not a pair": (dict(body="""
        def forward(self, audio, mask=None):
            return torch.zeros(audio.shape[0], 5, 8)
        """), "expected a pair"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_breach_has_its_own_message(tmp_path: Path, case: str) -> None:
    kwargs, message = CASES[case]
    path = _encoder_file(tmp_path, kwargs["body"], kwargs.get("base", "torch.nn.Module"),
                         kwargs.get("init", "self.output_dim = 8"))
    with pytest.raises(EncoderContractError, match=message) as info:
        check_encoder(path)
    assert "Fix:" in str(info.value)


def test_messages_are_distinct(tmp_path: Path) -> None:
    messages = set()
    for case, (kwargs, _) in CASES.items():
        path = _encoder_file(tmp_path, kwargs["body"], kwargs.get("base", "torch.nn.Module"),
                             kwargs.get("init", "self.output_dim = 8"))
        with pytest.raises(EncoderContractError) as info:
            check_encoder(path)
        messages.add(str(info.value).split(":", 1)[1].split(".")[0])
    assert len(messages) == len(CASES)


def test_good_file_and_builtin_pass(tmp_path: Path) -> None:
    summary = check_encoder(_encoder_file(tmp_path, GOOD_FORWARD))
    assert summary["frames"] == [200, 200]  # mask None -> every frame of the padded batch counts
    summary = check_encoder("logmel")
    assert summary["frames"] == [101, 201] and summary["frame_rate_declared"] == 100.0


def test_cli_reports_pass_and_failure(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["check-encoder", "logmel", "--encoder-args", '{"n_mels": 40}']) == 0
    assert "PASS logmel: output_dim=40" in capsys.readouterr().out
    path = _encoder_file(tmp_path, CASES["dim mismatch"][0]["body"])
    assert main(["check-encoder", path]) == 2
    err = capsys.readouterr().err
    assert "D=16 but output_dim=8" in err and "Traceback" not in err


def test_hub_model_missing_offline_is_one_line_naming_model_and_fix(tmp_path: Path) -> None:
    # An official-example style encoder loading a hub id that is not cached, with the hub off:
    # one line (model id, why, fix), exit status 2, no traceback.
    import os
    import subprocess
    import sys

    path = tmp_path / "hub_encoder.py"
    path.write_text(textwrap.dedent("""
        import torch
        from transformers import WhisperFeatureExtractor


        class HubEncoder(torch.nn.Module):
            def __init__(self, model_name="nobody/no-such-model"):
                super().__init__()
                self.processor = WhisperFeatureExtractor.from_pretrained(model_name)
                self.output_dim = 8

            def forward(self, audio, audio_attention_mask=None):
                return torch.zeros(audio.shape[0], 1, 8), None
        """))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty_cache")}
    proc = subprocess.run([sys.executable, "-m", "xares_fusion.cli", "check-encoder", str(path)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1
    assert "could not load 'nobody/no-such-model': HF_HUB_OFFLINE is set" in lines[0]
    assert "--encoder-args" in lines[0]
