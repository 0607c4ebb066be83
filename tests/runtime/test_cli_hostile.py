"""Hostile command lines, in-process: each is a clear message and an exit code, never a traceback,
and nothing the user owns (data, model files) is overwritten or left half-written."""

import numpy as np
import pytest
from model_cases import TINY_NET

from netc.cli import main

TINY = TINY_NET.replace("train tiny {\n", 'train tiny {\n    data      = "tiny.npz"\n')


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A folder holding tiny.net and its data tiny.npz (the default output's name), as cwd."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NETC_BACKEND", "interpret")
    (tmp_path / "tiny.net").write_text(TINY)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 3)).astype(np.float32)
    np.savez(tmp_path / "tiny.npz", x=x, y=(x[:, 0] > 0).astype(np.int32))
    np.savez(tmp_path / "other.npz", x=x, y=(x[:, 0] > 0).astype(np.int32))
    return tmp_path


def run(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal compiler error" not in err, err
    return code, err


@pytest.mark.parametrize("argv, what", [
    (["train", "tiny.net", "-q"], "the data file"),  # the default output tiny.npz
    (["train", "tiny.net", "-q", "--data", "other.npz", "-o", "./other.npz"], "the data file"),
    (["train", "tiny.net", "-q", "--validation", "other.npz", "-o", "other.npz"],
     "the validation file"),
    (["train", "tiny.net", "-q", "-o", "tiny.net"], "the model file"),
    (["predict", "tiny.net", "--data", "other.npz", "-o", "other.npz"], "the data file"),
    (["emit", "tiny.net", "-o", "tiny.net"], "the .net file"),
    (["tune", "tiny.net", "--grid", "hidden=2,3", "-o", "tiny.npz"], "the data file"),
])
def test_an_output_never_replaces_an_input(work, capsys, argv, what):
    # the default `netc train` output <model>.npz replaced a data file of that name, and -o
    # could name the data, validation, weights or .net file: each was overwritten silently
    before = {p.name: p.read_bytes() for p in work.iterdir() if p.is_file()}
    code, err = run(capsys, *argv)
    assert code == 1 and f"it is {what} this command reads" in err, err
    assert {p.name: p.read_bytes() for p in work.iterdir() if p.is_file()} == before


def test_run_folders(work, capsys):
    # --run-dir naming a file, and --resume naming a file, exited 3 with "internal compiler
    # error: FileExistsError"; --resume of a missing folder created it; --run-dir naming a
    # folder that holds a run appended to its history.jsonl and replaced its checkpoints
    (work / "afile").write_text("x")
    code, err = run(capsys, "train", "tiny.net", "-q", "-o", "m.npz", "--run-dir", "afile")
    assert code == 1 and "cannot make the run folder 'afile'" in err
    code, err = run(capsys, "train", "--resume", "afile")
    assert code == 1 and "'afile' is not a netc run folder (a file)" in err
    code, err = run(capsys, "train", "--resume", "nosuch")
    assert code == 1 and "no such folder" in err and not (work / "nosuch").exists()
    assert run(capsys, "train", "tiny.net", "-q", "-o", "m.npz", "--run-dir", "r")[0] == 0
    before = {p.name: p.read_bytes() for p in (work / "r").iterdir()}
    code, err = run(capsys, "train", "tiny.net", "-q", "-o", "m.npz", "--run-dir", "r")
    assert code == 1 and "already holds a run: continue it with --resume r" in err
    assert {p.name: p.read_bytes() for p in (work / "r").iterdir()} == before
    (work / "r" / "last.npz").write_bytes(b"PK\x03\x04 cut")
    code, err = run(capsys, "train", "--resume", "r")
    assert code == 1 and "truncated or corrupt" in err


@pytest.mark.parametrize("flags", [["--set", "lr=1"], ["--data", "other.npz"], ["--batch", "4"],
                                   ["tiny.net"], ["--seed", "3"], ["--weights", "m.npz"]])
def test_resume_refuses_settings_it_would_ignore(work, capsys, flags):
    # --resume RUN continued with the run's own settings and silently ignored these
    assert run(capsys, "train", "tiny.net", "-q", "-o", "m.npz", "--run-dir", "r")[0] == 0
    code, err = run(capsys, "train", "--resume", "r", *flags)
    assert code == 2 and "cannot be given with --resume" in err, err


@pytest.mark.parametrize("config, message", [
    ("[1]", 'it has no "command" object'),
    ('{"command": {"sets": {}, "file": "tiny.net"}}', 'its command lacks "model"'),
    ('{"command": {"sets": [], "file": "tiny.net"}}', 'its command has no "sets" object'),
])
def test_resume_from_a_damaged_config(work, capsys, config, message):
    # exited 3: "internal compiler error: TypeError: list indices must be integers" or
    # "KeyError: 'backend'"
    assert run(capsys, "train", "tiny.net", "-q", "-o", "m.npz", "--run-dir", "r")[0] == 0
    (work / "r" / "config.json").write_text(config)
    code, err = run(capsys, "train", "--resume", "r")
    assert code == 1 and "config.json is damaged: " + message in err, err


def test_saved_models_on_the_command_line(work, capsys):
    # a model saved with --format safetensors (or as M.NPZ) was parsed as a .net file ("the file
    # is not UTF-8 text"); --weights with a saved model was silently ignored, and --weights
    # could not read a .safetensors file; --model with a saved model was ignored
    assert run(capsys, "train", "tiny.net", "-q", "-o", "m.safetensors", "--run-dir", "a")[0] == 0
    assert run(capsys, "train", "tiny.net", "-q", "-o", "M.NPZ", "--run-dir", "b",
               "--set", "lr=0.5", "--epochs", "3")[0] == 0
    evals = {}
    for argv in (["m.safetensors"], ["M.NPZ"], ["M.NPZ", "--weights", "m.safetensors"],
                 ["tiny.net", "--weights", "m.safetensors"]):
        code = main(["eval", *argv, "--json"])
        out = capsys.readouterr()
        assert code == 0, out.err
        evals[" ".join(argv)] = out.out
    assert evals["M.NPZ"] != evals["m.safetensors"]
    assert evals["M.NPZ --weights m.safetensors"] == evals["m.safetensors"]
    assert evals["tiny.net --weights m.safetensors"] == evals["m.safetensors"]
    code, err = run(capsys, "eval", "M.NPZ", "--model", "tiny")
    assert code == 2 and "'M.NPZ' is a saved model" in err


def test_a_closed_stdout_pipe_does_not_stop_training(work):
    # `netc train --json | head -1`: the broken pipe ended training at the next progress line
    # with exit 0 and no model saved
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-m", "netc", "train", "tiny.net", "--json",
                             "--epochs", "40", "-o", "m.npz"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=work)
    assert proc.stdout.readline().startswith(b'{"epoch": 1')
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0, err
    assert "standard output was closed" in err and "Traceback" not in err
    assert (work / "m.npz").exists()


