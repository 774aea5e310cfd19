"""int8 towers: ONNX Runtime dynamic quantisation of an exported fp32 tower (no torch).

On two cores, CLIP's image tower as an ONNX model with its MatMuls quantised
(int8 weights per output channel, activations quantised per call) runs 18 ms
per image against 34 ms for torch's dynamic int8 Linear layers and 47-55 ms
in fp32 (benchmarks/encoders.py), at cosine >= 0.9997 to fp32 on random
weights. It is derived from the fp32 export in about 5 s, once per
checkpoint, and checked against it on probe inputs before it is used.

The weights use 7 bits (``reduce_range``: int8 values in [-64, 64]). ONNX
Runtime multiplies uint8 activations by int8 weights; on x86 CPUs without
VNNI (AVX2 or AVX-512 only, e.g. AMD Zen 1-3) its kernel adds each pair of
products in a saturating int16 (``vpmaddubsw``), and with full-range weights
(up to 127 * 255 * 2 > 32767) that clips: ViT-B-32's tower fell to cosine
0.991 on an AVX2-only CPU (VNNI's instruction sums in int32 and does not clip).
At 7 bits no pair can clip (64 * 255 * 2 < 32767), so every CPU computes the
same exact integer products (cosine 0.9997-0.9998 on random weights) with the
same kernel and speed; uint8 weights would also be exact, but 1.3-1.4x slower.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from xmr.encoders.tower_files import TowerUnsupported, onnx_version, staging

INT8 = "int8"
# the towers an int8 variant is made for; text and audio stay with torch's int8 (see precision)
QUANTISED = ("image",)
MIN_COSINE = 0.999
SETTINGS: dict[str, Any] = {"per_channel": True, "op_types": ["MatMul"], "weights": "QInt8", "reduce_range": True}


def variant_name(tower: str, precision: str) -> str:
    """The folder name of ``tower`` at ``precision`` (the fp32 export keeps the tower's name)."""
    return f"{tower}-{precision}" if precision == INT8 else tower


def current(dst: Path) -> bool:
    """Whether ``dst`` holds an int8 tower made with today's ``SETTINGS``."""
    try:
        return json.loads((dst / "manifest.json").read_text(encoding="utf-8")).get("quantisation") == SETTINGS
    except (OSError, ValueError, AttributeError):
        return False


def quantise(src: Path, dst: Path) -> Path:
    """Write the int8 variant of the fp32 tower folder ``src`` as ``dst``; returns ``dst``.

    One made with other settings is made again (full-range weights clip on CPUs without
    VNNI, and a models dir can move between machines).
    Raises TowerUnsupported when the tower has no int8 variant or the result strays
    from fp32 (then images at int8 stop with an error: engine.int8_embed)."""
    if current(dst):
        return dst
    manifest = json.loads((src / "manifest.json").read_text(encoding="utf-8"))
    if manifest.get("tower") not in QUANTISED:
        raise TowerUnsupported(f"no int8 variant of the {manifest.get('tower')} tower")
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if dst.exists() and not current(dst):  # stale: staging moves a new one into place only where none is
        shutil.rmtree(dst)
    with staging(dst) as tmp:
        was = logging.root.manager.disable
        logging.disable(logging.WARNING)  # the quantiser's advice on the root logger, to stderr
        try:
            quantize_dynamic(
                str(src / "model.onnx"),
                str(tmp / "model.onnx"),
                weight_type=QuantType.QInt8,
                per_channel=SETTINGS["per_channel"],
                # 7-bit weights: no int16 saturation on x86 CPUs without VNNI (see the module's doc)
                reduce_range=SETTINGS["reduce_range"],
                op_types_to_quantize=SETTINGS["op_types"],
                # the exported graph leaves some shapes to run time; quantising needs a default type
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
            cosine = _probe_cosine(src, tmp, manifest)
        except Exception as exc:  # an op or size the quantiser does not handle: no int8 tower
            raise TowerUnsupported(f"cannot quantise the {manifest['tower']} tower: {exc}") from exc
        finally:
            logging.disable(was)
        if not np.isfinite(cosine) or cosine < MIN_COSINE:
            raise TowerUnsupported(f"the int8 {manifest['tower']} tower strays from fp32 (cosine {cosine:.5f})")
        manifest.update(
            {"precision": INT8, "quantisation": SETTINGS, "int8_min_cosine": cosine, "onnxruntime": onnx_version()}
        )
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
    return dst


def _probe_cosine(src: Path, quantised: Path, manifest: dict[str, Any]) -> float:
    import onnxruntime as ort

    h, w = manifest["preprocess"]["size"]
    # smooth images (low-frequency noise), the kind of input the tower sees, not white noise
    rng = np.random.default_rng(0)
    coarse = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    pixels = np.ascontiguousarray(np.kron(coarse, np.ones((1, 1, -(-h // 8), -(-w // 8)), np.float32))[:, :, :h, :w])
    so = ort.SessionOptions()
    so.log_severity_level = 3
    out = []
    for folder in (src, quantised):
        sess = ort.InferenceSession(str(folder / "model.onnx"), so, providers=["CPUExecutionProvider"])
        v = np.asarray(sess.run(None, {"pixels": pixels})[0], np.float32)
        out.append(v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12))
    return float(np.min((out[0] * out[1]).sum(axis=1)))
