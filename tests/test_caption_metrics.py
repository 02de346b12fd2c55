"""FENSE/DATE formulas on hand-computed cases, with a tiny BERT sentence model and the real MiniLM;
the official path run through the real ``mecat.evaluate`` on tiny local models; the labelled
offline fallback."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel, BertTokenizer

import xares_fusion.metrics as metrics_module
from xares_fusion.metrics import caption, choose, normalize_text, score
from xares_fusion.metrics.caption import (
    DATE_DELTA_LONG,
    CaptionMetricUnavailable,
    CaptionScorer,
    SentenceModel,
    date_score,
    discrimination_ranks,
    similarity_scores,
    tfidf_token_weights,
)

# Normalised candidate embeddings e_i and reference centroids m_i (hand-picked unit vectors).
E = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
M = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])


def test_similarity_and_fense_form() -> None:
    s = similarity_scores(E, M, torch.ones(3))
    torch.testing.assert_close(s, torch.tensor([1.0, 0.8, 0.8]))
    # the error checker's penalty multiplies a flagged caption's similarity by 1 - 0.9
    torch.testing.assert_close(similarity_scores(E, M, torch.tensor([1.0, 0.1, 1.0])), torch.tensor([1.0, 0.08, 0.8]))


def test_discrimination_and_date_by_hand() -> None:
    # S = E M^T = [[1, .6, 0], [0, .8, 1], [.6, 1, .8]], d/2 = 0.08515.
    # row 1: s=1, none above 1.085, one within +-d/2 (itself) -> r = 1 - 1/3
    # rows 2, 3: s=.8, one above .885 (the 1.0), one within (itself)  -> r = 1 - 2/3
    ranks = discrimination_ranks(E, M, torch.ones(3), DATE_DELTA_LONG)
    torch.testing.assert_close(ranks, torch.tensor([2 / 3, 1 / 3, 1 / 3]))
    # DATE = mean of 2sr/(s+r): (0.8 + 2 * (2*.8/3)/(.8 + 1/3)) / 3
    expected = (0.8 + 2 * ((2 * 0.8 / 3) / (0.8 + 1 / 3))) / 3
    assert date_score(torch.tensor([1.0, 0.8, 0.8]), ranks) == pytest.approx(expected, rel=1e-6)
    # a penalised caption (s2 = .08) has all three scores within d/2 of its own -> rank 0 -> DATE term 0
    penalised = discrimination_ranks(E, M, torch.tensor([1.0, 0.1, 1.0]), DATE_DELTA_LONG)
    assert penalised[1].item() == pytest.approx(0.0)


def test_tfidf_weights_by_hand() -> None:
    # Orthogonal word embeddings: cos(a, b) = 0, cos(w, w) = 1. ids: 0 pad, 101 cls, 102 sep, 5 'a', 6 'b'.
    table = {5: torch.tensor([1.0, 0.0]), 6: torch.tensor([0.0, 1.0])}
    ids = torch.tensor([[101, 5, 6, 102], [101, 5, 102, 0]])
    weights = tfidf_token_weights(ids, lambda v: torch.stack([table[int(i)] for i in v]), {0, 101, 102}, 101, 102)
    # idf_sum: a appears in both sentences -> 2, b in one -> 1; N = 2
    # idf(a) = log(3/3) + 1 = 1, idf(b) = log(3/2) + 1; tf = 1 each; weights divided by their mean.
    idf_b = math.log(1.5) + 1
    w_a, w_b = 1 / ((1 + idf_b) / 2), idf_b / ((1 + idf_b) / 2)
    torch.testing.assert_close(weights[0], torch.tensor([w_b, w_a, w_b, w_a]))  # [CLS] = max, [SEP] = min
    torch.testing.assert_close(weights[1], torch.tensor([1.0, 1.0, 1.0, 1.0]))  # padding keeps weight 1


WORDS = "a dog barks cat meows rain falls on roof loud quiet the car passes man speaks phone bird sings".split()


def save_tiny_bert(
    folder: Path, vocab: list[str], seed: int, layers: int = 2, word_std: float | None = None
) -> BertModel:
    """A random BERT (hidden 32) and its word-level WordPiece tokenizer, saved in ``folder``.

    ``word_std`` re-draws the word embeddings with that spread: at BERT's 0.02 every sentence of
    an untrained model embeds alike (cos > 0.9), while larger ones let sentences differ.
    """
    folder.mkdir(parents=True, exist_ok=True)
    # transformers 5 builds the tokenizer from ``vocab`` (a ``vocab_file`` argument is ignored)
    BertTokenizer(vocab={token: i for i, token in enumerate(vocab)}).save_pretrained(folder)
    torch.manual_seed(seed)
    model = BertModel(
        BertConfig(
            vocab_size=len(vocab), hidden_size=32, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=64
        )
    )
    if word_std is not None:
        with torch.no_grad():
            model.get_input_embeddings().weight.normal_(0, word_std)
    model.save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def tiny_sentence_model(tmp_path_factory: pytest.TempPathFactory) -> SentenceModel:
    """A 2-layer random BERT with a word-level vocabulary, saved as a sentence-transformers folder."""
    folder = tmp_path_factory.mktemp("tiny_sbert")
    save_tiny_bert(folder, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS], seed=0)
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 32}))
    return SentenceModel(folder)


def test_scorer_with_tiny_model(tiny_sentence_model: SentenceModel) -> None:
    captions = ["a dog barks", "rain falls on the roof", "the car passes", "a cat meows"]
    fense_form = CaptionScorer(tiny_sentence_model, date=False)
    assert fense_form(captions, captions) == pytest.approx(1.0, abs=1e-5)  # identical -> cos 1
    assert fense_form(captions, captions[::-1]) < 1.0
    # DATE-form: TF-IDF weighted embeddings, then the corpus-level formula on them.
    model = tiny_sentence_model
    features = model.tokenize(captions)
    weights = tfidf_token_weights(
        features["input_ids"],
        model.word_embeddings,
        model.special_ids,
        model.tokenizer.cls_token_id,
        model.tokenizer.sep_token_id,
    )
    e = model.embed(features, weights)
    m = model.embed(
        model.tokenize(captions[::-1]),
        tfidf_token_weights(
            model.tokenize(captions[::-1])["input_ids"],
            model.word_embeddings,
            model.special_ids,
            model.tokenizer.cls_token_id,
            model.tokenizer.sep_token_id,
        ),
    )
    ones = torch.ones(len(captions))
    expected = date_score(similarity_scores(e, m, ones), discrimination_ranks(e, m, ones, DATE_DELTA_LONG))
    assert CaptionScorer(model, date=True)(captions, captions[::-1]) == pytest.approx(expected, abs=1e-6)
    # Exact matches: similarity 1, and discrimination (hence DATE) above the reversed pairing's.
    matched = CaptionScorer(model, date=True)(captions, captions)
    assert 0.0 < matched < 1.0 and matched > CaptionScorer(model, date=True)(captions, captions[::-1])


def test_minilm_proxy_prefers_matching_captions() -> None:
    predictions = ["a dog barks loudly", "rain falls on a tin roof", "a man speaks on the phone"]
    references = ["a dog is barking", "heavy rain on a roof", "someone talks on a phone"]
    for name in ("FENSE (proxy)", "DATE (proxy)"):
        matched = score(name, predictions, references)
        shuffled = score(name, predictions, references[1:] + references[:1])
        assert 0.4 < matched <= 1.0 and shuffled < matched - 0.2, (name, matched, shuffled)


def test_caption_metric_table_registers_every_metric_and_its_proxy() -> None:
    from xares_fusion.registry import METRICS, RegistryError

    assert sorted(caption.CAPTION_METRICS) == ["DATE", "FENSE"]
    for name, metric in caption.CAPTION_METRICS.items():
        assert caption.caption_metric(name) is metric and metric.name == name
        assert metric.proxy == f"{name} (proxy)"
        assert METRICS.get(name) is getattr(caption, name.lower())
        assert METRICS.get(metric.proxy) is getattr(caption, f"{name.lower()}_proxy")
    assert caption.CAPTION_METRICS["DATE"].date and not caption.CAPTION_METRICS["FENSE"].date
    with pytest.raises(RegistryError, match=r"unknown caption metric 'SPIDEr'.*\['DATE', 'FENSE'\]"):
        caption.caption_metric("SPIDEr")


# --------------------------------------------------------------------------------------------
# Official path: the real mecat.evaluate, its model loading pointed at tiny local models
# --------------------------------------------------------------------------------------------

# bert-base-uncased's id layout for the special tokens: mecat's DATE drops ids 0, 101 and 102 as
# [PAD], [CLS] and [SEP] by number, so the tiny vocabulary keeps them there.
BERT_VOCAB = ["[PAD]", *[f"[unused{i}]" for i in range(99)], "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
CAPTIONS = [
    "A dog barks!",
    "Rain falls on the roof.",
    "The car passes",
    "a cat meows",
    "A man speaks on the phone",
    "a bird sings",
]


def hub_snapshot(cache: Path, repo: str) -> Path:
    """The snapshot folder of ``repo``'s main revision in a Hugging Face hub cache (refs/main written)."""
    commit = "0" * 40
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    return folder / "snapshots" / commit


