"""--benchmark --profile: the attribution of a step's time to categories, each side's naming of its ops, a real
profile of a small U-Net step on each side (categories adding up to the step, the trace readable), and the rows
and FLOPs the parent plans with."""
from __future__ import annotations

import json
import re

import pytest

import compare
from conftest import side_module
from harness.benchmark import flops
from harness.benchmark import profile as bench_profile
from harness.benchmark.rows import Row, fresh_model, fresh_step, plan_rows
from harness.registry import task_of
from shared.execution import Execution
from shared.profiling import CATEGORIES, COMPILED_CONVOLUTIONS, OUTSIDE, Kernel, attribute, mean_step
from shared.tasks import UNetSpec


def test_overlapping_kernels_share_the_instant_and_everything_adds_up_to_the_window():
    kernels = [Kernel(0, 10, "loss", "a"), Kernel(5, 15, "pooling", "b", thread="other"),
               Kernel(20, 30, "batch norm", "c"), Kernel(50, 60, "batch norm", "outside the window")]
    step = attribute(kernels, [(0, 40)])[0]
    assert step["loss"] == pytest.approx(0.0075)  # 5 us alone, 5 us shared: 7.5 us
    assert step["pooling"] == pytest.approx(0.0075)
    assert step["batch norm"] == pytest.approx(0.010)  # the kernel after the window is not counted
    assert step[OUTSIDE] == pytest.approx(0.015)  # 15-20 and 30-40
    assert sum(step.values()) == pytest.approx(0.040)


def test_a_kernel_across_two_windows_is_cut_at_their_edges():
    steps = attribute([Kernel(5, 25, "pooling", "p")], [(0, 10), (10, 30)])
    assert [step["pooling"] for step in steps] == pytest.approx([0.005, 0.015])
    assert mean_step(steps)[OUTSIDE] == pytest.approx((0.005 + 0.005) / 2)


@pytest.mark.parametrize("name, expected", [
    ("unet_1/enc1_1/enc1_conv1_1/BiasAdd:_FusedConv2D", "convolution forward"),
    ("unet_1/enc1_1/enc1_conv1_1/BiasAdd:_MklNativeFusedConv2D", "convolution forward"),
    ("gradient_tape/unet_1/dec1_1/dec1_conv1_1/convolution/Conv2DBackpropFilter:Conv2DBackpropFilter",
     "convolution backward"),
    ("gradient_tape/unet_1/head_1/BiasAdd/BiasAddGrad:BiasAddGrad", "convolution backward"),
    ("unet_1/up4_1/conv_transpose:Conv2DBackpropInput", "transposed convolution"),
    ("gradient_tape/unet_1/up4_1/conv_transpose/Conv2D:Conv2D", "transposed convolution"),
    ("unet_1/enc2_1/enc2_bn1_1/Mean:Mean", "batch norm"),
    ("gradient_tape/unet_1/enc2_1/enc2_bn1_1/mul/Mul:Mul", "batch norm"),
    ("unet_1/enc2_1/Relu:Relu", "activations and elementwise"),
    ("gradient_tape/unet_1/max_pooling2d_1/MaxPool2d/MaxPoolGrad:MaxPoolGrad", "pooling"),
    ("unet_1/dec1_1/concat:ConcatV2", "concatenation and copies"),
    ("gradient_tape/loss/logistic_loss/mul:Mul", "loss"),
    ("loss_1/Greater:Greater", "loss"),
    ("sgd/AssignAddVariableOp:AssignAddVariableOp", "optimizer update"),
    ("AddN_13:AddN", "activations and elementwise"),
])
def test_tensorflow_ops_are_sorted_by_their_scope_and_type(name, expected):
    tf_profile = side_module("tf", "profile")
    assert tf_profile.op_category(*name.rsplit(":", 1)) == expected


