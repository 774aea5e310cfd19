"""Random-weight checkpoints of the default architectures, as files a user would pass.

Speed does not depend on the weights, so the benchmarks build the real
architectures with random weights and load them through xmr's own options.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for _p in (REPO / "tests", REPO):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

CLIP_ARCH = "ViT-B-32"


def clip_checkpoint(folder: Path, arch: str = CLIP_ARCH) -> Path:
    """open_clip's ``arch`` with random weights (seed 0), saved as a state dict."""
    import open_clip
    import torch

    path = folder / f"{arch}-random.pt"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        logging.disable(logging.WARNING)  # "No pretrained weights loaded"
        try:
            model = open_clip.create_model(arch, pretrained=None)
        finally:
            logging.disable(logging.NOTSET)
        torch.save(model.state_dict(), path)
    return path


# English words of the benchmarks' texts (notes, captions, queries): whole tokens
# in the benchmark tokenizer, as they are in roberta-base's real vocabulary
NOTE_WORDS = (
    "buy milk call mum about the weekend trip fix the bike brakes before monday meeting notes budget review "
    "garden seeds tomato basil remember passport renew library books due friday dentist appointment tuesday "
    "idea for a short story about a lighthouse keeper pay the electricity bill water the plants ask Sam"
).split()


def benchmark_words() -> list[str]:
    """Words of every text a benchmark embeds: the bridge concepts, the notes,
    the captions and the fixture prose, each once."""
    from encoders import _ADJ, _NOUN, _PLACE  # benchmarks/encoders.py's captions

    from fixtures.make_fixtures import _GLUE, _WORDS
    from xmr.bridge import load_concepts

    words = list(NOTE_WORDS)
    for concept in load_concepts():  # what an index run embeds as the bridge vocabulary
        words.extend(concept.split())
    for topic, vocab in _WORDS.items():
        words.append(topic)
        words.extend(vocab.split())
    words.extend(_GLUE)
    words.extend(["a", "photo", "of", "near", "the", *_ADJ, *_NOUN, *_PLACE])
    return list(dict.fromkeys(words))


def roberta_tokenizer(folder: Path) -> Path:
    """The benchmarks' 50,265-entry RoBERTa-layout tokenizer, with their words as whole tokens.

    The tests' tokenizer spells most words byte by byte (39 tokens for a
    10-word note, where roberta-base's real vocabulary gives 13), which made
    text look three times as costly as it is.
    """
    from clap_helpers import build_roberta_tokenizer

    if not (folder / "vocab.json").exists():
        build_roberta_tokenizer(folder, words=benchmark_words())
    return folder


def clap_checkpoint(folder: Path) -> tuple[Path, Path]:
    """(HTSAT-tiny + RoBERTa CLAP checkpoint in the published layout, roberta-like tokenizer folder)."""
    from clap_helpers import make_checkpoint

    path = folder / "clap-htsat-tiny-random.pt"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        make_checkpoint(path, amodel="HTSAT-tiny", seed=0)
    return path, roberta_tokenizer(folder / "roberta-words")


def xmr_env(base: dict[str, str], tmp: Path, clap_tokenizer: Path) -> dict[str, str]:
    """Environment for an ``xmr`` subprocess: offline, caches in ``tmp``, this checkout first on the path."""
    env = dict(base)
    env.update(
        XMR_OFFLINE="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        XMR_MODELS_DIR=str(tmp / "models"),
        HF_HOME=str(tmp / "hf"),
        XMR_CLAP_TOKENIZER=str(clap_tokenizer),
        PYTHONPATH=str(REPO) + (":" + base["PYTHONPATH"] if base.get("PYTHONPATH") else ""),
    )
    for name in ("XMR_PRECISION", "XMR_HOME", "XMR_CLIP_MODEL", "XMR_CLAP_MODEL"):
        env.pop(name, None)
    return env
