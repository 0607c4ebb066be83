"""Mutated example files give a Program or a located NetError, never anything else."""

from __future__ import annotations

import re

import pytest
from front_syntax import EXAMPLE_FILES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netc.compiler import syntax as S
from netc.compiler.errors import NetError
from netc.compiler.parse import parse_text

SOURCES = [p.read_text(encoding="utf-8") for p in EXAMPLE_FILES]
_TOKEN = re.compile(r"\w+|->|<-|\*\*|\.\.\.?|[^\w\s]|\s+")
# Characters and fragments that stress the lexer and the parser.
_ALPHABET = st.sampled_from(list("(){}[],;:=+-*/@<>!.\"'#\\\n\t \x00\x07é×λ") +
                            ["->", "<-", "**", "..", "...", "as", "for", "model", "frozen",
                             "loss", "1e-3", "0.5", ".5", "5.", '"s"'])


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


@st.composite
def mutated_source(draw) -> str:
    text = draw(st.sampled_from(SOURCES))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["delete", "duplicate", "swap", "insert", "byte", "chunk"]))
        toks = _tokens(text)
        if kind in ("delete", "duplicate", "swap") and len(toks) > 2:
            i = draw(st.integers(0, len(toks) - 2))
            j = draw(st.integers(0, len(toks) - 1))
            if kind == "delete":
                del toks[i]
            elif kind == "duplicate":
                toks.insert(i, toks[i])
            else:
                toks[i], toks[j] = toks[j], toks[i]
            text = "".join(toks)
        elif kind == "insert":
            i = draw(st.integers(0, len(text)))
            text = text[:i] + draw(_ALPHABET) + text[i:]
        elif kind == "byte":
            # A random byte, decoded the way a tolerant editor would.
            i = draw(st.integers(0, len(text)))
            b = draw(st.integers(0, 255))
            text = text[:i] + bytes([b]).decode("latin-1") + text[i:]
        else:
            # Move a chunk of characters somewhere else.
            i = draw(st.integers(0, len(text)))
            k = draw(st.integers(1, 40))
            chunk, rest = text[i:i + k], text[:i] + text[i + k:]
            j = draw(st.integers(0, len(rest)))
            text = rest[:j] + chunk + rest[j:]
    return text


def _check(text: str) -> None:
    try:
        prog = parse_text(text, "fuzz.net")
    except NetError as e:
        n_lines = text.count("\n") + 1
        assert e.diagnostics
        for d in e.diagnostics:
            assert d.message
            assert d.loc is not None, d.message
            assert d.loc.file == "fuzz.net"
            assert 1 <= d.loc.line <= n_lines + 1, (d.loc, d.message)
            assert d.loc.col >= 1
        e.format()  # formatting never fails either
    else:
        assert isinstance(prog, S.Program)


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated_source())
def test_mutated_examples_parse_or_fail_cleanly(text):
    _check(text)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(_ALPHABET, max_size=30).map("".join))
def test_random_fragments_inside_a_model_fail_cleanly(body):
    _check("model m {\n    h = " + body + "\n}\n")


@pytest.mark.parametrize("cut", [1, 7, 50, 200, 600])
def test_truncated_examples_fail_cleanly(cut):
    for src in SOURCES:
        _check(src[:cut])
        _check(src[:-cut])


@pytest.mark.slow
def test_one_megabyte_file_parses():
    lines = ["model big(batch = 4) {", "    input x: f32[batch, 8]"]
    body = []
    size = 0
    while size < 1_000_000:
        i = len(body)
        line = f"    h{i} = (x + h{i} * 2.5e-3)[:, 0:4] -> Dense(8) as fc{i} -> relu  # {i}"
        body.append(line)
        size += len(line) + 1
    text = "\n".join(lines + body + ["}", "train big { epochs = 1 }"]) + "\n"
    prog = parse_text(text, "big.net")
    model, train = prog.items
    assert len(model.body) == len(body) + 1
    assert model.body[-1].targets == (f"h{len(body) - 1}",)
    assert train.items == (S.Setting(None, key="epochs", value=S.Num(None, value=1, text="1")),)
