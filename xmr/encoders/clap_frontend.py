"""CLAP's spectrogram by FFT at int8 (torch side; imported by the CLAP backend only).

laion-clap computes HTS-AT's STFT as two Conv1d layers holding the windowed DFT
matrix (torchlibrosa): 1,026 x 1,024 multiply-adds per frame, ~1 GMAC per 10 s
window, about a tenth of the int8 audio encode on two cores. ``torch.stft``
gives the same power spectrogram (relative difference ~1e-6) in a fraction of
the time. fp32 keeps laion-clap's own module, which the fidelity tests hold to
1e-5; int8 is approximate by definition and takes the FFT.
"""

from __future__ import annotations

import functools
from typing import Any


def use_fft(audio_branch: Any) -> bool:
    """Replace ``audio_branch.spectrogram_extractor`` with its FFT twin; False where it is not
    torchlibrosa's power spectrogram of the layout this reproduces."""
    import torch

    old = getattr(audio_branch, "spectrogram_extractor", None)
    stft = getattr(old, "stft", None)
    conv_real, conv_imag = getattr(stft, "conv_real", None), getattr(stft, "conv_imag", None)
    if old is None or conv_real is None or conv_imag is None or getattr(old, "power", None) != 2.0:
        return False
    n_fft = int(stft.n_fft)
    weight = conv_real.weight.detach()
    if weight.shape != (n_fft // 2 + 1, 1, n_fft) or conv_real.stride[0] < 1:
        return False
    audio_branch.spectrogram_extractor = FftSpectrogram(
        n_fft=n_fft,
        hop=int(conv_real.stride[0]),
        # the DFT row of frequency 0 is the window itself (cos 0 = 1), zero-padded to n_fft
        window=weight[0, 0, :].clone(),
        center=bool(stft.center),
        pad_mode=str(stft.pad_mode),
    )
    audio_branch.spectrogram_extractor.to(weight.device)
    assert isinstance(audio_branch.spectrogram_extractor, torch.nn.Module)
    return True


@functools.cache
def _module() -> Any:
    import torch

    class _FftSpectrogram(torch.nn.Module):
        """(batch, samples) -> (batch, 1, frames, n_fft // 2 + 1) power, as torchlibrosa's Spectrogram."""

        def __init__(self, n_fft: int, hop: int, window: Any, center: bool, pad_mode: str) -> None:
            super().__init__()
            self.n_fft, self.hop, self.center, self.pad_mode = n_fft, hop, center, pad_mode
            self.register_buffer("window", window)

        def forward(self, x: Any) -> Any:
            spec = torch.stft(
                x,
                self.n_fft,
                hop_length=self.hop,
                win_length=self.n_fft,
                window=self.window,
                center=self.center,
                pad_mode=self.pad_mode,
                return_complex=True,
            )
            return (spec.real**2 + spec.imag**2).transpose(1, 2)[:, None]

    return _FftSpectrogram


def FftSpectrogram(**kwargs: Any) -> Any:  # noqa: N802 - a class built on first use (torch is imported lazily)
    return _module()(**kwargs)
