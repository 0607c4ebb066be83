"""One test per user-facing syntax diagnostic: its message and its `line:col`."""

from __future__ import annotations

import json
import re

import pytest
from front_syntax import RAW_TOKEN_NAMES, error_of, errors_of

from netc.compiler.errors import NetError, NetSyntaxError, diagnostics_json, format_diagnostic
from netc.compiler.parse import parse_file, parse_text

# (id, source, message pattern (a regular expression searched in the message), line, col)
CASES = [
    ("unknown statement", "model m {\n    inptu x: f32[3]\n}\n",
     r"^unknown statement 'inptu' — did you mean 'input'\?$", 2, 5),
    ("unknown statement in layer", "layer L(x) {\n    retrun x\n}\n",
     r"^unknown statement 'retrun' — did you mean 'return'\?$", 2, 5),
    ("misspelt top-level keyword", "modle m {\n}\n",
     r"^unknown word 'modle' — did you mean 'model'\?$", 1, 1),
    ("misspelt frozen", "model m {\n    param W: [3] = zeros frozne\n}\n",
     r"^unknown word 'frozne' — did you mean 'frozen'\?$", 2, 26),
    ("unexpected token, expected in words", "model m {\n    h = relu(x,, 2)\n}\n",
     r"^unexpected ','; expected an expression or '\)'$", 2, 16),
    ("operator where an operand belongs", "model m {\n    h = x + * 2\n}\n",
     r"^unexpected '\*'; expected an expression$", 2, 13),
    ("two statements on one line", "model m {\n    a = 1 b = 2\n}\n",
     r"^unexpected name 'b'; expected the end of the statement \(a new line or ';'\), "
     r"an operator or '\}'$", 2, 11),
    ("statement outside a model", "h = 3\n",
     r"^unexpected name 'h'; expected .*'model', 'train' or the end of the file$", 1, 1),
    ("missing block", "model m\n    input x: f32[2]\n",
     r"^unexpected end of the line; expected '\(' or '\{'$", 1, 8),
    ("bad train item", "train m {\n    optimizer adam(1)\n}\n",
     r"^unexpected name 'adam'; expected '\(' or '='$", 2, 15),
    ("comparisons do not chain", "fn f(a, b, c) = a < b < c\n",
     r"^unexpected '<'; expected ", 1, 23),
    ("a<-b is an update arrow", "fn f(a, b) = a<-b\n",
     r"^unexpected '<-'; expected ", 1, 15),
    ("unexpected end of the file", "fn f(x) = x +",
     r"^unexpected end of the file; expected an expression$", 1, 14),
    ("empty index", "fn f(x) = x[]\n",
     r"^unexpected '\]'; expected an expression, '\.\.\.' or ':'$", 1, 13),
    ("unclosed bracket at end of file", "model m {\n    h = relu(x\n",
     r"^'\(' is never closed: expected a matching '\)' before the end of the file$", 2, 13),
    ("unclosed brace at end of file", "model m {\n    h = x ->\n",
     r"^'\{' is never closed: expected a matching '\}' before the end of the file$", 1, 9),
    ("unclosed bracket seen on the next line", "model m {\n    h = relu(x\n    y = 2\n}\n",
     r"^'\(' opened at line 2, column 13 is not closed: expected '\)' before this name 'y'$",
     3, 5),
    ("mismatched bracket", "model m {\n    h = relu(x]\n}\n",
     r"^'\]' does not match the '\(' opened at line 2, column 13: expected '\)' first$", 2, 15),
    ("brace closing a parenthesis", "model m {\n    h = f(x}\n",
     r"^'\}' does not match the '\(' opened at line 2, column 10: expected '\)' first$", 2, 12),
    ("unmatched closer", "model m {\n    h = x)\n}\n",
     r"^unmatched '\)': no '\(' is open here$", 2, 10),
    ("unterminated string", 'import "abc\n',
     r"^unterminated string: a string must end with '\"' on the same line$", 1, 8),
    ("string across lines", 'import "abc\ndef"\n',
     r"^unterminated string", 1, 8),
    ("single quotes", "import 'abc'\n",
     r'^strings are written in double quotes: "\.\.\."$', 1, 8),
    ("NUL byte", "model m {\n  h = x\x00\n}\n",
     r"^unexpected NUL byte: is this a binary file\?$", 2, 8),
    ("unexpected character", "model m {\n    h = x $ 2\n}\n",
     r"^unexpected character '\$'$", 2, 11),
    ("unexpected non-ASCII character", "model m {\n    h = x × 2\n}\n",
     r"^unexpected character '×'$", 2, 11),
    ("unexpected control character", "model m {\n    h = x \x07 2\n}\n",
     r"^unexpected character U\+0007$", 2, 11),
    ("keyword as assigned name", "model m {\n    input = 3\n}\n",
     r"^'input' is a keyword and cannot be used as a name$", 2, 5),
    ("keyword in an expression", "model m {\n    h = step + 1\n}\n",
     r"^'step' is a keyword and cannot be used as a name$", 2, 9),
    ("keyword as parameter", "fn f(model) = 1\n",
     r"^'model' is a keyword and cannot be used as a name$", 1, 6),
    ("keyword as fn name", "fn input(x) = x\n",
     r"^'input' is a keyword and cannot be used as a name$", 1, 4),
    ("keyword as layer alias", "fn f(x) = x -> Dense(3) as layer\n",
     r"^'layer' is a keyword and cannot be used as a name$", 1, 28),
    ("keyword as keyword argument", "fn f(x) = g(x, in = 2)\n",
     r"^'in' is a keyword and cannot be used as a name$", 1, 16),
    ("unknown element type", "model m {\n    input x: f33[3]\n}\n",
     r"^unknown element type 'f33' — did you mean 'f32'\? \(types are f32, f64, i32, bool\)$",
     2, 14),
    ("unknown element type, no suggestion", "model m {\n    input x: float[2]\n}\n",
     r"^unknown element type 'float' \(types are f32, f64, i32, bool\)$", 2, 14),
    ("positional after keyword argument", "model m {\n    h = f(a = 1, 2)\n}\n",
     r"^a positional argument cannot follow keyword arguments$", 2, 18),
    ("duplicate keyword argument", "model m {\n    h = f(a = 1, a = 2)\n}\n",
     r"^keyword argument 'a' is given twice$", 2, 18),
    ("duplicate keyword in a directive", "train m { early_stop(monitor = a, monitor = b) }\n",
     r"^keyword argument 'monitor' is given twice$", 1, 35),
    ("duplicate parameter", "fn f(x, x) = x\n",
     r"^parameter 'x' is listed twice$", 1, 9),
    ("duplicate model parameter", "model m(batch = 1, batch = 2) { }\n",
     r"^parameter 'batch' is listed twice$", 1, 20),
    ("number without leading digit", "model m {\n    h = x * .5\n}\n",
     r"^write numbers with a digit before the point: 0\.5, not \.5$", 2, 13),
]


