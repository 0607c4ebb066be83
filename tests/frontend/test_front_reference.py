"""grammar/README.md stays accurate: its keyword list, its built-ins and its samples."""

from __future__ import annotations

import re

import pytest
from front_syntax import ROOT

from netc.compiler.ops.builtins import BUILTIN_NAMES
from netc.compiler.parse import parse_text
from netc.compiler.syntax_build import DTYPES, KEYWORDS

README = (ROOT / "grammar" / "README.md").read_text(encoding="utf-8")
SAMPLES = re.findall(r"```\n(.*?)```", README, flags=re.S)


def test_keyword_list_matches_the_parser():
    block = README.split("**Keywords**", 1)[1].split("```", 2)[1]
    assert set(block.split()) == KEYWORDS


def test_every_builtin_function_is_documented():
    section = README.split("## Built-in functions", 1)[1]
    missing = [name for name in BUILTIN_NAMES if not re.search(rf"\b{name}\b", section)]
    assert missing == []


def test_element_types_are_documented():
    assert f"`{'`, `'.join(DTYPES[:-1])}` and `{DTYPES[-1]}`" in README


WHOLE_FILES = [s for s in SAMPLES if s.startswith(("# examples/", "fn ", "train "))]
STATEMENTS = [s for s in SAMPLES if s.lstrip().startswith(("h = x", "state ", "for "))]


def test_samples_were_found():
    assert len(WHOLE_FILES) >= 4 and len(STATEMENTS) >= 3


@pytest.mark.parametrize("sample", WHOLE_FILES)
def test_complete_samples_parse(sample):
    assert parse_text(sample, "readme.net").items


@pytest.mark.parametrize("sample", STATEMENTS)
def test_statement_samples_parse_inside_a_model(sample):
    (model,) = parse_text("model m {\n" + sample + "\n}\n", "readme.net").items
    assert model.body
