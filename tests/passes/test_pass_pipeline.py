"""pipeline and report: stage list, dumps, off switches, and the `netc plan` text."""

import copy
import importlib.util

import pytest
from pass_models import LENET5, MODELS, step_graph

from netc.compiler.build_ir import build
from netc.compiler.passes.report import lifetime_chart, plan_png, plan_report
from netc.compiler.pipeline import SWITCHES, disabled_stages, optimize


def test_dump_ir_writes_one_file_per_stage(tmp_path, monkeypatch):
    monkeypatch.setenv("NETC_DUMP_IR", str(tmp_path))
    optimize(step_graph(MODELS["mlp"]))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["00-input.txt", "01-simplify.txt", "02-eliminate_common.txt",
                     "03-eliminate_dead.txt", "04-fuse_kernels.txt", "05-plan_memory.txt"]
    assert (tmp_path / "04-fuse_kernels.txt").read_text().startswith("kernel graph mlp")
    assert "arena planned peak" in (tmp_path / "05-plan_memory.txt").read_text()


def test_env_and_argument_switches(monkeypatch, tmp_path):
    monkeypatch.setenv("NETC_DISABLE", "simplify, cse")
    assert disabled_stages({"dce"}) == {"simplify", "eliminate_common", "eliminate_dead"}
    g = step_graph(MODELS["mlp"])
    n = len(g)
    opt = optimize(g, dump_dir=tmp_path)
    assert len(opt.graph) == n  # nothing simplified, merged or removed
    assert "(stage disabled)" in (tmp_path / "01-simplify.txt").read_text()
    monkeypatch.setenv("NETC_DISABLE", "")
    with pytest.raises(ValueError, match="unknown optimizer stage 'simplfy'"):
        disabled_stages({"simplfy"})
    assert set(SWITCHES) == disabled_stages(set(SWITCHES))


def test_plan_report_from_a_built_model_and_from_a_graph():
    built = build("m.net", text=MODELS["transformer"], float_dtype="f64")
    n = len(built.graph)
    text = plan_report(built)
    assert len(built.graph) == n  # the caller's graph is untouched
    for needle in ("kernels (", "FLOPs", "region param", "planned peak", "naive sum", "MiB",
                   "lifetime of the", "reduction", "gemm"):
        assert needle in text
    step = plan_report(step_graph(LENET5, float_dtype="f32", grads_as_outputs=False), top=5)
    assert "conv2d_grad_weight" in step and "update c1.W" in step
    chart = step.split("lifetime of the ")[1].splitlines()
    assert len(chart) == 1 + 1 + 5 and all(line.endswith("|") for line in chart[1:])


def test_lifetime_chart_marks_exactly_the_live_steps():
    opt = optimize(step_graph(MODELS["mlp"]))
    plan = opt.plan
    rows = lifetime_chart(plan, top=3, columns=10_000).splitlines()[2:]
    biggest = sorted((b for b in plan.buffers if b.region == "arena"),
                     key=lambda b: (-b.size, b.start))[:3]
    for b, row in zip(biggest, rows):
        cells = row.split("|")[1]
        assert len(cells) == plan.steps
        assert [i for i, c in enumerate(cells) if c == "#"] == list(
            range(max(b.start, 0), min(b.end, plan.steps - 1) + 1))


def test_plan_png_writes_or_declines(tmp_path):
    g = copy.deepcopy(step_graph(MODELS["mlp"]))
    path = tmp_path / "arena.png"
    wrote = plan_png(g, path)
    assert wrote == (importlib.util.find_spec("matplotlib") is not None)
    assert path.exists() == wrote