@pytest.fixture(scope="module")
def official_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A hub cache and a FENSE data folder holding tiny stand-ins for what mecat 1.1.0 loads.

    Same ids, file names and formats as the real ones (caption.py docstring): the sentence model
    sentence-transformers/paraphrase-TinyBERT-L6-v2 laid out as its hub repository (BERT, mean
    pooling), bert-base-uncased, and echecker_clotho_audiocaps_base.ckpt, a torch.save dict whose
    model_type names the backbone; only the weights are random and the sizes tiny.
    """
    root = tmp_path_factory.mktemp("official_models")
    cache, fense_data = root / "hub", root / "fense_data"
    sbert = hub_snapshot(cache, caption.SBERT_REPO)
    save_tiny_bert(sbert, BERT_VOCAB, seed=0, layers=1, word_std=0.5)
    (sbert / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            ]
        )
    )
    (sbert / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128, "do_lower_case": False}))
    (sbert / "1_Pooling").mkdir()
    (sbert / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": 32,
                "pooling_mode_cls_token": False,
                "pooling_mode_mean_tokens": True,
                "pooling_mode_max_tokens": False,
                "pooling_mode_mean_sqrt_len_tokens": False,
            }
        )
    )
    # The checker pads to 256 tokens, within BertConfig's default 512 positions.
    backbone = save_tiny_bert(hub_snapshot(cache, caption.ECHECKER_BACKBONE), BERT_VOCAB, seed=1)
    head = torch.nn.Linear(32, 5)
    state = {
        **{f"encoder.{k}": v for k, v in backbone.state_dict().items()},
        **{f"clf.{k}": v for k, v in head.state_dict().items()},
    }
    fense_data.mkdir()
    torch.save(
        {"model_type": caption.ECHECKER_BACKBONE, "num_classes": 5, "state_dict": state},
        fense_data / caption.ECHECKER_FILE,
    )
    return cache, fense_data


@pytest.fixture()
def torch_threads() -> Iterator[None]:
    """Restore torch's thread count after a test that runs mecat (it sets one thread)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def point_hub_at(monkeypatch: pytest.MonkeyPatch, cache: Path, fense_data: Path, workdir: Path) -> None:
    """Make the hub cache ``cache`` (offline) and ``fense_data`` the places models are found."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("FENSE_DATA", str(fense_data))
    monkeypatch.delenv("SENTENCE_TRANSFORMERS_HOME", raising=False)
    # huggingface_hub reads the two variables once, at import; transformers and
    # sentence-transformers look both up through these module attributes at call time.
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    # A ./paraphrase-TinyBERT-L6-v2 or ./bert-base-uncased directory would shadow the hub ids.
    monkeypatch.chdir(workdir)
    monkeypatch.setattr(metrics_module, "_warned", set())


def mecat_content_long(metric: str, predictions: list[str], references: list[str]) -> float:
    """XARES-LLM's FENSE/DATE.__call__: mecat.evaluate on normalised one-element rows."""
    from mecat import evaluate

    torch.set_num_threads(1)  # as mecat's import leaves the official process
    frame = evaluate(
        predicted_data=[[normalize_text(p)] for p in predictions],
        reference_data=[[normalize_text(r)] for r in references],
        task="caption",
        metrics=metric,
        subtask="long",
    )
    return float(frame[frame["subtask"] == "content_long"][metric].iloc[0])


