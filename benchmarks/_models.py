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


def clap_checkpoint(folder: Path) -> tuple[Path, Path]:
    """(HTSAT-tiny + RoBERTa CLAP checkpoint in the published layout, roberta-like tokenizer folder)."""
    from clap_helpers import build_roberta_tokenizer, make_checkpoint

    path = folder / "clap-htsat-tiny-random.pt"
    tok = folder / "roberta-tokenizer"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        make_checkpoint(path, amodel="HTSAT-tiny", seed=0)
    if not (tok / "vocab.json").exists():
        build_roberta_tokenizer(tok)
    return path, tok


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
