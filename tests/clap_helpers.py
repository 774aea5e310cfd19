"""Helpers for the CLAP tests: a synthetic RoBERTa tokenizer, random-weight CLAP
checkpoints in the published LAION-CLAP format, and laion-clap's own
``CLAP_Module`` built offline as the reference implementation.

Nothing here touches the network; heavy imports happen inside functions.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

ROBERTA_VOCAB_SIZE = 50265

# roberta-base's config.json from the Hugging Face hub, restated here so the
# reference model does not share xmr's constant.
ROBERTA_BASE_CONFIG_JSON = {
    "architectures": ["RobertaForMaskedLM"],
    "attention_probs_dropout_prob": 0.1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 514,
    "model_type": "roberta",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 1,
    "type_vocab_size": 1,
    "vocab_size": 50265,
}

_WORDS = (
    "the a an of and to in is it that dog cat bird rain wind car engine music piano guitar drum voice "
    "speech man woman child laugh bark meow chirp siren bell water river sea wave thunder street crowd "
    "applause footsteps door knock phone ring train plane engine idle motor noise quiet loud soft fast"
).split()


def build_roberta_tokenizer(
    folder: Path, vocab_size: int = ROBERTA_VOCAB_SIZE, words: Iterable[str] = ()
) -> Path:
    """Write a byte-level BPE tokenizer laid out like roberta-base's files.

    Ids: <s>=0, <pad>=1, </s>=2, <unk>=3, the 256 byte symbols, then merged
    tokens, and <mask> last (vocab_size - 1), as in roberta-base. Merges first
    build some real words (so tokenisation is word-like), then fill up with
    pairs of byte symbols until the vocabulary has exactly ``vocab_size``
    entries. ``words`` become whole tokens too: benchmarks pass the words of
    their texts, so a text costs about as many tokens as with roberta-base's
    real vocabulary (where common English words are one token each).
    """
    from tokenizers import pre_tokenizers

    folder.mkdir(parents=True, exist_ok=True)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    assert len(alphabet) == 256
    vocab: dict[str, int] = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for ch in alphabet:
        vocab[ch] = len(vocab)
    merges: list[tuple[str, str]] = []
    full = vocab_size - 1  # room left before <mask>

    def add(a: str, b: str) -> None:
        if len(vocab) < full and a in vocab and b in vocab and a + b not in vocab:
            merges.append((a, b))
            vocab[a + b] = len(vocab)

    # word merges, then the word after the leading-space marker "Ġ"
    for word in _WORDS:
        cur = word[0]
        for ch in word[1:]:
            add(cur, ch)
            cur = cur + ch
        add("Ġ", word)
    ranks = {pair: i for i, pair in enumerate(merges)}

    def whole(symbols: str) -> None:
        # apply the merges so far as BPE does (lowest rank first), then join what is
        # left left to right with merges ranked after all others: those fire last, so
        # they cannot change how any earlier word splits
        parts = list(symbols)
        while len(parts) > 1:
            best = min(range(len(parts) - 1), key=lambda i: ranks.get((parts[i], parts[i + 1]), 1 << 30))
            if (parts[best], parts[best + 1]) not in ranks:
                break
            parts[best : best + 2] = [parts[best] + parts[best + 1]]
        cur = parts[0]
        for part in parts[1:]:
            if len(vocab) >= full:
                return
            if (cur, part) not in ranks:
                ranks[(cur, part)] = len(merges)
                merges.append((cur, part))
                vocab.setdefault(cur + part, len(vocab))
            cur += part

    for word in dict.fromkeys(w for w in words if w):
        if all(ch in vocab for ch in word):  # ASCII letters and marks are their own byte symbols
            whole(word)
            whole("Ġ" + word)
    for a in alphabet:
        for b in alphabet:
            if len(vocab) >= full:
                break
            add(a, b)
    vocab["<mask>"] = len(vocab)
    assert len(vocab) == vocab_size, len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    with open(folder / "merges.txt", "w", encoding="utf-8") as fh:
        fh.write("#version: 0.2\n")
        for a, b in merges:
            fh.write(f"{a} {b}\n")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "RobertaTokenizer", "model_max_length": 512}), encoding="utf-8"
    )
    (folder / "config.json").write_text(json.dumps(ROBERTA_BASE_CONFIG_JSON), encoding="utf-8")
    return folder


def laion_clap_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("laion_clap")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations)))


def laion_data_functions(*names: str) -> dict[str, Any]:
    """Functions from laion-clap's ``training/data.py``, compiled from its own
    source without importing the module (importing it fetches tokenizers)."""
    import ast

    import torch
    import torch.nn.functional as F

    path = laion_clap_dir() / "training" / "data.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    body: list[ast.stmt] = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names]
    assert {n.name for n in body} == set(names), names
    ns: dict[str, Any] = {"np": np, "torch": torch, "F": F, "suppress": contextlib.suppress}
    exec(compile(ast.Module(body=body, type_ignores=[]), str(path), "exec"), ns)
    return {n: ns[n] for n in names}


def randomise_bn_stats(sd: dict[str, Any], seed: int) -> dict[str, Any]:
    """Non-trivial BatchNorm statistics, so a buffer that failed to load would show."""
    import torch

    g = torch.Generator().manual_seed(seed)
    out = dict(sd)
    for k, v in sd.items():
        if k.endswith("running_var"):
            out[k] = 0.5 + torch.rand(v.shape, generator=g)
        elif k.endswith("running_mean"):
            out[k] = 0.1 * torch.randn(v.shape, generator=g)
    return out


def save_published_checkpoint(
    path: Path, sd: dict[str, Any], *, module_prefix: bool = True, position_ids: bool = True
) -> None:
    """Save like LAION-CLAP's released files: {"epoch", "name", "state_dict"},
    keys prefixed "module." (DataParallel) and the position_ids buffer that
    transformers < 4.31 saved."""
    import torch

    saved = dict(sd)
    if position_ids:
        saved["text_branch.embeddings.position_ids"] = torch.arange(514).expand((1, -1)).clone()
    prefix = "module." if module_prefix else ""
    torch.save({"epoch": 45, "name": path.stem, "state_dict": {prefix + k: v for k, v in saved.items()}}, path)


def make_checkpoint(
    path: Path,
    *,
    amodel: str = "HTSAT-tiny",
    enable_fusion: bool = False,
    fusion_type: str = "aff_2d",
    seed: int = 0,
    module_prefix: bool = True,
    position_ids: bool = True,
) -> dict[str, Any]:
    """Build a random-weight CLAP (laion-clap's class, via xmr's builder), save
    it in the published layout and return the saved state dict (unprefixed,
    without position_ids)."""
    import torch

    from xmr.encoders import clap as xclap

    torch.manual_seed(seed)
    model = xclap.build_clap_model(amodel, enable_fusion, fusion_type if enable_fusion else "None")
    sd = randomise_bn_stats({k: v.detach().clone() for k, v in model.state_dict().items()}, seed + 1)
    del model
    save_published_checkpoint(path, sd, module_prefix=module_prefix, position_ids=position_ids)
    return sd


@contextlib.contextmanager
def _offline_laion_clap_patches(tokenizer_dir: Path):
    """Make laion-clap's import and CLAP_Module() work offline: tokenizers
    come from ``tokenizer_dir`` (BERT/BART ones, only needed at import, are
    stand-ins) and ``RobertaModel.from_pretrained('roberta-base')`` builds the
    architecture from roberta-base's config with random weights."""
    import transformers

    patched = []

    def patch(cls: Any, fn: Any) -> None:
        patched.append((cls, cls.__dict__.get("from_pretrained")))
        cls.from_pretrained = classmethod(fn)

    orig_tok = transformers.RobertaTokenizer.from_pretrained

    def tok(cls: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        return orig_tok(str(tokenizer_dir), local_files_only=True)

    def model(cls: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        assert name == "roberta-base", name
        return cls(transformers.RobertaConfig(**ROBERTA_BASE_CONFIG_JSON))

    for cls in (transformers.BertTokenizer, transformers.RobertaTokenizer, transformers.BartTokenizer):
        patch(cls, tok)
    patch(transformers.RobertaModel, model)
    try:
        yield
    finally:
        for cls, orig in reversed(patched):
            if orig is None:
                del cls.from_pretrained
            else:
                cls.from_pretrained = orig


def reference_clap_module(
    tokenizer_dir: Path,
    state_dict: dict[str, Any] | None,
    *,
    amodel: str = "HTSAT-tiny",
    enable_fusion: bool = False,
) -> Any:
    """laion-clap's own ``CLAP_Module`` holding ``state_dict`` (or its own random
    initialisation when None), built offline.

    Imports the real ``laion_clap`` package (with its training.data), so call
    it only in a process where that pollution does not matter.
    """
    with _offline_laion_clap_patches(tokenizer_dir), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stdout(io.StringIO()):
            import laion_clap

            ref = laion_clap.CLAP_Module(enable_fusion=enable_fusion, amodel=amodel, device="cpu")
    if state_dict is not None:
        ref.model.load_state_dict(state_dict, strict=True)
    ref.eval()
    return ref


def install_librosa_torchaudio_shim() -> None:
    """laion-clap's fusion path computes mel spectrograms with torchaudio,
    which is not installed here. Give its ``training.data`` module a minimal
    stand-in written with librosa (an implementation independent of xmr's)."""
    import librosa
    import torch

    data = sys.modules["laion_clap.training.data"]

    class MelSpectrogram:
        def __init__(
            self,
            *,
            sample_rate,
            n_fft,
            win_length,
            hop_length,
            center,
            pad_mode,
            power,
            norm,
            onesided,
            n_mels,
            f_min,
            f_max,
        ):
            assert norm is None and onesided and power == 2.0
            self.kw = dict(
                sr=sample_rate,
                n_fft=n_fft,
                win_length=win_length,
                hop_length=hop_length,
                center=center,
                pad_mode=pad_mode,
                power=power,
                n_mels=n_mels,
                fmin=f_min,
                fmax=f_max,
                htk=True,
                norm=None,
                window="hann",
            )

        def to(self, device: Any) -> MelSpectrogram:
            return self

        def __call__(self, x: Any) -> Any:
            y = x.detach().cpu().numpy().astype(np.float64)
            return torch.from_numpy(librosa.feature.melspectrogram(y=y, **self.kw).astype(np.float32))

    class AmplitudeToDB:
        def __init__(self, top_db: Any = None):
            assert top_db is None

        def __call__(self, x: Any) -> Any:
            return 10.0 * torch.log10(torch.clamp(x, min=1e-10))

    shim = type(sys)("torchaudio_shim")
    shim.transforms = type(sys)("torchaudio_shim.transforms")
    shim.transforms.MelSpectrogram = MelSpectrogram
    shim.transforms.AmplitudeToDB = AmplitudeToDB
    data.torchaudio = shim