def test_json_output_is_strict_json(work, capsys):
    # an undefined metric (auc over one class) was printed as NaN in --json lines and
    # history.jsonl: not JSON (jq and JSON.parse reject it)
    import json
    x = np.random.default_rng(0).normal(size=(24, 3)).astype(np.float32)
    np.savez(work / "one.npz", x=x, y=np.zeros(24, np.int32))
    code = main(["train", "tiny.net", "--data", "one.npz", "--set", "metrics=[auc]",
                 "--validation", "0.25", "--json", "-o", "m.npz", "--run-dir", "r"])
    out = capsys.readouterr().out
    assert code == 0

    def strict(text):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in {text}"))
    lines = [strict(line) for line in out.splitlines()]
    assert lines[0]["auc"] is None and lines[0]["loss"] > 0
    assert strict((work / "r" / "history.jsonl").read_text().splitlines()[0])["val_auc"] is None


def test_output_formats_are_chosen_case_insensitively(work, capsys):
    # predict -o P.CSV wrote an .npz archive under that name, and -o M.SAFETENSORS an .npz,
    # while data files and saved models as FILE are recognized in any case
    assert run(capsys, "train", "tiny.net", "-q", "-o", "M.SAFETENSORS", "--run-dir", "r")[0] == 0
    assert (work / "M.SAFETENSORS").read_bytes()[8:9] == b"{"
    assert run(capsys, "predict", "M.SAFETENSORS", "-o", "P.CSV")[0] == 0
    assert (work / "P.CSV").read_text().startswith("probs_0,probs_1\n")


def test_graph_mode_eval_needs_the_forward_stage(work, capsys):
    # --stage backward --mode eval printed the train-mode step, ignoring --mode
    code, err = run(capsys, "graph", "tiny.net", "--stage", "backward", "--mode", "eval")
    assert code == 2 and "--mode eval shows the forward graph only" in err
    assert run(capsys, "graph", "tiny.net", "--mode", "eval")[0] == 0


def test_check_set_of_an_unknown_parameter(work, capsys):
    # netc check tiny.net --set hiden=64 printed "tiny.net: ok" (the override was dropped)
    code, err = run(capsys, "check", "tiny.net", "--set", "hiden=64")
    assert code == 2 and "--set hiden: no model in tiny.net has a parameter 'hiden'" in err
    assert run(capsys, "check", "tiny.net", "--set", "hidden=64")[0] == 0


def test_predictions_only_to_npz_or_csv(work, capsys):
    # -o p.txt wrote an .npz archive under that name
    code, err = run(capsys, "predict", "tiny.net", "--data", "other.npz", "-o", "p.txt")
    assert code == 2 and "written as .npz or .csv" in err, err
    assert not (work / "p.txt").exists()