def test_an_op_run_eagerly_is_sorted_by_its_type_alone():
    tf_profile = side_module("tf", "profile")
    assert tf_profile.EAGER_OP.match("EagerLocalExecute: Conv2DBackpropFilter").group(1) == "Conv2DBackpropFilter"
    assert not tf_profile.EAGER_OP.match("EagerLocalExecute: __inference_train_step_graph_8695")  # the whole step
    assert tf_profile.op_category("", "Conv2DBackpropFilter") == "convolution backward"
    assert tf_profile.op_category("", "Conv2D") == "convolution forward"
    assert tf_profile.op_category("", "Mul") == "activations and elementwise"


@pytest.mark.parametrize("hlo, expected", [("convolution.18", COMPILED_CONVOLUTIONS),
                                           ("wrapped_reduce-window.25", "pooling"),
                                           ("transpose_copy_fusion.5", "concatenation and copies"),
                                           ("multiply_reduce_fusion.3", "compiled (fused) region")])
def test_xla_thunks_are_sorted_by_their_hlo_name(hlo, expected):
    assert side_module("tf", "profile")._xla_category(hlo) == expected


def small_unet() -> UNetSpec:
    return UNetSpec(image_size=32, base_filters=4, depth=2, batch_size=2)


def test_a_real_profile_of_each_side_adds_up_to_the_step_and_writes_a_trace(side, tmp_path):
    spec = small_unet()
    task = task_of(spec)
    surface = task.surface(side, spec)
    execution = surface.runtime.configure_execution(Execution("function" if side == "tf" else "eager", "fp32"))
    batch = surface.task.to_tensors(*task.benchmark_batch(spec, 2, spec.seed), execution)
    step = fresh_step(surface, task, spec, execution)
    for _ in range(2):
        float(step(*batch))
    found = side_module(side, "profile").profile_steps(lambda: float(step(*batch)), 3, tmp_path)
    assert len(found["steps"]) == 3 == len(found["window_ms"])
    for categories, window in zip(found["steps"], found["window_ms"]):
        assert sum(categories.values()) == pytest.approx(window, rel=1e-6)
    mean = mean_step(found["steps"])
    for category in ("convolution forward", "convolution backward", "transposed convolution", "batch norm",
                     "pooling", "loss", "optimizer update"):
        assert mean[category] > 0, category
    assert mean[COMPILED_CONVOLUTIONS] == 0
    # the convolutions are most of a step, and the kernels account for most of it
    assert mean["convolution forward"] + mean["convolution backward"] > 0.2 * sum(mean.values())
    assert mean[OUTSIDE] < 0.5 * sum(mean.values())
    trace = json.loads((tmp_path / "trace.json").read_text())
    categories = {event.get("cat") for event in trace["traceEvents"]}
    assert not [event for event in trace["traceEvents"] if "__inference" in event["name"]]  # a function is no kernel
    assert {"step", "convolution backward", "loss"} <= categories
    if side == "tf":
        assert list(tmp_path.glob("plugins/profile/*/*.xplane.pb"))  # what TensorBoard's profile plugin opens


@pytest.mark.parametrize("form", ["by hand", "fused"])
def test_the_batchnorm_backward_is_batch_norm_on_tensorflow(form):
    """The BatchNorm's backward, TensorFlow builds outside the layer's scope, so the layer names it: by hand
    (keras_models/unet.py's keras.ops.custom_gradient, as Keras' engines and tf_impl/distributed.py run it), ten ops
    or more a layer; on the tf side's fused kernels (tf_impl/classifier.py), one FusedBatchNormGradV3 a layer. Either
    way every op of it counts as batch norm, as autodiff's did, and no arithmetic op of the step is left without a
    scope (it would land in "activations and elementwise")."""
    import tensorflow as tf

    from keras_models import unet

    spec = small_unet()
    task = task_of(spec)
    surface = task.surface("tf", spec)
    model = fresh_model(surface, task, spec) if form == "fused" else unet.build(spec)
    images = tf.constant(task.benchmark_batch(spec, 2, spec.seed)[0])

    @tf.function
    def gradients(images):
        with tf.GradientTape() as tape, tf.name_scope("loss"):
            loss = tf.reduce_sum(model(images, training=True))
        return tape.gradient(loss, model.trainable_variables)

    graph = gradients.get_concrete_function(images).graph
    arithmetic = [op for op in graph.get_operations() if op.type in ("Mul", "Sum", "Sub", "AddV2", "Neg", "RealDiv")]
    kernels = [op for op in graph.get_operations() if op.type == "FusedBatchNormGradV3"]
    backward = [op for op in arithmetic + kernels if re.match(r"(enc|dec)\d+_bn\d+(_\d+)?/", op.name)]
    if form == "fused":
        assert len(kernels) == 2 * (2 * spec.depth + 1) and set(kernels) <= set(backward)  # every BatchNorm's
    else:
        assert not kernels and len(backward) >= 10 * 2 * 5  # ten ops or more in each BatchNorm's backward
    tf_profile = side_module("tf", "profile")
    assert {tf_profile.op_category(op.name, op.type) for op in backward} == {"batch norm"}
    assert [op.name for op in arithmetic if "/" not in op.name] == []


