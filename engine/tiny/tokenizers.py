"""Tokenizers built from an in-memory vocabulary (Gemma, CLIP, T5): any text tokenizes, nothing is downloaded."""
from __future__ import annotations

import json
import string

# Words the demo's captions use, so they become one token each instead of a run of characters.
_WORDS = """
a an the photo photograph picture image drawing painting render illustration of on in with and
at to by near over under above below beside left right top bottom center centre middle corner
red green blue yellow orange purple pink white black gray grey brown cyan magenta violet gold
silver dark light bright pale colourful colorful colour color colours colors
circle circles square squares triangle triangles star stars ring rings cross dot dots stripe
stripes rectangle diamond hexagon shape shapes line lines disc blob
small large big tiny huge simple plain solid flat striped smooth textured blurry sharp
background foreground scene one two three four many single pair
cat dog tree house sky sun moon flower car person face water grass
""".split()


def _vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A Gemma-style BPE vocabulary: specials, 256 byte pieces, characters, then whole caption words."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    # Hand-written merge chains for several words clash (the "le" of "left" splits "circle"), so
    # the merges are learned by the BPE trainer, one "▁word" unit at a time: merges never cross
    # a "▁", hence Gemma's whole-string BPE gives every listed word one token.
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.normalizer = normalizers.Replace(" ", "▁")
    bpe.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    alphabet = list("▁" + string.ascii_letters + string.digits + string.punctuation)
    trainer = trainers.BpeTrainer(vocab_size=100_000, min_frequency=1, initial_alphabet=alphabet,
                                  limit_alphabet=len(alphabet), show_progress=False)
    # Gemma has no prefix space: a word is "▁red" after a space and "red" at the start.
    bpe.train_from_iterator(_WORDS + [" " + word for word in _WORDS], trainer)
    learned = json.loads(bpe.to_str())["model"]

    vocab: dict[str, int] = {}
    for special in ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>"):
        vocab[special] = len(vocab)
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for piece, _ in sorted(learned["vocab"].items(), key=lambda item: item[1]):
        vocab.setdefault(piece, len(vocab))
    merges = [tuple(pair) for pair in learned["merges"]]
    return vocab, merges


def tiny_tokenizer():
    """The GemmaTokenizer of the tiny model, built without any download."""
    from transformers import GemmaTokenizer

    vocab, merges = _vocab_and_merges()
    return GemmaTokenizer(vocab=vocab, merges=merges, model_max_length=8192, add_bos_token=True)




def _word_merges(words: list[str]) -> list[tuple[str, str]]:
    """BPE merges that join each word (with CLIP's "</w>" end mark) into one piece.

    Learned here rather than by the tokenizers trainer, whose ties fall differently from run to
    run: the most frequent pair is merged first, ties by the pair's text, so a build is repeatable.
    """
    from collections import Counter

    words_left = [tuple(word[:-1]) + (word[-1] + "</w>",) for word in dict.fromkeys(words)]
    merges = []
    while True:
        pairs = Counter(pair for word in words_left for pair in zip(word, word[1:]))
        if not pairs:
            return merges
        pair = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(pair)
        joined = []
        for word in words_left:
            out, i = [], 0
            while i < len(word):
                if word[i:i + 2] == pair:
                    out.append(pair[0] + pair[1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            joined.append(tuple(out))
        words_left = joined


def tiny_clip_tokenizer():
    """A CLIPTokenizer whose BPE makes every caption word one token; specials first (bos 0, eos/pad 1)."""
    from transformers import CLIPTokenizer

    # CLIP's BPE works on bytes shown as printable characters (GPT-2's table): all 256 make any text tokenize.
    shown = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    alphabet = [chr(c) for c in shown] + [chr(256 + n) for n in range(256 - len(shown))]
    merges = _word_merges(_WORDS)
    # The CLIP text model pools at the first eos id its config names, so the specials' ids are fixed.
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for piece in alphabet + [c + "</w>" for c in alphabet] + [a + b for a, b in merges]:
        vocab.setdefault(piece, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def tiny_t5_tokenizer():
    """A unigram T5Tokenizer: each caption word one piece, single characters for anything else."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [("▁" + word, -1.0) for word in _WORDS]
    pieces += [("▁", -2.0)] + [(c, -3.0) for c in string.ascii_letters + string.digits + string.punctuation]
    return T5Tokenizer(vocab=list(dict(pieces).items()), extra_ids=0)

