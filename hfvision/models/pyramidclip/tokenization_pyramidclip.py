"""Offline CLIP BPE tokenizers for PyramidCLIP (nothing is downloaded).

Both builders return a stock `transformers.CLIPTokenizer`, so a saved processor reloads with `AutoTokenizer` /
`AutoProcessor` without remote code:
- `clip_tokenizer_from_bpe_file`: OpenAI CLIP's 49408-token vocabulary from its merges file
  (`bpe_simple_vocab_16e6.txt.gz`, shipped e.g. in the `open_clip_torch` wheel); ids equal OpenAI CLIP's.
- `train_clip_tokenizer`: a small byte-level BPE with CLIP's normaliser, pre-tokeniser and `</w>` word suffix,
  trained on the captions you give it (for tiny models and tests).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import pre_tokenizers
from tokenizers.trainers import BpeTrainer
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


def clip_tokenizer_from_bpe_file(path: str | Path, model_max_length: int = 77) -> CLIPTokenizer:
    """OpenAI CLIP's tokenizer from its gzipped merges file (`bpe_simple_vocab_16e6.txt.gz`).

    Args:
        path: the merges file; the `open_clip_torch` wheel ships it as `open_clip/bpe_simple_vocab_16e6.txt.gz`.
        model_max_length: context length (CLIP: 77).
    """
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    num_merges = CLIP_VOCAB_SIZE - 2 * 256 - len(SPECIAL_TOKENS)  # 48894 merges after the header line
    merges = [tuple(line.split()) for line in lines[1 : 1 + num_merges]]
    alphabet = list(_bytes_to_unicode().values())
    tokens = alphabet + [token + "</w>" for token in alphabet] + ["".join(merge) for merge in merges]
    vocab = {token: i for i, token in enumerate([*tokens, *SPECIAL_TOKENS])}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


def train_clip_tokenizer(texts: Iterable[str], vocab_size: int = 2000, model_max_length: int = 77) -> CLIPTokenizer:
    """Train a small CLIP-style byte-level BPE on `texts`.

    Args:
        texts: training captions.
        vocab_size: target vocabulary size (at least the 256 bytes, their `</w>` forms and the two special tokens).
        model_max_length: context length the tokenizer truncates to.
    """
    scaffold = CLIPTokenizer(model_max_length=model_max_length)  # CLIP's normaliser and pre-tokeniser, empty vocab
    backend = scaffold.backend_tokenizer
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=alphabet,
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    model = json.loads(backend.to_str())["model"]
    vocab = dict(model["vocab"])
    for token in (*alphabet, *(char + "</w>" for char in alphabet)):  # every byte stays encodable
        vocab.setdefault(token, len(vocab))
    merges = [tuple(merge.split(" ")) if isinstance(merge, str) else tuple(merge) for merge in model["merges"]]
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


__all__ = ["clip_tokenizer_from_bpe_file", "train_clip_tokenizer"]
