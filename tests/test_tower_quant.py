"""int8 towers (xmr.encoders.tower_quant) on a small generated ONNX graph.

The int8 tower must give the same vectors on every CPU: ONNX Runtime's uint8 x int8
kernel on x86 without VNNI adds pairs of products in a saturating int16, so the
quantised weights must stay within 7 bits, and a graph built to make full-range
weights clip there must still match fp32.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx  # declared dependencies (pyproject): a missing one is a failure, not a skip
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from xmr.encoders import tower_quant
from xmr.encoders.towers import TowerUnsupported

SIZE = 8
DIM = 16


def _fp32_tower(folder: Path) -> np.ndarray:
    """A one-MatMul image 'tower' whose weights are all positive and close to their column's
    maximum: with activations near the top of uint8, full-range int8 weights would make every
    pair of products exceed int16 (2 * 255 * 127 > 32767). Returns the weights."""
    rng = np.random.default_rng(3)
    weights = (1.0 + 0.05 * rng.standard_normal((3 * SIZE * SIZE, DIM))).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["pixels"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "w"], ["embedding"]),
        ],
        "tiny-image-tower",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", DIM])],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder.mkdir(parents=True)
    onnx.save(model, str(folder / "model.onnx"))
    manifest = {"tower": "image", "preprocess": {"size": [SIZE, SIZE]}, "model_id": "tiny", "format": 1}
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return weights


def _run(folder: Path, pixels: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # as towers._Tower runs it
    sess = ort.InferenceSession(str(folder / "model.onnx"), so, providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {"pixels": pixels})[0], np.float64)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_int8_weights_stay_within_7_bits_and_match_fp32_on_inputs_that_would_saturate(tmp_path: Path) -> None:
    src = tmp_path / "image"
    weights = _fp32_tower(src)
    dst = tower_quant.quantise(src, tmp_path / "image-int8")
    manifest = json.loads((dst / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["precision"] == "int8" and manifest["quantisation"]["reduce_range"] is True
    assert manifest["int8_min_cosine"] >= tower_quant.MIN_COSINE
    q = onnx.load(str(dst / "model.onnx"))
    assert "MatMulInteger" in {n.op_type for n in q.graph.node}  # it did quantise
    ints = [numpy_helper.to_array(t) for t in q.graph.initializer if t.data_type == TensorProto.INT8]
    assert [a.shape for a in ints if a.ndim == 2] == [weights.shape]  # the weights (and their zero points)
    # 7 bits: |255 * w0 + 255 * w1| <= 32640 fits int16, so no CPU's kernel can clip
    assert all(int(np.abs(a.astype(np.int32)).max()) <= 64 for a in ints)
    assert max(int(np.abs(a.astype(np.int32)).max()) for a in ints) == 64  # the range is used
    # bright images: activations near 255 against weights near their column's maximum
    rng = np.random.default_rng(5)
    pixels = rng.uniform(0.6, 1.0, (6, 3, SIZE, SIZE)).astype(np.float32)
    pixels[:, :, 0, 0] = 0.0  # zero stays representable (zero point 0): activations reach 255
    raw = _run(dst, pixels)
    cos = (_unit(_run(src, pixels)) * _unit(raw)).sum(axis=1)
    assert cos.min() >= tower_quant.MIN_COSINE, cos
    want = pixels.reshape(len(pixels), -1).astype(np.float64) @ weights.astype(np.float64)
    assert np.abs(raw - want).max() <= 0.02 * np.abs(want).max()  # the values too, not only their direction


def test_only_the_image_tower_has_an_int8_variant(tmp_path: Path) -> None:
    src = tmp_path / "text"
    src.mkdir()
    (src / "manifest.json").write_text(json.dumps({"tower": "text"}), encoding="utf-8")
    with pytest.raises(TowerUnsupported, match="no int8 variant of the text tower"):
        tower_quant.quantise(src, tmp_path / "text-int8")
    assert not (tmp_path / "text-int8").exists()


def test_an_int8_tower_made_with_other_settings_is_made_again(tmp_path: Path) -> None:
    src = tmp_path / "image"
    _fp32_tower(src)
    dst = tower_quant.quantise(src, tmp_path / "image-int8")
    first = (dst / "model.onnx").read_bytes()
    assert tower_quant.quantise(src, dst) == dst and (dst / "model.onnx").read_bytes() == first  # current: kept
    # as the full-range quantiser (before reduce_range) left it
    old = json.loads((dst / "manifest.json").read_text(encoding="utf-8"))
    old["quantisation"] = {k: v for k, v in old["quantisation"].items() if k != "reduce_range"}
    (dst / "manifest.json").write_text(json.dumps(old), encoding="utf-8")
    (dst / "model.onnx").write_bytes(b"stale")
    assert not tower_quant.current(dst)
    tower_quant.quantise(src, dst)
    assert tower_quant.current(dst) and (dst / "model.onnx").read_bytes() == first
