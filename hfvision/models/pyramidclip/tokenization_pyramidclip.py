"""Offline CLIP BPE tokenizers for PyramidCLIP (nothing is downloaded).

Both builders return a stock `transformers.CLIPTokenizer`, so a saved processor reloads with `AutoTokenizer` /
`AutoProcessor` without remote code:
- `clip_tokenizer_from_bpe_file`: OpenAI CLIP's 49408-token vocabulary from its merges file
  (`bpe_simple_vocab_16e6.txt.gz`, shipped e.g. in the `open_clip_torch` wheel); ids equal OpenAI CLIP's.
- `train_clip_tokenizer`: a small byte-level BPE with CLIP's normaliser, pre-tokeniser and `</w>` word suffix,
  trained on the captions you give it (for tiny models and tests); reproducible across processes.
"""

from __future__ import annotations

import gzip
import itertools
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from transformers import CLIPTokenizer

SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")
CLIP_VOCAB_SIZE = 49408


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, [chr(code) for code in codes], strict=True))


def _clip_tokenizer(merges: list[tuple[str, str]], model_max_length: int) -> CLIPTokenizer:
    """A CLIP tokenizer with CLIP's id layout: bytes, bytes + `</w>`, one token per merge (in order), specials."""
    alphabet = list(_bytes_to_unicode().values())
    tokens = alphabet + [token + "</w>" for token in alphabet] + ["".join(merge) for merge in merges]
    vocab = {token: i for i, token in enumerate([*tokens, *SPECIAL_TOKENS])}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


def clip_tokenizer_from_bpe_file(path: str | Path, model_max_length: int = 77) -> CLIPTokenizer:
    """OpenAI CLIP's tokenizer from its gzipped merges file (`bpe_simple_vocab_16e6.txt.gz`).

    Args:
        path: the merges file; the `open_clip_torch` wheel ships it as `open_clip/bpe_simple_vocab_16e6.txt.gz`.
        model_max_length: context length (CLIP: 77).
    """
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    num_merges = CLIP_VOCAB_SIZE - 2 * 256 - len(SPECIAL_TOKENS)  # 48894 merges after the header line
    return _clip_tokenizer([tuple(line.split()) for line in lines[1 : 1 + num_merges]], model_max_length)


def train_clip_tokenizer(texts: Iterable[str], vocab_size: int = 2000, model_max_length: int = 77) -> CLIPTokenizer:
    """Train a small CLIP-style byte-level BPE on `texts`; the same texts always give the same ids.

    Words are split with CLIP's own normaliser and pre-tokeniser; merges are learned greedily (most frequent adjacent
    pair first, ties broken by the pair itself), so training is reproducible - `tokenizers`' trainer breaks ties in
    hash order, which changes ids from one process to the next.

    Args:
        texts: training captions.
        vocab_size: target vocabulary size; the result holds 514 base tokens (every byte, alone and as a word end,
            plus the two specials) and one token per merge, at most `vocab_size - 514` merges.
        model_max_length: context length the tokenizer truncates to.
    """
    backend = CLIPTokenizer(model_max_length=model_max_length).backend_tokenizer  # CLIP's normaliser/pre-tokeniser
    word_counts: Counter[tuple[str, ...]] = Counter()
    for text in texts:
        for word, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(text)):
            word_counts[(*word[:-1], word[-1] + "</w>")] += 1
    words = [list(word) for word in word_counts]
    counts = list(word_counts.values())
    merges: list[tuple[str, str]] = []
    while len(merges) < vocab_size - 2 * 256 - len(SPECIAL_TOKENS):
        pair_counts: Counter[tuple[str, str]] = Counter()
        for symbols, count in zip(words, counts, strict=True):
            for pair in itertools.pairwise(symbols):
                pair_counts[pair] += count
        if not pair_counts:
            break
        best = min(pair_counts, key=lambda pair: (-pair_counts[pair], pair))
        merges.append(best)
        merged = best[0] + best[1]
        for symbols in words:
            i = 0
            while i < len(symbols) - 1:
                if (symbols[i], symbols[i + 1]) == best:
                    symbols[i : i + 2] = [merged]
                i += 1
    return _clip_tokenizer(merges, model_max_length)


__all__ = ["clip_tokenizer_from_bpe_file", "train_clip_tokenizer"]