def test_category_flops_add_up_to_the_training_step():
    spec = UNetSpec()
    by_category = flops.unet_category_flops(spec, 8)
    total = flops.training_flops(flops.unet_forward_flops(spec, 8))
    assert sum(by_category[c] for c in ("convolution forward", "convolution backward", "transposed convolution")) \
        == total == by_category[COMPILED_CONVOLUTIONS]


def test_profile_rows_come_after_the_timing_one_per_native_step_row():
    rows = plan_rows(["tf", "torch"], {"tf": ["function", "xla"], "torch": ["eager"]}, ["fp32"], [8], repeat=2,
                     pipeline=False, profile=bench_profile.SIDES)
    profiled = [row for row in rows if row.kind == "profile"]
    assert [(row.side, row.mode) for row in profiled] == [("tf", "function"), ("tf", "xla"), ("torch", "eager")]
    assert rows.index(profiled[0]) > max(index for index, row in enumerate(rows) if row.kind == "step")
    assert not [row for row in plan_rows(["tf", "torch"], {"tf": ["function"], "torch": ["eager"]}, ["fp32"], [8],
                                          repeat=1) if row.kind == "profile"]
    assert Row("tf", "profile", "function").name != Row("tf", "step", "function").name


def fake_profile(side: str, mode: str, conv_ms: float, outside_ms: float) -> dict:
    step = dict.fromkeys(CATEGORIES, 0.0)
    step.update({"convolution forward": conv_ms, OUTSIDE: outside_ms})
    return {"row": {"side": side, "mode": mode, "precision": "fp32", "batch_size": 8},
            "times_s": [(conv_ms + outside_ms) / 1000] * 3,
            "profile": {"steps": [step] * 3, "profiler": "x", "trace": "t.json", "top_ops": []}}


def test_the_summary_rates_the_convolutions_against_the_peak_and_pairs_the_sides(tmp_path):
    spec = UNetSpec()
    category_flops = {"8": flops.unet_category_flops(spec, 8)}
    timed = [{"side": "tf", "mode": "function", "precision": "fp32", "batch_size": 8, "stats": {"median_s": 0.1}}]
    entries = bench_profile.summarize([fake_profile("tf", "function", 73.19, 20.0),
                                       fake_profile("torch", "eager", 36.6, 5.0)], timed, category_flops,
                                      {"fp32": {"gflop_per_s": 100.0}})
    tf_entry = entries[0]
    forward = next(item for item in tf_entry["categories"] if item["category"] == "convolution forward")
    assert forward["gflop_per_s"] == pytest.approx(0.731906048 / 0.07319, rel=1e-4)  # 10.0 GFLOP/s
    assert forward["peak_fraction"] == pytest.approx(0.1, rel=1e-3)
    assert tf_entry["adds_up"] and tf_entry["outside_kernels_ms"] == pytest.approx(20.0)
    assert tf_entry["unprofiled_step_ms"] == pytest.approx(100.0) and entries[1]["unprofiled_step_ms"] is None
    assert [pair["title"] for pair in bench_profile.pairs(entries)] == ["training modes, fp32, batch 8"]
    assert bench_profile.plot(entries, tmp_path / "bars.png").stat().st_size > 1000
    assert "NOT within" not in "\n".join(bench_profile.markdown(entries))


