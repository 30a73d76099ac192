"""Offline word-level tokenizer for VATT's text tower (nothing is downloaded).

The paper embeds up to 16 words per caption with a 2^16-word vocabulary (word2vec's). No such vocabulary ships
offline, so `train_vatt_tokenizer` builds one from the training captions: lower-cased, accents and
punctuation stripped, split on whitespace, the most frequent words first (ties broken alphabetically, so the same
captions always give the same ids). Id 0 is padding (the model's padding id) and id 1 the unknown word. The result
is a stock `PreTrainedTokenizerFast` (a `tokenizers` WordLevel model): a saved processor reloads with AutoTokenizer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

PAD_TOKEN, UNK_TOKEN = "[PAD]", "[UNK]"


def _backend(vocab: dict[str, int]) -> Tokenizer:
    tokenizer = Tokenizer(WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    tokenizer.normalizer = normalizers.Sequence(
        [
            normalizers.NFD(),
            normalizers.StripAccents(),
            normalizers.Lowercase(),
            normalizers.Replace(Regex(r"[^\w\s]"), " "),  # punctuation is not a word
        ]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer


def train_vatt_tokenizer(
    texts: Iterable[str], vocab_size: int = 2**16, model_max_length: int = 16, min_frequency: int = 1
) -> PreTrainedTokenizerFast:
    """Build a word-level tokenizer from captions.

    Args:
        texts: training captions.
        vocab_size: at most this many ids, the two specials included (the paper's 2^16).
        model_max_length: words per caption after truncation (the paper's 16).
        min_frequency: words seen fewer times map to `[UNK]`.

    Returns:
        A `PreTrainedTokenizerFast` padding on the right with id 0.
    """
    if vocab_size < 3:
        raise ValueError(f"`vocab_size` must be at least 3 (two special tokens and a word), got {vocab_size}.")
    splitter = _backend({PAD_TOKEN: 0, UNK_TOKEN: 1})
    counts: Counter[str] = Counter()
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"`texts` item {index} must be a string, got {type(text).__name__}.")
        normalized = splitter.normalizer.normalize_str(text)
        counts.update(word for word, _ in splitter.pre_tokenizer.pre_tokenize_str(normalized))
    if not counts:
        raise ValueError("`texts` holds no words; pass the training captions.")
    words = sorted((word for word, count in counts.items() if count >= min_frequency), key=lambda w: (-counts[w], w))
    vocab = {PAD_TOKEN: 0, UNK_TOKEN: 1}
    vocab.update({word: i + 2 for i, word in enumerate(words[: vocab_size - 2])})
    return PreTrainedTokenizerFast(
        tokenizer_object=_backend(vocab),
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        model_max_length=model_max_length,
        padding_side="right",
        truncation_side="right",
    )


__all__ = ["PAD_TOKEN", "UNK_TOKEN", "train_vatt_tokenizer"]