@pytest.mark.parametrize(("src", "pattern", "line", "col"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_diagnostic(src, pattern, line, col):
    d = error_of(src, "case.net")
    assert re.search(pattern, d.message), d.message
    assert (d.loc.file, d.loc.line, d.loc.col) == ("case.net", line, col)


def _all_messages(diags):
    for d in diags:
        yield d.message
        if d.hint:
            yield d.hint
        yield from (m for m, _ in d.notes)


EXTRA_BAD = [
    "model m {\n    h = x -> \n}\n", "fn f(x) = (x,\n", "train m { step { } }\n",
    "model m { param W: frozen }\n", "fn f(x) = x -> f[0]\n", "import\n", "layer L x { }\n",
    "model m {\n    for t in 0.T { }\n}\n", "model m {\n    repeat as i { }\n}\n",
    "model m {\n    output = 3\n}\n", "model m {\n    h, = f(x)\n}\n", "fn f(x) = x..y\n",
    "model m {\n    s <- \n}\n", "fn f(x) = x[1:2:3:4]\n", "fn f(x) = a b c\n",
    "fn g(x) = x * 5.\n", "model m {\n    fn f(x) = x\n}\n",
    "model m {\n    a = 1 +* 2\n    b = 2\n    c = f(,)\n    e = x $ 1\n}\n",
    "fn g(x) = " + "f(" * 300 + "x" + ")" * 300 + "\n",
    "fn g(x) = " + "(" * 300 + "x" + ")" * 299 + "\n",
]


@pytest.mark.parametrize("src", [c[1] for c in CASES] + EXTRA_BAD)
def test_no_raw_token_names_in_messages(src):
    for msg in _all_messages(errors_of(src)):
        for raw in RAW_TOKEN_NAMES:
            assert raw not in msg, (raw, msg)


def test_formatted_output_has_source_line_and_caret():
    try:
        parse_text("model m {\n    inptu x: f32[3]\n}\n", "m.net")
    except NetSyntaxError as e:
        out = e.format()
    else:
        pytest.fail("expected a syntax error")
    assert out.splitlines() == [
        "m.net:2:5: error: unknown statement 'inptu' — did you mean 'input'?",
        "    2 |     inptu x: f32[3]",
        "      |     ^^^^^",
    ]


def test_formatted_unclosed_bracket_shows_the_opener_as_a_note():
    d = error_of("model m {\n    h = relu(x\n    y = 2\n}\n", "m.net")
    lines = format_diagnostic(d).splitlines()
    assert lines[0].startswith("m.net:3:5: error: '(' opened at line 2, column 13")
    assert lines[1:3] == ["    3 |     y = 2", "      |     ^"]
    assert lines[3] == "m.net:2:13: note: the '(' opened here"
    assert lines[4:6] == ["    2 |     h = relu(x", "      |             ^"]


def test_several_errors_reported_together_in_order():
    src = ("model m {\n"
           "    a = 1 +* 2\n"
           "    b = 2\n"
           "    c = f(,)\n"
           "    d = 4\n"
           "    e = x $ 1\n"
           "}\n")
    diags = errors_of(src)
    assert [(d.loc.line, d.loc.col) for d in diags] == [(2, 12), (4, 11), (6, 11)]
    assert [d.message for d in diags] == [
        "unexpected '*'; expected an expression",
        "unexpected ','; expected an expression or ')'",
        "unexpected character '$'",
    ]


def test_error_after_good_lines_is_still_reported_once():
    diags = errors_of("model m {\n    a = 1\n    b = 2\n    c = 3 3\n}\n")
    assert [(d.loc.line, d.loc.col) for d in diags] == [(4, 11)]


# --------------------------------------------------------------------------- depth and size


def test_too_deep_nesting_is_a_clear_error():
    n = 5000
    with pytest.raises(NetError) as info:
        parse_text("fn g(x) = " + "f(" * n + "x" + ")" * n + "\n", "deep.net")
    d = info.value.diagnostics[0]
    assert "nested too deeply" in d.message
    assert d.loc.line == 1 and 11 <= d.loc.col <= 11 + 2 * n


def test_deep_unary_minus_is_a_clear_error():
    with pytest.raises(NetError, match="nested too deeply"):
        parse_text("fn g(x) = " + "-" * 5000 + "x\n")


def test_deep_block_nesting_is_a_net_error():
    src = "model m {\n" + "for i in 0..2 {\n" * 3000 + "}\n" * 3000 + "}\n"
    with pytest.raises(NetError):
        parse_text(src)


def test_moderate_nesting_is_accepted():
    e = parse_text("fn g(x) = " + "f(" * 150 + "x" + ")" * 150 + "\n").items[0].body[0].values[0]
    depth = 0
    while hasattr(e, "args"):
        e, depth = e.args[0], depth + 1
    assert depth == 150


def test_balanced_5000_parentheses_are_accepted():
    n = 5000
    prog = parse_text("fn g(x) = " + "(" * n + "x" + ")" * n + "\n")
    assert prog.items[0].body[0].values[0].id == "x"


def test_unbalanced_5000_parentheses_point_at_the_unclosed_one():
    n = 5000
    d = error_of("fn g(x) = " + "(" * n + "x" + ")" * (n - 1) + "\n")
    assert d.message.startswith("'(' is never closed")
    assert (d.loc.line, d.loc.col) == (1, 11)  # the outermost '(' is the one left open


def test_one_closer_too_many_after_5000_points_at_it():
    n = 5000
    d = error_of("fn g(x) = " + "(" * n + "x" + ")" * (n + 1) + "\n")
    assert d.message == "unmatched ')': no '(' is open here"
    assert (d.loc.line, d.loc.col) == (1, 11 + 2 * n + 1)


# --------------------------------------------------------------------------- files


def test_empty_file_is_an_empty_program(tmp_path):
    p = tmp_path / "empty.net"
    p.write_text("")
    assert parse_file(p).items == ()


def test_directory_is_a_net_error(tmp_path):
    with pytest.raises(NetError, match="is a directory"):
        parse_file(tmp_path)


def test_missing_file_is_a_net_error(tmp_path):
    with pytest.raises(NetError, match="no such file"):
        parse_file(tmp_path / "nope.net")


def test_non_utf8_file_is_located(tmp_path):
    p = tmp_path / "latin1.net"
    p.write_bytes(b"model m {\n    h = x # caf\xe9\n}\n")
    with pytest.raises(NetSyntaxError) as info:
        parse_file(p)
    d = info.value.diagnostics[0]
    assert d.message == "the file is not UTF-8 text: byte 0xe9 cannot be decoded"
    assert (d.loc.file, d.loc.line, d.loc.col) == (str(p), 2, 16)


def test_parse_file_names_the_file_in_diagnostics(tmp_path):
    p = tmp_path / "bad.net"
    p.write_text("model m {\n    h = x $ 2\n}\n")
    with pytest.raises(NetError) as info:
        parse_file(p)
    assert info.value.format().startswith(f"{p}:2:11: error: unexpected character '$'")


def test_json_form_of_diagnostics():
    diags = errors_of("model m {\n    h = relu(x\n    y = 2\n}\n", "j.net")
    (d,) = diags
    data = d.to_json()
    assert data == {
        "file": "j.net", "line": 3, "col": 5, "end_line": 3, "end_col": 6,
        "severity": "error",
        "message": "'(' opened at line 2, column 13 is not closed: expected ')' before this "
                   "name 'y'",
        "notes": [{"message": "the '(' opened here", "file": "j.net", "line": 2, "col": 13}],
    }
    assert json.loads(diagnostics_json(diags)) == [data]


# ------------------------------------------------- numbers, chains, misplaced definitions


def test_number_without_trailing_digit():
    d = error_of("fn g(x) = x * 5.\n")
    assert "digit" in d.message
    assert (d.loc.line, d.loc.col) == (1, 15)


def test_number_with_point_then_exponent():
    with pytest.raises(NetError):
        parse_text("fn g(x) = x * 5.e3\n")


def test_long_flat_sum_is_not_nesting():
    prog = parse_text("fn g(x) = " + " + ".join(["x"] * 300) + "\n")
    assert prog.items[0].name == "g"


def test_definition_inside_a_block():
    d = error_of("model m {\n    fn f(x) = x\n}\n")
    assert "top level" in d.message
    assert (d.loc.line, d.loc.col) == (2, 5)


def test_long_flat_sum_builds_into_a_graph():
    """A 3000-term sum is a chain, not nesting: it parses and builds within the stack."""
    from netc.compiler.build_ir import build
    text = "model m {\n    input x: f32[2]\n    output o = " + " + ".join(["x"] * 3000) + "\n}\n"
    g = build("chain.net", text=text).graph
    assert g.outputs["o"].type.shape == (2,)


def test_deeply_nested_blocks_are_refused_at_the_block():
    text = "model m {\n" + "for i in 0..1 {\n" * 300 + "}\n" * 300 + "}\n"
    d = error_of(text)
    assert "blocks nested too deeply" in d.message
    assert d.loc.line > 100


def test_a_keyword_as_an_argument_value_hints_at_a_string():
    # early_stop(monitor = loss) said only "'loss' is a keyword and cannot be used as a name",
    # while the early_stop error lists loss among what it can monitor; "loss" works
    d = error_of("train m {\n    early_stop(monitor = loss, patience = 2)\n}\n")
    assert d.message == "'loss' is a keyword and cannot be used as a name"
    assert d.hint == 'as an argument value, write it as a string: "loss"'
    assert error_of("model m() {\n    y = loss\n}\n").hint is None