def test_batch_norm_and_activations_are_also_given_together():
    """TensorFlow fuses a BatchNorm with its ReLU (one kernel, counted as batch norm), PyTorch does not: the report
    gives the two categories' sum beside them, on the console and in report.md."""
    entry = fake_profile("tf", "function", 30.0, 5.0)
    entry["profile"]["steps"] = [{**step, "batch norm": 3.25, "activations and elementwise": 1.5}
                                 for step in entry["profile"]["steps"]]
    (summary,) = bench_profile.summarize([entry], [], {}, {})
    assert bench_profile.fused_ms(summary) == pytest.approx(4.75)
    printed, written = "\n".join(bench_profile.console_lines([summary])), "\n".join(bench_profile.table_lines(summary))
    assert re.search(r"\nbatch norm \+ activations and elementwise +4\.75\n", printed)
    assert "Batch norm and activations and elementwise together: 4.75 ms" in written


def test_a_rate_above_the_machine_peak_is_called_out():
    entry = fake_profile("tf", "xla", 1.0, 60.0)  # 0.73 GFLOP of forward convolutions in 1 ms: 732 GFLOP/s
    (summary,) = bench_profile.summarize([entry], [], {"8": flops.unet_category_flops(UNetSpec(), 8)},
                                         {"fp32": {"gflop_per_s": 100.0}})
    assert summary["beyond_peak"] == ["convolution forward"]
    assert "Above the machine peak: convolution forward" in "\n".join(bench_profile.table_lines(summary))


def test_a_profile_that_misses_part_of_the_step_says_so():
    entry = fake_profile("tf", "function", 50.0, 0.0)
    entry["times_s"] = [0.08] * 3  # the wall clock saw 80 ms, the trace's categories 50
    (summary,) = bench_profile.summarize([entry], [], {"8": flops.unet_category_flops(UNetSpec(), 8)}, {})
    assert not summary["adds_up"]
    assert "NOT within 10%" in "\n".join(bench_profile.table_lines(summary))


def test_profile_is_refused_outside_the_unet(tmp_path, capsys):
    assert compare.main(["--task", "mlp", "--benchmark", "--profile", "--out", str(tmp_path / "never")]) == 2
    assert "--profile sorts a U-Net's step" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


@pytest.mark.slow
def test_benchmark_profile_end_to_end_writes_tables_bars_and_traces(tmp_path, capsys):
    """A small U-Net through compare.py: each side's step row, then its profile row, in worker processes."""
    out = tmp_path / "out"
    assert compare.main(["--task", "unet", "--benchmark", "--profile", "--image-size", "32", "--base-filters", "4",
                         "--modes", "tf:function,torch:eager", "--precisions", "fp32", "--warmup", "1", "--steps", "3",
                         "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "where the step goes (ms per step, --profile):" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["profile"] is True
    entries = {entry["side"]: entry for entry in results["profile"]}
    assert set(entries) == {"tf", "torch"}
    for entry in entries.values():
        assert entry["adds_up"], entry["sum_ms"]
        assert entry["unprofiled_step_ms"] > 0 and entry["profiled_steps"] == bench_profile.PROFILE_STEPS
        assert json.loads(open(entry["trace"]).read())["traceEvents"]
    assert (out / "benchmark_profile.png").stat().st_size > 1000
    assert results["stock"]["gate"]["passed"] and [row["batch_norm"] for row in results["stock"]["rows"]] == ["stock"]
    assert [(e["side"], e["mode"]) for e in results["profile"]] == [("tf", "function"), ("torch", "eager")]
    report = (out / "report.md").read_text()
    assert "## Where the step goes (--profile)" in report and "## Stock BatchNorm" in report
    assert re.search(r"^\| convolution backward +\| [0-9.]+ +\|", report, re.M)  # cells padded to the column
