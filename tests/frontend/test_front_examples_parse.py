"""Every `examples/**/*.net` file parses (the glob is the list: a new example cannot skip)."""

from __future__ import annotations

import pytest
from front_syntax import EXAMPLE_FILES, EXAMPLES, ROOT

from netc.compiler import syntax as S
from netc.compiler.ops.builtins import BUILTINS
from netc.compiler.parse import parse_file


def test_examples_exist():
    names = {p.relative_to(EXAMPLES).as_posix() for p in EXAMPLE_FILES}
    assert {"digits_mlp.net", "lenet.net", "lstm_classifier.net", "gru_classifier.net",
            "transformer_encoder.net", "autoencoder.net", "vae.net", "gan.net",
            "regression.net", "transfer.net", "layers/common.net"} <= names


@pytest.mark.parametrize("path", EXAMPLE_FILES,
                         ids=[p.relative_to(ROOT).as_posix() for p in EXAMPLE_FILES])
def test_example_parses(path):
    prog = parse_file(path)
    assert prog.items
    assert path.read_text(encoding="utf-8").startswith("# examples/")  # says what it shows
    # Every model has a train block, and every import names a file that exists.
    models = {i.name for i in prog.items if isinstance(i, S.ModelDef)}
    trained = {i.model for i in prog.items if isinstance(i, S.TrainDef)}
    assert models == trained
    for imp in (i for i in prog.items if isinstance(i, S.Import)):
        assert (path.parent / imp.path).is_file(), imp.path


# --------------------------------------------------------------------------- calls are meaningful

# The built-in layers of LANGUAGE.md section 7: parameter names after the input.
BUILTIN_LAYERS = {
    "Dense": ("units", "bias"), "Conv2D": ("filters", "kernel", "stride", "pad"),
    "BatchNorm": (), "LayerNorm": (), "Embedding": ("vocab", "dim"), "RNN": ("units",),
    "LSTM": ("units", "sequences"), "GRU": ("units", "sequences"),
    "MultiHeadAttention": ("heads", "dim"), "PReLU": (),
}


def _signatures(path, seen=None) -> dict[str, tuple[str, ...]]:
    """Name -> parameter names of every fn and layer defined in `path` and its imports."""
    seen = set() if seen is None else seen
    if path in seen:
        return {}
    seen.add(path)
    out: dict[str, tuple[str, ...]] = {}
    for item in parse_file(path).items:
        if isinstance(item, S.Import):
            out.update(_signatures((path.parent / item.path).resolve(), seen))
        elif isinstance(item, S.FnDef | S.LayerDef):
            out[item.name] = tuple(p.name for p in item.params)
    return out


def _calls(node):
    """Every Call in a statement or expression tree, except parameter initializers."""
    if isinstance(node, S.ParamDecl):
        yield from _calls(node.type)
        return
    if isinstance(node, S.Call):
        yield node
    if isinstance(node, tuple | list):
        for v in node:
            yield from _calls(v)
    elif hasattr(node, "__dataclass_fields__"):
        for name in node.__dataclass_fields__:
            if name != "loc" and not name.endswith("loc"):
                yield from _calls(getattr(node, name))


@pytest.mark.parametrize("path", EXAMPLE_FILES,
                         ids=[p.relative_to(ROOT).as_posix() for p in EXAMPLE_FILES])
def test_example_calls_known_functions_with_real_parameter_names(path):
    user = _signatures(path.resolve())
    problems = []
    for item in parse_file(path).items:
        if not isinstance(item, S.FnDef | S.LayerDef | S.ModelDef):
            continue
        for c in _calls(item.body):
            if c.func in BUILTINS:
                b = BUILTINS[c.func]
                names = tuple(p.name for p in b.params)
                n_max = None if b.variadic else len(names)
            elif c.func in BUILTIN_LAYERS:
                names = ("x", *BUILTIN_LAYERS[c.func])
                n_max = len(names)
            elif c.func in user:
                names = user[c.func]
                n_max = len(names)
            else:
                problems.append(f"unknown function {c.func}")
                continue
            if n_max is not None and len(c.args) > n_max:
                problems.append(f"{c.func}: {len(c.args)} positional arguments")
            for kw in c.kwargs:
                if kw.name not in names[len(c.args):]:
                    problems.append(f"{c.func}: keyword {kw.name}")
    assert problems == []
