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
        return audio[:, : frames * 160].reshape(audio.shape[0], frames, 160)[..., :8], None
"""


def _framed(mask: str = "None", features: str = "features") -> str:
    """A forward returning the good encoder's features (or an expression of them) and ``mask``."""
    return f"""
    def forward(self, audio, mask=None):
        frames = audio.shape[-1] // 160
        features = audio[:, : frames * 160].reshape(audio.shape[0], frames, 160)[..., :8]
        return {features}, {mask}
    """


def _encoder_file(tmp_path: Path, body: str, base: str = "torch.nn.Module", init: str = "self.output_dim = 8") -> str:
    code = (
        HEADER
        + textwrap.dedent(f"""
        class BrokenEncoder({base}):
            def __init__(self):
                super().__init__()
                {init}
        """)
        + textwrap.indent(textwrap.dedent(body), "    ")
    )
    path = tmp_path / "broken_encoder.py"
    path.write_text(code)
    return str(path)


CASES = {
    "not a module": (dict(base="object", init="self.output_dim = 8", body=GOOD_FORWARD), "not a torch.nn.Module"),
    "no output_dim": (dict(init="pass", body=GOOD_FORWARD), "has no attribute 'output_dim'"),
    "forward signature": (
        dict(
            body="""
        def forward(self, audio):
            return torch.zeros(audio.shape[0], 5, 8), None
        """
        ),
        r"does not take \(audio, audio_attention_mask\)",
    ),
    "wrong rank": (
        dict(
            body="""
        def forward(self, audio, mask=None):
            return torch.zeros(audio.shape[0], 8), None
        """
        ),
        "rank 2",
    ),
    "batch mismatch": (
        dict(
            body="""
        def forward(self, audio, mask=None):
            return torch.zeros(1, 5, 8), None
        """
        ),
        "batch of 2 clips but returned features for 1",
    ),
    "dim mismatch": (
        dict(
            body="""
        def forward(self, audio, mask=None):
            return torch.zeros(audio.shape[0], 5, 16), None
        """
        ),
        "D=16 but output_dim=8",
    ),
    "mask length": (
        dict(
            body="""
        def forward(self, audio, mask=None):
            return torch.zeros(audio.shape[0], 5, 8), mask
        """
        ),
        r"mask has 32000 entries but the features have 5 frames .*sample-level audio_attention_mask.*"
        r"Fix: return None \(every frame valid\) or a frame-level \[B, T\] mask",
    ),
    "nan": (
        dict(
            body="""
        def forward(self, audio, mask=None):
            out = torch.zeros(audio.shape[0], 5, 8)
            out[0, 0, 0] = float("nan")
            return out, None
        """
        ),
        "1 NaN/Inf values",
    ),
    # What the checker let through before (issue 17, class 2): each fails later in training.
    "all zero": (
        dict(body=_framed(features="torch.zeros_like(features)")),
        "every feature value is 0.0 for different random clips: the output does not depend on the audio",
    ),
    "same for every clip": (
        dict(
            body=_framed(
                features="torch.arange(features[0].numel()).reshape(features[0].shape).float().expand_as(features)"
            )
        ),
        "two different random clips give the same features",
    ),
    "soft mask": (
        dict(body=_framed(mask="torch.full(features.shape[:2], 0.5)")),
        r"mask holds values other than 0 and 1 \(e.g. \[0.5\], dtype torch.float32\).*bool or integer mask",
    ),
    "clip without a valid frame": (
        dict(body=_framed(mask="torch.tensor([[0], [1]]).expand(features.shape[:2])")),
        r"clip\(s\) \[0\] of the batch have no valid frame",
    ),
    "meta device": (
        dict(body=_framed(features="features.to('meta')")),
        "features are on device 'meta' but the input audio is on 'cpu'.*a 'meta' tensor holds no values",
    ),
    "mask on another device": (
        dict(body=_framed(mask="torch.ones(features.shape[:2], device='meta')")),
        "the mask is on device 'meta' but the input audio is on 'cpu'",
    ),
    "integer features": (
        dict(body=_framed(features="(features * 1000).long()")),
        "features have dtype torch.int64; the projector needs floating point",
    ),
    "not a pair": (
        dict(
            body="""
        def forward(self, audio, mask=None):
            return torch.zeros(audio.shape[0], 5, 8)
        """
        ),
        "expected a pair",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_breach_has_its_own_message(tmp_path: Path, case: str) -> None:
    kwargs, message = CASES[case]
    path = _encoder_file(
        tmp_path, kwargs["body"], kwargs.get("base", "torch.nn.Module"), kwargs.get("init", "self.output_dim = 8")
    )
    with pytest.raises(EncoderContractError, match=message) as info:
        check_encoder(path)
    assert "Fix:" in str(info.value)


def test_messages_are_distinct(tmp_path: Path) -> None:
    messages = set()
    for kwargs, _ in CASES.values():
        path = _encoder_file(
            tmp_path, kwargs["body"], kwargs.get("base", "torch.nn.Module"), kwargs.get("init", "self.output_dim = 8")
        )
        with pytest.raises(EncoderContractError) as info:
            check_encoder(path)
        messages.add(str(info.value).split(":", 1)[1].split(".")[0])
    assert len(messages) == len(CASES)


def test_good_file_and_builtin_pass(tmp_path: Path) -> None:
    summary = check_encoder(_encoder_file(tmp_path, GOOD_FORWARD))
    assert summary["frames"] == [200, 200]  # mask None -> every frame of the padded batch counts
    # A mask of 0/1 passes as bool, integer or float; so does a clip whose padded frames are all zero.
    for mask in ("torch.ones(features.shape[:2], dtype=torch.bool)", "(features[..., 0] != 0).long()"):
        assert check_encoder(_encoder_file(tmp_path, _framed(mask=mask)))["frames"][1] == 200
    summary = check_encoder("logmel")
    assert summary["frames"] == [101, 201] and summary["frame_rate_declared"] == 100.0


def test_cli_reports_pass_and_failure(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["check-encoder", "logmel", "--encoder-args", '{"n_mels": 40}']) == 0
    assert "PASS logmel: output_dim=40" in capsys.readouterr().out
    path = _encoder_file(tmp_path, CASES["dim mismatch"][0]["body"])
    assert main(["check-encoder", path]) == 5  # EncoderError
    err = capsys.readouterr().err
    assert "D=16 but output_dim=8" in err and "Traceback" not in err
    for case in ("meta device", "soft mask", "all zero"):  # the meta device was a traceback
        assert main(["check-encoder", _encoder_file(tmp_path, CASES[case][0]["body"])]) == 5
        err = capsys.readouterr().err
        assert err.startswith("error: encoder") and "Fix:" in err and "Traceback" not in err
