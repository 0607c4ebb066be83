"""The parser tables' disk cache (lalr.load_tables): stored once, loaded without lark, rebuilt when
corrupt, whole under concurrent writers."""

from __future__ import annotations

import json
import os
import threading
from importlib import resources

import pytest

from netc.compiler import lalr
from netc.compiler.disk_cache import read_entry, write_entry

GRAMMAR = resources.files("netc.grammar").joinpath("net.lark").read_text(encoding="utf-8")
SOURCE = """model m(n = 3) {
    input x: f32[2, n]
    output y = relu(x @ ones([n, 4]) + 1.5) -> softmax
}
"""


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NETC_CACHE_DIR", str(tmp_path))
    derived = []
    real = lalr._derive

    def counting(grammar: str) -> dict:
        derived.append(1)
        return real(grammar)

    monkeypatch.setattr(lalr, "_derive", counting)
    return tmp_path, derived


def _shape(tree) -> object:
    """A parse tree as plain data (rules, token types and values, positions)."""
    if tree is None:
        return None
    if isinstance(tree, lalr.PToken):
        return (tree.type, tree.value, tree.line, tree.column, tree.end_line, tree.end_column)
    return (tree.data, tree.line, tree.column, [_shape(c) for c in tree.children])


def _parse_with(tb: lalr._Tables, text: str):
    saved = lalr.tables
    lalr.tables = lambda: tb
    try:
        return _shape(lalr.parse(text))
    finally:
        lalr.tables = saved


def test_tables_are_derived_once_then_loaded(cache):
    tmp, derived = cache
    first = lalr.load_tables(GRAMMAR)
    path = lalr.tables_path(GRAMMAR)
    assert derived == [1] and os.path.isfile(path) and path.startswith(str(tmp))
    second = lalr.load_tables(GRAMMAR)
    assert derived == [1]  # from the file, lark not run again
    assert second.states == first.states and second.recipes == first.recipes
    assert _parse_with(second, SOURCE) == _parse_with(first, SOURCE) == _shape(lalr.parse(SOURCE))


@pytest.mark.parametrize("damage", ["flip", "truncate", "bad-json", "wrong-layout"])
def test_damaged_entry_is_rebuilt_and_rewritten(cache, damage):
    _, derived = cache
    lalr.load_tables(GRAMMAR)
    path = lalr.tables_path(GRAMMAR)
    if damage in ("flip", "truncate"):
        with open(path, "r+b") as f:
            if damage == "flip":
                f.seek(100)
                f.write(b"#####")
            else:
                f.truncate(2000)
        assert read_entry(path) is None
    else:  # a checksummed entry whose content is wrong: still rebuilt, never an error
        payload = b"{not json" if damage == "bad-json" else json.dumps({"states": []}).encode()
        write_entry(path, payload)
    tb = lalr.load_tables(GRAMMAR)
    assert derived == [1, 1]
    assert _parse_with(tb, SOURCE) == _shape(lalr.parse(SOURCE))
    lalr.load_tables(GRAMMAR)
    assert derived == [1, 1]  # the rewritten entry is good


def test_key_follows_the_grammar_text_and_lark_version(cache, monkeypatch):
    assert lalr.tables_path(GRAMMAR) != lalr.tables_path(GRAMMAR + "\n// edited\n")
    before = lalr.tables_path(GRAMMAR)
    monkeypatch.setattr(lalr, "_lark_version", lambda: "0.0-other")
    assert lalr.tables_path(GRAMMAR) != before


def test_lark_version_is_read_without_importing_lark():
    import importlib.metadata

    assert lalr._lark_version() == importlib.metadata.version("lark")


def test_concurrent_writers_leave_one_whole_entry(cache):
    tmp, derived = cache
    results, errors = [], []

    def work() -> None:
        try:
            results.append(lalr.load_tables(GRAMMAR))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 4
    folder = os.path.dirname(lalr.tables_path(GRAMMAR))
    assert os.listdir(folder) == [os.path.basename(lalr.tables_path(GRAMMAR))]  # no temp files
    count = len(derived)
    tb = lalr.load_tables(GRAMMAR)
    assert len(derived) == count  # the entry left behind is whole and loads
    # (lark numbers its states differently on every build: compare what the tables do)
    want = _shape(lalr.parse(SOURCE))
    assert all(_parse_with(t, SOURCE) == want for t in [tb, *results])


def test_unwritable_cache_only_costs_the_cache(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("NETC_CACHE_DIR", str(blocker))
    tb = lalr.load_tables(GRAMMAR)
    assert _parse_with(tb, SOURCE) == _shape(lalr.parse(SOURCE))