def test_parity_fense_date_call_mecat_like_official(
    official_models: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, torch_threads: None
) -> None:
    pytest.importorskip("mecat", reason="the official-metrics extra is not installed")
    point_hub_at(monkeypatch, *official_models, tmp_path)
    assert caption.official_missing() == []
    shuffled = CAPTIONS[1:] + CAPTIONS[:1]
    for name in ("FENSE", "DATE"):
        choice = choose(name)
        assert (choice.name, choice.unofficial, choice.reason) == (name, False, None)
        perfect = score(name, CAPTIONS, [c.upper() for c in CAPTIONS])  # equal after normalisation
        wrong = score(name, CAPTIONS, shuffled)
        assert perfect == mecat_content_long(name.lower(), CAPTIONS, [c.upper() for c in CAPTIONS])
        assert wrong == mecat_content_long(name.lower(), CAPTIONS, shuffled)
        assert math.isfinite(perfect) and math.isfinite(wrong)
        assert 0.0 < wrong < perfect <= 1.0, (name, perfect, wrong)


def test_offline_caption_metrics_fall_back_to_labelled_proxy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    point_hub_at(monkeypatch, tmp_path / "empty_hub", tmp_path / "no_fense_data", tmp_path)
    for name in ("FENSE", "DATE"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="xares_fusion"):
            choice = choose(name)
            assert choose(name) == choice
        assert (choice.name, choice.unofficial) == (f"{name} (proxy)", True)
        for needed in (
            caption.SBERT_REPO,
            caption.ECHECKER_FILE,
            caption.ECHECKER_BACKBONE,
            "pip install 'xares-fusion[official-metrics]'",
            "all-MiniLM-L6-v2",
        ):
            assert needed in choice.reason
        assert [r.getMessage() for r in caplog.records] == [choice.reason]  # logged once per metric
        with pytest.raises(CaptionMetricUnavailable, match=f"{name} \\(official\\) needs"):
            score(name, ["a"], ["a"])


def test_official_missing_reads_the_backbone_from_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # mecat loads whatever model_type the checkpoint names (the official one: bert-base-uncased).
    point_hub_at(monkeypatch, tmp_path / "empty_hub", tmp_path / "fense_data", tmp_path)
    (tmp_path / "fense_data").mkdir()
    torch.save(
        {"model_type": "prajjwal1/bert-tiny", "num_classes": 5, "state_dict": {}},
        tmp_path / "fense_data" / caption.ECHECKER_FILE,
    )
    missing = caption.official_missing()
    assert f"prajjwal1/bert-tiny in the hub cache {tmp_path / 'empty_hub'}" in missing
    assert not any(caption.ECHECKER_FILE in m or caption.ECHECKER_BACKBONE in m for m in missing)
    (tmp_path / "fense_data" / caption.ECHECKER_FILE).write_bytes(b"not a checkpoint")
    assert any(m.startswith(f"a readable {tmp_path / 'fense_data'}") for m in caption.official_missing())
