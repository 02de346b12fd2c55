"""Text normalisation applied by the official XARES-LLM metrics before scoring."""

from __future__ import annotations

import re
import string
import unicodedata

_PUNCTUATION = str.maketrans("", "", string.punctuation)
_SPACES = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """NFKC, lowercase, hyphen -> space, strip ASCII punctuation, collapse whitespace.

    Only ``string.punctuation`` (ASCII) is removed, exactly as officially: full-width punctuation
    becomes ASCII under NFKC and is removed, while CJK marks such as '。' survive.
    """
    text = unicodedata.normalize("NFKC", text)
    text = text.lower().replace("-", " ")
    text = text.translate(_PUNCTUATION)
    return _SPACES.sub(" ", text).strip()
