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
