"""The real CLIP BPE tokenizer, built offline from the vocabulary file open_clip ships.

Stable Diffusion's tokenizer is CLIP's byte-level BPE (49,408 tokens). No hub download is possible
here, but open_clip bundles ``bpe_simple_vocab_16e6.txt.gz``; from it we write the ``vocab.json`` /
``merges.txt`` pair that ``transformers.CLIPTokenizer`` reads. The files are cached, because
building the 49k-entry vocabulary costs about a second.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

N_MERGES = 49152 - 256 - 2  # CLIP's vocabulary: 256 bytes ×2 (plain and word-final), merges, 2 specials


def cache_dir() -> Path:
    """Where sdgen caches derived files (tokenizer files, copied cloud models)."""
    root = os.environ.get("SDGEN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "sdgen")
    return Path(root)


def write_clip_tokenizer_files(directory: str | os.PathLike) -> Path:
    """Write vocab.json and merges.txt of CLIP's BPE into ``directory``; returns the directory."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    merges = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1 : N_MERGES + 1]
    byte_symbols = list(bytes_to_unicode().values())
    vocab = byte_symbols + [s + "</w>" for s in byte_symbols] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    tmp_vocab, tmp_merges = directory / "vocab.json.tmp", directory / "merges.txt.tmp"
    tmp_vocab.write_text(json.dumps({v: i for i, v in enumerate(vocab)}))
    tmp_merges.write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    os.replace(tmp_vocab, directory / "vocab.json")  # atomic: concurrent actors never read half a file
    os.replace(tmp_merges, directory / "merges.txt")
    return directory


def clip_tokenizer(model_max_length: int = 77):
    """A ``transformers.CLIPTokenizer`` identical to Stable Diffusion's, built without network."""
    from transformers import CLIPTokenizer

    directory = cache_dir() / "clip_bpe"
    if not (directory / "vocab.json").exists() or not (directory / "merges.txt").exists():
        write_clip_tokenizer_files(directory)
    return CLIPTokenizer(
        str(directory / "vocab.json"),
        str(directory / "merges.txt"),
        model_max_length=model_max_length,
        pad_token="<|endoftext|>",
    )


# ---- T5 and Gemma tokenizers (FLUX, SD3, PixArt-Σ; Sana) ------------------------------------------
# Their real vocabularies live on the hub only. For random-weight models any fixed tokenizer with the
# right special tokens and padding does: a SentencePiece-style Unigram model built here over a fixed
# vocabulary (the words of CLIP's BPE, which open_clip ships), cached, identical everywhere.
T5_VOCAB = 4000  # pieces of the T5-style tokenizer (every embedding table here has at least as many rows)
GEMMA_VOCAB = 4000  # pieces of the Gemma-style tokenizer
CHARS = "abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"-()/&+ "  # always segmentable: no <unk> for text


def _clip_pieces() -> tuple[list[str], list[str]]:
    """(whole words, word-inner pieces) of CLIP's BPE in merge order (roughly by frequency)."""
    import importlib.util

    root = Path(importlib.util.find_spec("open_clip").submodule_search_locations[0])
    merges = gzip.open(root / "bpe_simple_vocab_16e6.txt.gz").read().decode("utf-8").split("\n")[1:N_MERGES]
    joined = ["".join(m.split()) for m in merges]
    words = [w.removesuffix("</w>") for w in joined if w.endswith("</w>") and w[:-4].isalpha()]
    inner = [w for w in joined if not w.endswith("</w>") and w.isalpha()]
    return words, inner


def _unigram(vocab_size: int, specials: list[str], unk: str, template: str):
    """A Unigram (SentencePiece-style) tokenizer over a fixed vocabulary: the most frequent whole words
    of CLIP's BPE (open_clip ships it), then word pieces, then single characters, scored so that Viterbi
    prefers whole words. Built, not trained: the trainer is multi-threaded and its ties fall differently
    run to run, and every machine must give a prompt the same ids. `template` adds the family's special
    tokens ("$A </s>" for T5, "<bos> $A" for Gemma)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    words, inner = _clip_pieces()
    chars = ["▁"] + list(dict.fromkeys(CHARS.replace(" ", "")))
    n_words = (vocab_size - len(specials) - len(chars)) * 3 // 4
    n_inner = vocab_size - len(specials) - len(chars) - n_words
    pieces = [(p, 0.0) for p in specials]
    pieces += [(f"▁{w}", -5.0 - i * 1e-3) for i, w in enumerate(words[:n_words])]
    pieces += [(w, -10.0 - i * 1e-3) for i, w in enumerate(inner[:n_inner])]
    pieces += [(c, -20.0) for c in chars]
    tok = Tokenizer(models.Unigram(pieces, unk_id=specials.index(unk), byte_fallback=False))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    marks = [t for t in template.split() if t != "$A"]
    tok.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(t, specials.index(t)) for t in marks]
    )
    return tok


def _cached_tokenizer(name: str, build):
    """tokenizers.Tokenizer `name`, built once per cache and read back by every process."""
    from tokenizers import Tokenizer

    path = cache_dir() / "tokenizers" / f"{name}.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        tmp.write_text(build().to_str())
        os.replace(tmp, path)  # atomic: a concurrent actor reads a whole file or builds its own
    return Tokenizer.from_file(str(path))


def t5_tokenizer(model_max_length: int = 512):
    """A T5-style fast tokenizer (pad 0, </s> 1 appended, unk 2), as FLUX, SD3 and PixArt-Σ use."""
    from transformers import T5TokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]
    tok = _cached_tokenizer(
        f"t5-unigram-{T5_VOCAB}", lambda: _unigram(T5_VOCAB, specials, "<unk>", "$A </s>")
    )
    return T5TokenizerFast(
        tokenizer_object=tok,
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_ids=0,
        model_max_length=model_max_length,
    )


def gemma_tokenizer(model_max_length: int = 8192):
    """A Gemma-style fast tokenizer (pad 0, eos 1, <bos> 2 prepended, unk 3), as Sana uses; its length
    limit is Gemma's context (Sana prepends a ~300-token instruction and truncates itself)."""
    from transformers import GemmaTokenizerFast

    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    tok = _cached_tokenizer(
        f"gemma-unigram-{GEMMA_VOCAB}", lambda: _unigram(GEMMA_VOCAB, specials, "<unk>", "<bos> $A")
    )
    return GemmaTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="right",
        model_max_length=model_max_length,
    )
