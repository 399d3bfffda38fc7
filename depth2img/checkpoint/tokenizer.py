"""The SD 2 text tokenizer, built offline.

SD 2 uses OpenCLIP's BPE vocabulary. The open-clip-torch wheel ships it as
`bpe_simple_vocab_16e6.txt.gz`; transformers' CLIPTokenizer wants vocab.json + merges.txt. No library
converts one into the other, so we derive the two files here (the same derivation as CLIP's own
SimpleTokenizer) and cache them.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

from depth2img.base.files import write_text_atomic
from depth2img.base.paths import cache_dir

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
# CLIP keeps the first 49152 - 256 - 2 merges of the file (line 0 is a header).
_N_MERGES = 49152 - 256 - 2
MAX_LENGTH = 77
# SD 2 pads with "!" (id 0), as OpenCLIP does, unlike SD 1's CLIP tokenizer.
PAD_TOKEN = "!"


def find_bpe_vocab() -> Path:
    """Locate the BPE file inside an installed package without importing it (open_clip imports torchvision)."""
    for package in ("open_clip", "clip"):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        candidate = Path(next(iter(spec.submodule_search_locations))) / VOCAB_FILE
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{VOCAB_FILE} not found: install open-clip-torch (`pip install --no-deps open-clip-torch`), "
        "which ships SD 2's tokenizer vocabulary"
    )


def _bytes_to_unicode() -> dict[int, str]:
    # CLIP's reversible byte -> printable-unicode table (same as GPT-2's).
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes), strict=True))


def write_tokenizer_files(bpe_path: Path, out_dir: Path) -> tuple[Path, Path]:
    """Derive vocab.json and merges.txt from OpenCLIP's BPE file."""
    with gzip.open(bpe_path) as handle:
        lines = handle.read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : _N_MERGES + 1]]
    base = list(_bytes_to_unicode().values())
    vocab = base + [token + "</w>" for token in base] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab_path, merges_path = out_dir / "vocab.json", out_dir / "merges.txt"
    # Atomic: two processes (tests, a WebUI and a CLI) may derive the files at once; neither reads half a file.
    write_text_atomic(vocab_path, json.dumps({token: i for i, token in enumerate(vocab)}))
    write_text_atomic(merges_path, "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return vocab_path, merges_path


def load_clip_tokenizer():
    """transformers.CLIPTokenizer equal to SD 2's (OpenCLIP) tokenization, built without any download."""
    from transformers import CLIPTokenizer

    out_dir = cache_dir() / "clip-tokenizer"
    vocab_path, merges_path = out_dir / "vocab.json", out_dir / "merges.txt"
    if not (vocab_path.is_file() and merges_path.is_file()):
        write_tokenizer_files(find_bpe_vocab(), out_dir)
    return CLIPTokenizer(
        str(vocab_path),
        str(merges_path),
        pad_token=PAD_TOKEN,
        model_max_length=MAX_LENGTH,
    )
