"""Every `examples/**/*.net` file parses (the glob is the list: a new example cannot skip)."""

from __future__ import annotations

import pytest
from front_syntax import EXAMPLE_FILES, EXAMPLES, ROOT
from netc.compiler import syntax as S
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
