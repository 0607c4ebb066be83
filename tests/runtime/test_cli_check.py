"""The netc command line through subprocesses: exit codes, JSON diagnostics, hostile inputs."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
GOOD = os.path.join(ROOT, "examples", "digits_mlp.net")


def netc(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "netc", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def assert_no_traceback(res):
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res.stderr


def test_check_ok():
    res = netc("check", GOOD)
    assert res.returncode == 0 and "ok" in res.stdout


def test_check_reports_located_errors(tmp_path):
    bad = tmp_path / "bad.net"
    bad.write_text("model m {\n    input x: f32[2, 3]\n    output o = x -> Dence(4)\n}\n")
    res = netc("check", str(bad), GOOD)
    assert res.returncode == 1
    assert f"{bad}:3:21: error: unknown layer 'Dence' — did you mean 'Dense'?" in res.stderr
    assert "^^^^^" in res.stderr
    assert_no_traceback(res)


def test_check_json(tmp_path):
    bad = tmp_path / "bad.net"
    bad.write_text("model m {\n    h = x y\n}\n")
    res = netc("check", "--format", "json", str(bad))
    assert res.returncode == 1
    diags = json.loads(res.stdout)
    assert diags[0]["line"] == 2 and diags[0]["col"] == 11
    assert set(diags[0]) >= {"file", "line", "col", "end_line", "end_col", "severity", "message"}


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "no such file"),
    (lambda p: p.mkdir(), "is a directory"),
    (lambda p: p.write_bytes(b"\xff\xfe\x00model"), "not UTF-8"),
    (lambda p: p.write_bytes(b"model m {\x00}"), "NUL byte"),
    (lambda p: p.write_text(""), "ok"),
    (os.mkfifo, "it is not a regular file (a FIFO)"),  # was read, and waited for forever
])
def test_hostile_files(tmp_path, make, message):
    p = tmp_path / "f.net"
    make(p)
    res = netc("check", str(p))
    assert message in res.stderr + res.stdout
    assert res.returncode == (0 if message == "ok" else 1)
    assert_no_traceback(res)


@pytest.mark.parametrize("args", [
    (), ("bogus",), ("check",), ("check", "--frob", GOOD), ("graph", GOOD, "--stage", "nope"),
    ("check", "--set", "x", GOOD)])
def test_bad_usage_exits_2(args):
    res = netc(*args)
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert_no_traceback(res)


def test_set_overrides_and_unknown_keys():
    assert netc("check", "--set", "hidden=32", GOOD).returncode == 0
    res = netc("graph", GOOD, "--set", "hiden=32")  # a model mistake: exit 1
    assert res.returncode == 1 and "did you mean 'hidden'" in res.stderr


def test_graph_stages():
    res = netc("graph", GOOD, "--stage", "forward")
    assert res.returncode == 0 and 'param "fc1.W"' in res.stdout
    res = netc("graph", GOOD, "--stage", "parsed")
    assert res.returncode == 0 and "ModelDef" in res.stdout
    res = netc("graph", GOOD, "--format", "dot")
    assert res.returncode == 0 and res.stdout.startswith("digraph")


def test_version():
    res = netc("--version")
    assert res.returncode == 0 and res.stdout.startswith("netc ")


def test_graph_backward_and_optimized_stages():
    res = netc("graph", GOOD, "--stage", "backward")
    assert res.returncode == 0 and "update opt.fc1.W.m" in res.stdout
    res = netc("graph", GOOD, "--stage", "optimized")
    assert res.returncode == 0 and "graph digits_mlp" in res.stdout


def test_plan_lists_kernels_and_arena(tmp_path):
    res = netc("plan", GOOD)
    assert res.returncode == 0, res.stderr
    assert "kernels" in res.stdout and "planned peak" in res.stdout and "naive sum" in res.stdout
    png = tmp_path / "plan.png"
    res = netc("plan", GOOD, "--png", str(png))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert res.returncode == 1 and "matplotlib" in res.stderr
    else:
        assert res.returncode == 0 and png.read_bytes().startswith(b"\x89PNG")


def test_emit_llvm_asm_and_object(tmp_path):
    res = netc("emit", GOOD)
    assert res.returncode == 0 and "define " in res.stdout
    res = netc("emit", GOOD, "--asm")
    assert res.returncode == 0 and ("vfmadd" in res.stdout or "mulps" in res.stdout)
    out = tmp_path / "step.o"
    res = netc("emit", GOOD, "--obj", "-o", str(out))
    assert res.returncode == 0 and out.read_bytes()[:4] == b"\x7fELF"
    assert netc("emit", GOOD, "--obj").returncode == 2
