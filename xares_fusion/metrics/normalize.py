"""Text normalisation applied by the official XARES-LLM metrics before scoring."""

from __future__ import annotations

import re
import string
import unicodedata

_PUNCTUATION = str.maketrans("", "", string.punctuation)
_SPACES = re.compile(r"\s+")


def normalize_text(text: str, remove_punctuation: bool = True) -> str:
    """NFKC, lowercase, hyphen -> space, strip ASCII punctuation, collapse whitespace.

    Only ``string.punctuation`` (ASCII) is removed, exactly as officially: full-width punctuation
    becomes ASCII under NFKC and is removed, while CJK marks such as '。' survive.
    ``remove_punctuation=False`` keeps punctuation, as the official mAP does (its ';' separates
    labels and commas belong to label names such as "male speech, man speaking").
    """
    text = unicodedata.normalize("NFKC", text)
    text = text.lower().replace("-", " ")
    if remove_punctuation:
        text = text.translate(_PUNCTUATION)
    return _SPACES.sub(" ", text).strip()
