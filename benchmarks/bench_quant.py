"""int8 benchmarks: the integer GEMM against fastgrad's float32 GEMM, and
predict of the 784-512-512-10 MLP in float32 and int8 against PyTorch and
ONNX Runtime (each skipped cleanly when not importable), 2 threads.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest benchmarks/bench_quant.py \
        --benchmark-only --benchmark-group-by=group --benchmark-columns=median,iqr,rounds \
        --benchmark-max-time=0.5 --benchmark-min-rounds=3
    pytest benchmarks/bench_quant.py --benchmark-disable      # CI: each once, fast

Groups (one run gives every ratio):
  qgemm 1024^3           fastgrad float32 GEMM; fastgrad qgemm u8 x s8 -> s32 on
                         each int8 path this CPU runs (avx512vnni, avxvnni,
                         avx2 = widened vpmaddwd; baseline only with FG_BENCH_ALL=1)
  predict 10000 rows     fastgrad fp32 / int8 dynamic / int8 static, torch fp32,
                         torch.ao.quantization.quantize_dynamic, ONNX Runtime fp32
                         and onnxruntime.quantization.quantize_dynamic (QInt8)
  predict 1 row          the same models, one row (latency)
Every model holds the same weights (the fastgrad float model's).
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _native
from fastgrad import _threads as fg_threads

Q = _native.module("quant")
pytestmark = pytest.mark.skipif(Q is None, reason="native quant module not built")
THREADS = 2
ROWS = 10000


@pytest.fixture
def threads():
    saved = fg_threads.explicit_num_threads()
    fg.set_num_threads(THREADS)
    yield THREADS
    fg_threads.set_num_threads(saved)


def _gops(benchmark, ops_count, key="GOPs"):
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None and stats.stats.median > 0:
        benchmark.extra_info[key] = round(ops_count / stats.stats.median / 1e9, 1)


# ------------------------------------------------------------------ qgemm 1024^3
def _gemm_operands():
    r = np.random.default_rng(0)
    n = 1024
    return (r.integers(0, 256, (n, n), dtype=np.uint8), r.integers(-128, 128, (n, n), dtype=np.int8),
            r.standard_normal((n, n)).astype(np.float32), r.standard_normal((n, n)).astype(np.float32))


def test_gemm_float32(benchmark, threads):
    from fastgrad.backend import NativeOps
    ops = NativeOps()
    _, _, a, b = _gemm_operands()
    c = np.empty_like(a)
    benchmark.group = "qgemm 1024^3"
    benchmark.extra_info.update(threads=threads, path=_native.get_isa())
    benchmark(ops.gemm, a, b, c)
    _gops(benchmark, 2 * 1024 ** 3)


_PATHS = [p for p in (Q.qisa_supported() if Q else []) if p != "baseline" or os.environ.get("FG_BENCH_ALL")]


@pytest.mark.parametrize("path", _PATHS)
def test_qgemm(benchmark, threads, path):
    from fastgrad.backend import NativeOps
    ops = NativeOps()
    a, b, _, _ = _gemm_operands()
    pb = ops.qpack(b)
    out = np.empty((1024, 1024), np.int32)
    Q.set_qisa(path)
    try:
        benchmark.group = "qgemm 1024^3"
        benchmark.extra_info.update(threads=threads, path=path)
        benchmark(ops.qgemm, a, pb, out)
    finally:
        Q.set_qisa(None)
    np.testing.assert_array_equal(out[:3], a[:3].astype(np.int64) @ b.astype(np.int64))
    _gops(benchmark, 2 * 1024 ** 3)


# ------------------------------------------------------------------ the MLP
_CACHE = {}


def _models():
    if "fg" in _CACHE:
        return _CACHE
    fg.set_seed(0)
    m = fg.Sequential([fg.layers.Dense(512, activation="relu", input_shape=(784,)),
                       fg.layers.Dense(512, activation="relu"), fg.layers.Dense(10, activation="softmax")])
    x = np.random.default_rng(1).random((ROWS, 784), dtype=np.float32)
    _CACHE.update(fg=m, x=x, dyn=fg.quantization.quantize_dynamic(m),
                  static=fg.quantization.quantize_static(m, x[:1000], method="percentile"))
    return _CACHE


def _weights():
    m = _models()["fg"]
    return [(l.params["kernel"], l.params["bias"]) for l in m.layers]


def _torch_models():
    torch = pytest.importorskip("torch")
    if "torch" not in _CACHE:
        layers = []
        for i, (w, b) in enumerate(_weights()):
            lin = torch.nn.Linear(w.shape[0], w.shape[1])
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T)))
                lin.bias.copy_(torch.from_numpy(b))
            layers += [lin, torch.nn.ReLU() if i < 2 else torch.nn.Softmax(dim=-1)]
        tm = torch.nn.Sequential(*layers).eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tq = torch.ao.quantization.quantize_dynamic(tm, {torch.nn.Linear}, dtype=torch.qint8)
        _CACHE["torch"] = (tm, tq)
    return torch, _CACHE["torch"]


def _ort_sessions(tmp_dir):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    if "ort" not in _CACHE:
        from onnx import TensorProto, helper, numpy_helper
        from onnxruntime.quantization import QuantType, quantize_dynamic
        nodes, inits, cur = [], [], "x"
        for i, (w, b) in enumerate(_weights()):
            inits += [numpy_helper.from_array(np.asarray(w, np.float32), f"w{i}"),
                      numpy_helper.from_array(np.asarray(b, np.float32), f"b{i}")]
            nodes += [helper.make_node("MatMul", [cur, f"w{i}"], [f"m{i}"]),
                      helper.make_node("Add", [f"m{i}", f"b{i}"], [f"z{i}"])]
            cur = f"a{i}"
            nodes.append(helper.make_node("Relu" if i < 2 else "Softmax", [f"z{i}"], [cur if i < 2 else "y"],
                                          **({} if i < 2 else {"axis": -1})))
        g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 784])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 10])], inits)
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        f32 = os.path.join(tmp_dir, "mlp.onnx")
        i8 = os.path.join(tmp_dir, "mlp_int8.onnx")
        onnx.save(model, f32)
        quantize_dynamic(f32, i8, weight_type=QuantType.QInt8, per_channel=True)
        so = ort.SessionOptions()
        so.intra_op_num_threads = THREADS
        so.inter_op_num_threads = 1
        _CACHE["ort"] = tuple(ort.InferenceSession(p, so, providers=["CPUExecutionProvider"]) for p in (f32, i8))
    return _CACHE["ort"]


def _top1_agree(a, b):
    return float(np.mean(np.asarray(a).argmax(1) == np.asarray(b).argmax(1)))


ROW_SETS = {"predict 10000 rows": ROWS, "predict 1 row": 1}


@pytest.mark.parametrize("group", list(ROW_SETS))
@pytest.mark.parametrize("kind", ["fp32", "int8 dynamic", "int8 static"])
def test_fastgrad_predict(benchmark, threads, group, kind):
    c = _models()
    x = c["x"][:ROW_SETS[group]]
    benchmark.group = f"{group} (784-512-512-10)"
    benchmark.extra_info.update(threads=threads, library="fastgrad", path=Q.qisa_active())
    if kind == "fp32":
        m = c["fg"]
        y = benchmark(m.predict, x, batch_size=ROWS, verbose=0)
    else:
        q = c["dyn" if kind == "int8 dynamic" else "static"]
        y = benchmark(q.predict, x, batch_size=ROWS)
        benchmark.extra_info["top1_vs_fp32"] = _top1_agree(y, c["fg"].predict(x, verbose=0))


@pytest.mark.parametrize("group", list(ROW_SETS))
@pytest.mark.parametrize("kind", ["fp32", "int8 quantize_dynamic"])
def test_torch_predict(benchmark, group, kind):
    torch, (tm, tq) = _torch_models()
    c = _models()
    xt = torch.from_numpy(c["x"][:ROW_SETS[group]])
    saved = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        benchmark.group = f"{group} (784-512-512-10)"
        benchmark.extra_info.update(threads=THREADS, library="torch")
        model = tm if kind == "fp32" else tq
        with torch.inference_mode():
            y = benchmark(model, xt)
    finally:
        torch.set_num_threads(saved)
    benchmark.extra_info["top1_vs_fp32"] = _top1_agree(y.numpy(), c["fg"].predict(c["x"][:ROW_SETS[group]], verbose=0))


@pytest.mark.parametrize("group", list(ROW_SETS))
@pytest.mark.parametrize("kind", ["fp32", "int8 quantize_dynamic"])
def test_onnxruntime_predict(benchmark, tmp_path_factory, group, kind):
    sess = _ort_sessions(str(tmp_path_factory.mktemp("onnx")))[0 if kind == "fp32" else 1]
    c = _models()
    x = c["x"][:ROW_SETS[group]]
    benchmark.group = f"{group} (784-512-512-10)"
    benchmark.extra_info.update(threads=THREADS, library="onnxruntime")
    y = benchmark(sess.run, None, {"x": x})[0]
    benchmark.extra_info["top1_vs_fp32"] = _top1_agree(y, c["fg"].predict(x, verbose=0))
