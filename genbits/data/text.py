"""Character-level text: any UTF-8 file or folder of files, cut into blocks of ``block_size`` characters.

The default corpus is Debian's ``fortunes`` (quotations, literature, songs; ``apt-get install fortunes``), read
from disk: its binary ``.dat`` indexes and its ``.u8`` links (duplicates of the plain files) are skipped. Each
file's last ``test_fraction`` (cut at a line break) is held out, so both splits cover every file.

A training batch is a set of random contiguous blocks: the dataset's examples are all block start positions, and
the batch stream (``train/stream.py``) shuffles them per epoch from (seed, epoch), so batch k depends only on
(seed, k) like every other stream. Held-out data (``x``) are the split's non-overlapping blocks, in order.
The vocabulary is every character of the whole corpus (both splits), sorted; the model keeps it in its state (the
run's checkpoints), so a run decodes and encodes prompts with the characters it was trained on.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from genbits.data.base import Batch, require
from genbits.errors import DatasetNotFound
from genbits.registry import DATASETS

FORTUNES = "/usr/share/games/fortunes"
INSTALL = "apt-get install fortunes"
SPLITS = ("train", "test")


def corpus_files(path: Path) -> list[Path]:
    """A file, or every text file below a folder in sorted order, without ``.dat`` indexes and symbolic links."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        hint = f"install it with `{INSTALL}` or " if str(path) == FORTUNES else ""
        raise DatasetNotFound(f"text: no file or folder {path}; {hint}set data.path to a UTF-8 text file or folder")
    files = sorted(f for f in path.rglob("*") if f.is_file() and not f.is_symlink() and f.suffix != ".dat")
    if not files:
        raise DatasetNotFound(f"text: no text file in {path}; set data.path to a UTF-8 text file or folder")
    return files


def read_text(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{file}: not UTF-8 text (byte {e.start}: {e.reason})") from None


def split_text(text: str, test_fraction: float) -> tuple[str, str]:
    """(train, test): the last ``test_fraction`` of ``text``, moved forward to the next line break."""
    cut = round(len(text) * (1 - test_fraction))
    newline = text.find("\n", max(0, cut - 1))
    cut = newline + 1 if newline >= 0 and test_fraction > 0 else cut
    return text[:cut], text[cut:]


class TextDataset:
    """One split of a character-level corpus as token ids (int64): examples are the blocks starting at each
    position. ``levels`` is None (a model's log_prob is the exact discrete likelihood; nothing is dequantized)."""

    centres: Tensor | None = None
    levels: int | None = None
    num_classes: int | None = None
    has_log_prob = False

    def __init__(self, tokens: Tensor, vocab: str, block_size: int, name: str):
        require(block_size >= 1, f"block_size must be >= 1, got {block_size}")
        require(
            len(tokens) >= block_size,
            f"block_size {block_size} is larger than the {name} split ({len(tokens)} characters); lower it",
        )
        self.tokens, self.vocab, self.block_size, self.name = tokens, vocab, block_size, name
        self.event_shape = (block_size,)

    def __len__(self) -> int:
        return len(self.tokens) - self.block_size + 1

    def get(self, index: Tensor, generator: torch.Generator | None = None) -> Batch:
        """The blocks starting at ``index``; ``generator`` is unused (a text block is served as it is)."""
        return Batch(self.tokens[index[:, None] + torch.arange(self.block_size)])  # (B, T)

    @property
    def x(self) -> Tensor:
        """The split's non-overlapping blocks in order (held-out evaluation): (N // T, T)."""
        n = len(self.tokens) // self.block_size
        return self.tokens[: n * self.block_size].view(n, self.block_size)

    def decode(self, tokens: Tensor) -> str:
        return "".join(self.vocab[int(t)] for t in tokens)


def encode(text: str, vocab: str) -> Tensor:
    index = {c: i for i, c in enumerate(vocab)}
    return torch.tensor([index[c] for c in text], dtype=torch.int64)


@DATASETS.register("text")
def text(path: str = FORTUNES, block_size: int = 128, test_fraction: float = 0.1, split: str = "train") -> TextDataset:
    """Character-level text from a UTF-8 file or folder (default: Debian's fortunes)."""
    require(split in SPLITS, f"split must be 'train' or 'test', got {split!r}")
    require(0 < test_fraction < 1, f"test_fraction must be in (0, 1), got {test_fraction}")
    parts = [split_text(read_text(f), test_fraction) for f in corpus_files(Path(path))]
    vocab = "".join(sorted({c for pair in parts for half in pair for c in half}))
    if not vocab:
        raise DatasetNotFound(f"text: the corpus at {path} is empty; set data.path to a UTF-8 text file or folder")
    chosen = "".join(pair[SPLITS.index(split)] for pair in parts)
    return TextDataset(encode(chosen, vocab), vocab, block_size, f"{split}")
