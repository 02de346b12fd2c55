"""Encoder references: registered names, files (with and without :Class), dotted paths, entry points."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from xares_fusion.encoders import build_encoder
from xares_fusion.registry import ENCODERS, RegistryError, register_encoder, resolve_encoder_factory

XARES_STYLE = textwrap.dedent("""
    import torch


    class DummyEncoder(torch.nn.Module):
        def __init__(self, **kwargs) -> None:
            super().__init__()
            self.output_dim = 256

        def forward(self, audio, audio_attention_mask=None):
            return torch.zeros(len(audio), 10, self.output_dim), None
""")


def test_builtin_and_decorator() -> None:
    assert type(build_encoder("logmel", {"n_mels": 40})).__name__ == "LogMelEncoder"

    @register_encoder("test-only-encoder")
    class _Enc(torch.nn.Module):
        output_dim = 3

    try:
        assert resolve_encoder_factory("test-only-encoder") is _Enc
    finally:
        ENCODERS._items.pop("test-only-encoder")


def test_xares_llm_encoder_file_loads_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "dummyencoder.py"
    path.write_text(XARES_STYLE)
    encoder = build_encoder(str(path))
    assert type(encoder).__name__ == "DummyEncoder" and encoder.output_dim == 256


def test_registering_file_resolves_twice_to_the_same_class(tmp_path: Path) -> None:
    """A file loaded by path once per use (bench builds one model per mode) is executed only once,
    so its ``@register_encoder`` does not find its own name taken."""
    path = tmp_path / "registering.py"
    decorated = XARES_STYLE.replace("class DummyEncoder", "@register_encoder('test-file-encoder')\nclass DummyEncoder")
    path.write_text("from xares_fusion.registry import register_encoder\n" + decorated)
    try:
        first = resolve_encoder_factory(str(path))
        assert resolve_encoder_factory(str(path)) is first
        assert ENCODERS.get("test-file-encoder") is first
    finally:
        ENCODERS._items.pop("test-file-encoder", None)


def test_file_with_class_and_ambiguous_file(tmp_path: Path) -> None:
    path = tmp_path / "two.py"
    path.write_text(XARES_STYLE + XARES_STYLE.replace("DummyEncoder", "OtherEncoder"))
    with pytest.raises(RegistryError, match=r"2 candidate classes \['DummyEncoder', 'OtherEncoder'\]"):
        build_encoder(str(path))
    assert type(build_encoder(f"{path}:OtherEncoder")).__name__ == "OtherEncoder"
    with pytest.raises(RegistryError, match="has no attribute 'Missing'"):
        build_encoder(f"{path}:Missing")


def test_dotted_path() -> None:
    assert resolve_encoder_factory("xares_fusion.encoders.spectral.LogMelEncoder").__name__ == "LogMelEncoder"
    with pytest.raises(RegistryError, match="cannot import module"):
        resolve_encoder_factory("no_such_pkg.mod.Enc")


def test_typo_suggests_closest_name(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match=r"unknown encoder 'logmle'\. Did you mean 'logmel'"):
        resolve_encoder_factory("logmle")
    with pytest.raises(RegistryError, match="not found"):
        resolve_encoder_factory(str(tmp_path / "missing.py"))


def test_entry_point_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A third-party package registers through the 'xares_fusion.encoders' entry-point group."""
    pkg = tmp_path / "myplugin"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(XARES_STYLE.replace("DummyEncoder", "PluginEncoder"))
    dist = tmp_path / "myplugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myplugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[xares_fusion.encoders]\nplugin-enc = myplugin:PluginEncoder\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "plugin-enc" in ENCODERS.names()
    assert type(build_encoder("plugin-enc")).__name__ == "PluginEncoder"
    sys.modules.pop("myplugin", None)


def test_builtins_and_fusions_resolve_from_the_registry_alone() -> None:
    """The encoder registry imports the packages that register the built-ins on its first lookup."""
    code = (
        "from xares_fusion.registry import ENCODERS, resolve_encoder_factory; "
        "assert resolve_encoder_factory('gated').__name__ == 'GatedFusion'; "
        "assert {'logmel', 'pam', 'mowe'} <= set(ENCODERS.names())"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_one_identity_whichever_way_a_class_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Registered name, dotted path and file path of one class give one identity and display name."""
    from xares_fusion.registry import system_identity

    (tmp_path / "ident_plugin.py").write_text(
        "import torch\nfrom xares_fusion.registry import register_encoder\n\n\n"
        '@register_encoder("ident-test")\nclass IdentEncoder(torch.nn.Module):\n    output_dim = 4\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        refs = ["ident_plugin.IdentEncoder", "ident-test", f"{tmp_path / 'ident_plugin.py'}:IdentEncoder"]
        identities = {system_identity(ref, {"b": 1, "a": [2]}) for ref in refs}
        assert identities == {('ident-test{"a":[2],"b":1}', "ident-test")}
        # Not registered: module.qualname, the same for the dotted path and the file on sys.path.
        (tmp_path / "ident_plain.py").write_text("class PlainEncoder:\n    output_dim = 4\n")
        assert system_identity(str(tmp_path / "ident_plain.py")) == ("ident_plain.PlainEncoder", "PlainEncoder")
        assert system_identity("ident_plain.PlainEncoder") == ("ident_plain.PlainEncoder", "PlainEncoder")
        # An alias names the same item: the first registered name is canonical.
        assert system_identity("whisper")[0] == system_identity("whisper-base")[0] == "whisper-base"
        assert system_identity("xares_fusion.encoders.spectral.LogMelEncoder") == ("logmel", "logmel")
    finally:
        ENCODERS._items.pop("ident-test", None)
