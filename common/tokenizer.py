"""Prompt tokeniser: PaliGemma's SentencePiece model (from the checkpoint dir, else openpi's or LeRobot's cache),
or a tiny one trained offline.

openpi prompt formats (src/openpi/models/tokenizer.py, PaligemmaTokenizer; LeRobot's differ: see tokenize_text):
    π0 (and π0.5 without state):  BOS + "text" + "\n"         ("\n" tokenised separately: start of answer)
    π0.5 with discrete state:     BOS + "Task: text, State: 12 200 ...;\nAction: "
the state (normalised to ~[-1, 1]) discretised into 256 bins: digitize(s, linspace(-1, 1, 257)[:-1]) - 1.
Special ids follow PaliGemma: pad 0, eos 1, bos 2, unk 3; padding positions hold token 0 and mask False.
"""
import hashlib
import io
import os
from pathlib import Path

import numpy as np
import sentencepiece as spm

TOKENIZER_FILES = ("tokenizer.model", "paligemma_tokenizer.model")
_TINY_VERSION = "pirl-tiny-spm-v2"   # bump to invalidate cached tiny tokenizers


class Tokenizer:
    def __init__(self, model_proto: bytes):
        self.model_proto = model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def tokenize(self, prompt: str, state: np.ndarray | None, max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """One prompt -> tokens (max_len,) int64 and mask (max_len,) bool (truncated like openpi)."""
        text = prompt.strip().replace("_", " ").replace("\n", " ")
        if state is not None:
            bins = np.digitize(state, bins=np.linspace(-1, 1, 256 + 1)[:-1]) - 1
            full = f"Task: {text}, State: {' '.join(map(str, bins))};\nAction: "
            tokens = [self.sp.bos_id()] + self.sp.encode(full)
        else:
            tokens = [self.sp.bos_id()] + self.sp.encode(text) + self.sp.encode("\n")
        return self._pad(tokens, max_len)

    def tokenize_text(self, text: str, max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """BOS + the text as it is, as LeRobot's TokenizerProcessorStep runs PaliGemma's HF tokenizer
        (add_bos_token, no EOS, truncation, right padding with id 0): no cleaning, one piece of text."""
        return self._pad([self.sp.bos_id()] + self.sp.encode(text), max_len)

    @staticmethod
    def _pad(tokens: list, max_len: int) -> tuple[np.ndarray, np.ndarray]:
        tokens = tokens[:max_len]
        n = len(tokens)
        out = np.zeros(max_len, dtype=np.int64)
        out[:n] = tokens
        return out, np.arange(max_len) < n


PALIGEMMA_TOKENIZER = "paligemma_tokenizer.model"   # PaliGemma's SentencePiece model (257152 pieces)
OPENPI_TOKENIZER_URL = "gs://big_vision/paligemma_tokenizer.model"   # what openpi downloads (models/tokenizer.py)
LEROBOT_TOKENIZER_REPO = "google/paligemma-3b-pt-224"   # what LeRobot's π0 / π0.5 load with AutoTokenizer (gated)


def openpi_tokenizer_path() -> Path:
    """Where openpi keeps the tokenizer it downloads: $OPENPI_DATA_HOME (default ~/.cache/openpi)/big_vision/...
    (openpi shared/download.py: maybe_download caches gs://<bucket>/<path> as <cache>/<bucket>/<path>)."""
    return Path(os.environ.get("OPENPI_DATA_HOME", "~/.cache/openpi")).expanduser() / "big_vision" / PALIGEMMA_TOKENIZER


def hub_tokenizer_path() -> Path | None:
    """tokenizer.model of google/paligemma-3b-pt-224 in the Hugging Face cache (HF_HOME / HF_HUB_CACHE), where
    LeRobot's AutoTokenizer download leaves it; None when not cached. No network."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(LEROBOT_TOKENIZER_REPO, "tokenizer.model")
    return Path(found) if isinstance(found, str) else None


def tokenizer_candidates(directory) -> list[Path]:
    """The places load_tokenizer looks, in order: the checkpoint dir (tokenizer.model, paligemma_tokenizer.model),
    openpi's download cache, then the Hugging Face cache of google/paligemma-3b-pt-224 (LeRobot's)."""
    found = [Path(directory) / name for name in TOKENIZER_FILES] + [openpi_tokenizer_path()]
    hub = hub_tokenizer_path()
    return found + ([hub] if hub is not None else [])


def load_tokenizer(directory, vocab_size: int | None = None) -> Tokenizer:
    """The prompt tokeniser of a checkpoint: its own tokenizer.model (or paligemma_tokenizer.model), else PaliGemma's
    SentencePiece where openpi or LeRobot keep it (tokenizer_candidates); FileNotFoundError, in one line naming
    the file and where to put it, when none has it. vocab_size (the model's embedding rows), when given, skips
    a shared PaliGemma tokenizer too large for the model (a tiny checkpoint that lost its own)."""
    own = len(TOKENIZER_FILES)
    for i, path in enumerate(tokenizer_candidates(directory)):
        if path.is_file():
            tokenizer = Tokenizer(path.read_bytes())
            if i < own or vocab_size is None or tokenizer.vocab_size <= vocab_size:
                return tokenizer
    raise FileNotFoundError(
        f"no tokenizer for {directory}: PaliGemma's SentencePiece model ({PALIGEMMA_TOKENIZER}, openpi downloads it from "
        f"{OPENPI_TOKENIZER_URL}) is in none of {Path(directory) / TOKENIZER_FILES[0]}, {openpi_tokenizer_path()} "
        f"(openpi's cache, $OPENPI_DATA_HOME) or the Hugging Face cache of {LEROBOT_TOKENIZER_REPO}; put it at one of "
        f"the first two (e.g. `gsutil cp {OPENPI_TOKENIZER_URL} {openpi_tokenizer_path()}`), or "
        f"`hf download {LEROBOT_TOKENIZER_REPO} tokenizer.model` (a gated repo: accept its license first)")


def tiny_corpus(sentences) -> list[str]:
    """Instructions in both prompt formats, plus digits and punctuation for π0.5's state text."""
    lines = []
    for s in sorted(set(sentences)):
        text = s.strip().replace("_", " ").replace("\n", " ")
        lines += [text, f"Task: {text}, State: 0 1 2 127 128 255;", "Action: "]
    lines.append(" ".join(str(i) for i in range(256)) + " ; , : . - _")
    return lines


def train_tiny_tokenizer(sentences, path, vocab_size: int = 512) -> Tokenizer:
    """Train (deterministically) a small SentencePiece model on the task instructions and write it to `path`.
    Cached by content hash: a matching `path` + ".sha256" skips training."""
    corpus = tiny_corpus(sentences)
    digest = hashlib.sha256("\n".join([_TINY_VERSION, str(vocab_size)] + corpus).encode()).hexdigest()
    path, stamp = Path(path), Path(str(path) + ".sha256")
    if path.is_file() and stamp.is_file() and stamp.read_text().strip() == digest:
        return Tokenizer(path.read_bytes())
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=buf, vocab_size=vocab_size, model_type="bpe",
        character_coverage=1.0, byte_fallback=True, hard_vocab_limit=False, split_digits=False,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, num_threads=1, shuffle_input_sentence=False,
        user_defined_symbols=["\n"], remove_extra_whitespaces=False, add_dummy_prefix=False,
        minloglevel=2)   # no dummy prefix, like PaliGemma
    tok = Tokenizer(buf.getvalue())
    if tok.vocab_size > vocab_size:
        raise ValueError(f"tiny tokenizer has {tok.vocab_size} pieces > vocab_size={vocab_size}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(tok.model_proto)
    os.replace(tmp, path)
    stamp.write_text(digest)
    return tok
