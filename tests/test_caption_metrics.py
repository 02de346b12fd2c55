"""FENSE/DATE formulas on hand-computed cases, with a tiny BERT sentence model and the real MiniLM."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel, BertTokenizerFast

from xares_fusion.metrics import choose, score
from xares_fusion.metrics.caption import (DATE_DELTA_LONG, CaptionScorer, SentenceModel, date_score,
                                          discrimination_ranks, similarity_scores, tfidf_token_weights)

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
    torch.testing.assert_close(weights[0], torch.tensor([w_b, w_a, w_b, w_a]))   # [CLS] = max, [SEP] = min
    torch.testing.assert_close(weights[1], torch.tensor([1.0, 1.0, 1.0, 1.0]))   # padding keeps weight 1


@pytest.fixture(scope="module")
def tiny_sentence_model(tmp_path_factory: pytest.TempPathFactory) -> SentenceModel:
    """A 2-layer random BERT with a word-level vocabulary, saved as a sentence-transformers folder."""
    folder = tmp_path_factory.mktemp("tiny_sbert")
    words = "a dog barks cat meows rain falls on roof loud quiet the car passes".split()
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=5 + len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(folder)
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 32}))
    return SentenceModel(folder)


def test_scorer_with_tiny_model(tiny_sentence_model: SentenceModel) -> None:
    captions = ["a dog barks", "rain falls on the roof", "the car passes", "a cat meows"]
    fense_form = CaptionScorer(tiny_sentence_model, date=False)
    assert fense_form(captions, captions) == pytest.approx(1.0, abs=1e-5)           # identical -> cos 1
    assert fense_form(captions, captions[::-1]) < 1.0
    # DATE-form: TF-IDF weighted embeddings, then the corpus-level formula on them.
    model = tiny_sentence_model
    features = model.tokenize(captions)
    weights = tfidf_token_weights(features["input_ids"], model.word_embeddings, model.special_ids,
                                  model.tokenizer.cls_token_id, model.tokenizer.sep_token_id)
    e = model.embed(features, weights)
    m = model.embed(model.tokenize(captions[::-1]), tfidf_token_weights(
        model.tokenize(captions[::-1])["input_ids"], model.word_embeddings, model.special_ids,
        model.tokenizer.cls_token_id, model.tokenizer.sep_token_id))
    ones = torch.ones(len(captions))
    expected = date_score(similarity_scores(e, m, ones), discrimination_ranks(e, m, ones, DATE_DELTA_LONG))
    assert CaptionScorer(model, date=True)(captions, captions[::-1]) == pytest.approx(expected, abs=1e-6)
    # An untrained sentence model barely tells sentences apart: every S_ij lies within d/2 of the
    # row's own score, so discrimination and DATE are 0 even for exact matches.
    sims = e @ e.T
    assert sims.min() > 1 - DATE_DELTA_LONG / 2
    assert CaptionScorer(model, date=True)(captions, captions) == pytest.approx(0.0, abs=1e-6)


def test_official_metric_falls_back_to_labelled_proxy() -> None:
    for name, proxy in (("FENSE", "SBERTSim[all-MiniLM-L6-v2]"), ("DATE", "DATE-proxy[all-MiniLM-L6-v2]")):
        choice = choose(name)
        assert choice.name == proxy and choice.unofficial and "mecat" in choice.reason
        with pytest.raises(RuntimeError, match=f"{name} \\(official\\) needs"):
            score(name, ["a"], ["a"])


def test_minilm_proxy_prefers_matching_captions() -> None:
    predictions = ["a dog barks loudly", "rain falls on a tin roof", "a man speaks on the phone"]
    references = ["a dog is barking", "heavy rain on a roof", "someone talks on a phone"]
    for name in ("SBERTSim[all-MiniLM-L6-v2]", "DATE-proxy[all-MiniLM-L6-v2]"):
        matched = score(name, predictions, references)
        shuffled = score(name, predictions, references[1:] + references[:1])
        assert 0.4 < matched <= 1.0 and shuffled < matched - 0.2, (name, matched, shuffled)
