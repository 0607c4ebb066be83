"""Every statement and expression form parses into the expected syntax tree."""

from __future__ import annotations

import pytest
from front_syntax import (
    ELLIPSIS,
    assign,
    attr,
    binop,
    boolean,
    call,
    index,
    lst,
    n,
    neg,
    num,
    parse_expr,
    parse_stmt,
    parse_stmts,
    pipe,
    pspec,
    setting,
    sl,
    string,
    ttype,
    tup,
)

from netc.compiler import syntax as S
from netc.compiler.parse import parse_text

x, y, a, b, c = n("x"), n("y"), n("a"), n("b"), n("c")

EXPRESSIONS = [
    # literals
    ("3", num("3")),
    ("0.5", num("0.5")),
    ("1e-3", num("1e-3")),
    ("2.5E+4", num("2.5E+4")),
    ("7e2", num("7e2")),
    ("true", boolean(True)),
    ("false", boolean(False)),
    ('"digits"', string("digits")),
    ("true_x", n("true_x")),          # a keyword prefix does not make a keyword
    ("inputs", n("inputs")),
    # arithmetic precedence and associativity
    ("a + b * c", binop("+", a, binop("*", b, c))),
    ("a * b + c", binop("+", binop("*", a, b), c)),
    ("a - b - c", binop("-", binop("-", a, b), c)),
    ("a / b / c", binop("/", binop("/", a, b), c)),
    ("a @ b * c", binop("*", binop("@", a, b), c)),
    ("a + b @ c", binop("+", a, binop("@", b, c))),
    ("2 ** 3 ** 2", binop("**", num("2"), binop("**", num("3"), num("2")))),
    ("-x ** 2", neg(binop("**", x, num("2")))),
    ("2 ** -1", binop("**", num("2"), neg(num("1")))),
    ("-a * b", binop("*", neg(a), b)),
    ("- -a", neg(neg(a))),
    ("a - -b", binop("-", a, neg(b))),
    ("(a + b) * c", binop("*", binop("+", a, b), c)),
    ("x ** 2 * 3", binop("*", binop("**", x, num("2")), num("3"))),
    # comparisons: looser than arithmetic, tighter than pipelines
    ("a < b", binop("<", a, b)),
    ("a <= b + 1", binop("<=", a, binop("+", b, num("1")))),
    ("a * 2 >= b", binop(">=", binop("*", a, num("2")), b)),
    ("a == b", binop("==", a, b)),
    ("a != b", binop("!=", a, b)),
    ("a > b", binop(">", a, b)),
    ("a < -b", binop("<", a, neg(b))),
    ("(a < b) == c", binop("==", binop("<", a, b), c)),
    # pipelines
    ("x -> f", pipe("f", x)),
    ("x -> f -> g(1) as h", pipe("g", pipe("f", x), num("1"), alias="h")),
    ("a + b -> relu", pipe("relu", binop("+", a, b))),
    ("a < b -> f", pipe("f", binop("<", a, b))),
    ("x -> Dense(10) as fc2", pipe("Dense", x, num("10"), alias="fc2")),
    ("x -> Dense(hidden) as fc1 -> relu -> dropout(0.1)",
     pipe("dropout", pipe("relu", pipe("Dense", x, n("hidden"), alias="fc1")), num("0.1"))),
    ("x -> leaky_relu(alpha = 0.2)", pipe("leaky_relu", x, alpha=num("0.2"))),
    ("x -> f as h", pipe("f", x, alias="h")),
    ("x -> f()", pipe("f", x)),
    # calls, keyword arguments, `as` on a plain call
    ("f()", call("f")),
    ("f(x, 2)", call("f", x, num("2"))),
    ("f(x, 2,)", call("f", x, num("2"))),
    ("softmax(x, axis = -1)", call("softmax", x, axis=neg(num("1")))),
    ("huber(a, b, delta = 0.5)", call("huber", a, b, delta=num("0.5"))),
    ("GRUCell(x, h, 16) as cell", call("GRUCell", x, n("h"), num("16"), alias="cell")),
    ("concat([a, b], axis = 1)", call("concat", lst(a, b), axis=num("1"))),
    ("randn([4, 2])", call("randn", lst(num("4"), num("2")))),
    # postfix: attributes and indexing
    ("fc1.W", attr(n("fc1"), "W")),
    ("block_0.attn.Wq", attr(attr(n("block_0"), "attn"), "Wq")),
    ("x.shape[-1]", index(attr(x, "shape"), neg(num("1")))),
    ("x[0]", index(x, num("0"))),
    ("x[:, t, 0:3]", index(x, sl(), n("t"), sl(num("0"), num("3")))),
    ("x[..., ::2]", index(x, ELLIPSIS, sl(None, None, num("2")))),
    ("x[1:]", index(x, sl(num("1")))),
    ("x[:5]", index(x, sl(None, num("5")))),
    ("x[1:5:2]", index(x, sl(num("1"), num("5"), num("2")))),
    ("x[a + 1:2 * b]", index(x, sl(binop("+", a, num("1")), binop("*", num("2"), b)))),
    ("x[0][1]", index(index(x, num("0")), num("1"))),
    ("f(x)[0]", index(call("f", x), num("0"))),
    ("-x[0] ** 2", neg(binop("**", index(x, num("0")), num("2")))),
    ("x.shape[0] * 2", binop("*", index(attr(x, "shape"), num("0")), num("2"))),
    # lists and tuples
    ("[]", lst()),
    ("[a, b]", lst(a, b)),
    ("[a, b,]", lst(a, b)),
    ("[[1, 2], [3]]", lst(lst(num("1"), num("2")), lst(num("3")))),
    ("(a, b)", tup(a, b)),
    ("(a,)", tup(a)),
    ("(a, (b, c))", tup(a, tup(b, c))),
    ("(a)", a),
]


@pytest.mark.parametrize(("src", "expected"), EXPRESSIONS, ids=[s for s, _ in EXPRESSIONS])
def test_expression(src, expected):
    assert parse_expr(src) == expected


def test_locations_are_not_compared_but_present():
    e = parse_expr("a + b * c")
    assert (e.loc.line, e.loc.col) == (1, 15)
    assert (e.right.loc.line, e.right.loc.col, e.right.loc.end_col) == (1, 19, 24)


def test_pipeline_call_location_spans_head_to_stage():
    e = parse_expr("x -> f(1)")
    assert (e.loc.col, e.loc.end_col) == (15, 24)
    assert (e.func_loc.col, e.func_loc.end_col) == (20, 21)


# --------------------------------------------------------------------------- continuation


def test_multiline_pipeline_with_leading_arrows():
    stmt = parse_stmt("    h = x\n        -> Dense(8) as fc1\n        -> relu")
    assert stmt == assign("h", value=pipe("relu", pipe("Dense", x, num("8"), alias="fc1")))


def test_leading_arrow_after_a_comment_line_and_trailing_comment():
    stmt = parse_stmt("    h = x   # input\n    # a comment line\n\n    -> relu")
    assert stmt == assign("h", value=pipe("relu", x))


def test_continuation_after_trailing_operator():
    assert parse_stmt("    h = a +\n        b") == assign("h", value=binop("+", a, b))
    assert parse_stmt("    h = a ->\n        relu") == assign("h", value=pipe("relu", a))


def test_continuation_after_equals_and_comma():
    assert parse_stmt("    h =\n        a") == assign("h", value=a)
    assert parse_stmt("    h, c =\n        f(x)") == assign("h", "c", value=call("f", x))


def test_line_starting_with_operator_continues():
    assert parse_stmt("    h = a\n        + b\n        * c") == \
        assign("h", value=binop("+", a, binop("*", b, c)))


def test_newlines_inside_brackets_continue():
    stmt = parse_stmt("    h = f(\n        a,\n        b = [1,\n             2]\n    )")
    assert stmt == assign("h", value=call("f", a, b=lst(num("1"), num("2"))))


def test_semicolons_separate_statements():
    stmts = parse_stmts("    a = 1; b = 2;; c = 3;")
    assert stmts == (assign("a", value=num("1")), assign("b", value=num("2")),
                     assign("c", value=num("3")))


def test_crlf_line_endings():
    stmts = parse_stmts("    a = 1\r\n    b = a\r\n        -> relu\r\n")
    assert stmts == (assign("a", value=num("1")), assign("b", value=pipe("relu", a)))


# --------------------------------------------------------------------------- statements


def test_input_and_target():
    stmts = parse_stmts("    input x: f32[batch, 64]\n    target y: i32[batch]")
    assert stmts == (
        S.InputDecl(None, name="x", type=ttype("f32", n("batch"), num("64")), role="input"),
        S.InputDecl(None, name="y", type=ttype("i32", n("batch")), role="target"))


@pytest.mark.parametrize("dtype", ["f32", "f64", "i32", "bool"])
def test_element_types(dtype):
    stmt = parse_stmt(f"    input m: {dtype}[2, seq * 2]")
    assert stmt.type == ttype(dtype, num("2"), binop("*", n("seq"), num("2")))


def test_param_with_init_and_frozen():
    stmts = parse_stmts("    param W: [x.shape[-1], units] = glorot_uniform\n"
                        "    param s: [1] = constant(1.5) frozen\n"
                        "    param b: [] frozen")
    assert stmts == (
        S.ParamDecl(None, name="W", type=ttype(None, index(attr(x, "shape"), neg(num("1"))),
                                              n("units")), init=n("glorot_uniform")),
        S.ParamDecl(None, name="s", type=ttype(None, num("1")),
                    init=call("constant", num("1.5")), frozen=True),
        S.ParamDecl(None, name="b", type=ttype(None), init=None, frozen=True))


def test_state_and_update():
    stmts = parse_stmts("    state m: f32[4] = zeros\n    m <- 0.9 * m + 0.1 * mean(x, axis = 0)")
    assert stmts == (
        S.ParamDecl(None, name="m", type=ttype("f32", num("4")), init=n("zeros"), kind="state"),
        S.Update(None, name="m", value=binop(
            "+", binop("*", num("0.9"), n("m")),
            binop("*", num("0.1"), call("mean", x, axis=num("0"))))))


def test_assign_and_tuple_unpacking():
    assert parse_stmt("    h = x") == assign("h", value=x)
    assert parse_stmt("    h, c = f(x)") == assign("h", "c", value=call("f", x))
    assert parse_stmt("    h, c = LSTMCell(x, h, c, 8) as cell") == \
        assign("h", "c", value=call("LSTMCell", x, n("h"), c, num("8"), alias="cell"))


def test_output_forms():
    stmts = parse_stmts("    output probs = softmax(logits)\n    output h")
    assert stmts == (S.Output(None, name="probs", value=call("softmax", n("logits"))),
                     S.Output(None, name="h", value=None))


def test_loss_forms():
    stmts = parse_stmts("    loss cross_entropy(logits, y)\n    loss d_loss = a + b\n    loss x")
    assert stmts == (S.Loss(None, name=None, value=call("cross_entropy", n("logits"), y)),
                     S.Loss(None, name="d_loss", value=binop("+", a, b)),
                     S.Loss(None, name=None, value=x))


def test_return_forms():
    assert parse_stmt("    return a", "fn f()") == S.Return(None, values=(a,))
    assert parse_stmt("    return a, b", "fn f()") == S.Return(None, values=(a, b))
    assert parse_stmt("    return (a, b)", "fn f()") == S.Return(None, values=(tup(a, b),))


def test_for_loop():
    stmt = parse_stmt("    for t in 0..T {\n        h = f(x[:, t, :], h)\n    }")
    assert stmt == S.For(None, var="t", start=num("0"), stop=n("T"), body=(
        assign("h", value=call("f", index(x, sl(), n("t"), sl()), n("h"))),))


def test_for_loop_on_one_line_with_expressions():
    stmt = parse_stmt("    for i in 1..n - 1 { a = i }")
    assert stmt == S.For(None, var="i", start=num("1"), stop=binop("-", n("n"), num("1")),
                         body=(assign("a", value=n("i")),))


def test_repeat_forms():
    stmts = parse_stmts("    repeat 3 { h = h -> Block() }\n"
                        "    repeat depth as i {\n        h = h -> Block() as block\n    }\n"
                        "    repeat 2 { }")
    assert stmts == (
        S.Repeat(None, count=num("3"), var=None,
                 body=(assign("h", value=pipe("Block", n("h"))),)),
        S.Repeat(None, count=n("depth"), var="i",
                 body=(assign("h", value=pipe("Block", n("h"), alias="block")),)),
        S.Repeat(None, count=num("2"), var=None, body=()))


# --------------------------------------------------------------------------- top level


def test_one_line_fn():
    (fn,) = parse_text("fn swish(x) = x * sigmoid(x)\n").items
    assert fn == S.FnDef(None, name="swish", params=(pspec("x"),), one_line=True,
                         body=(S.Return(None, values=(binop("*", x, call("sigmoid", x)),)),))


def test_one_line_fn_continued_after_equals():
    (fn,) = parse_text("fn f(x) =\n    x -> relu\n").items
    assert fn.body == (S.Return(None, values=(pipe("relu", x),)),)


def test_block_fn_with_defaults():
    (fn,) = parse_text("fn f(x, axis = -1,) {\n    m = mean(x, axis = axis)\n"
                       "    return x - m\n}\n").items
    assert fn == S.FnDef(None, name="f", params=(pspec("x"), pspec("axis", neg(num("1")))),
                         body=(assign("m", value=call("mean", x, axis=n("axis"))),
                               S.Return(None, values=(binop("-", x, n("m")),))))
    assert fn.one_line is False


def test_layer_definition():
    (layer,) = parse_text("layer Dense2(x, units, bias = true) {\n"
                          "    param W: [x.shape[-1], units] = glorot_uniform\n"
                          "    return x @ W\n}\n").items
    assert isinstance(layer, S.LayerDef)
    assert layer.name == "Dense2"
    assert layer.params == (pspec("x"), pspec("units"), pspec("bias", boolean(True)))
    assert layer.body[1] == S.Return(None, values=(binop("@", x, n("W")),))


@pytest.mark.parametrize("header", ["model m", "model m()", "model m( )"])
def test_model_without_parameters(header):
    (model,) = parse_text(f"{header} {{\n    input x: f32[2]\n}}\n").items
    assert model == S.ModelDef(None, name="m", params=(), body=(
        S.InputDecl(None, name="x", type=ttype("f32", num("2"))),))


def test_model_with_compile_time_parameters():
    (model,) = parse_text("model m(batch = 64, hidden = 128, rate = 0.5) { }\n").items
    assert model.params == (pspec("batch", num("64")), pspec("hidden", num("128")),
                            pspec("rate", num("0.5")))
    assert model.body == ()


def test_import_and_string_escapes():
    prog = parse_text('import "layers/common.net"\nimport "a\\"b\\\\c\\nd\\te"\n')
    assert prog.items == (S.Import(None, path="layers/common.net"),
                          S.Import(None, path='a"b\\c\nd\te'))


def test_empty_string_and_empty_file():
    assert parse_text('import ""\n').items == (S.Import(None, path=""),)
    assert parse_text("").items == ()
    assert parse_text("\n\n   # only a comment\n;\n").items == ()


def test_byte_order_mark_is_skipped():
    assert parse_text("\ufefffn f(x) = x\n").items[0].name == "f"


def test_train_block_settings_directives_and_steps():
    (train,) = parse_text(
        "train gan {\n"
        '    data = "mixture"; validation = 0.2\n'
        "    optimizer = adam(lr = 1e-3)\n"
        "    metrics = [accuracy, f1]\n"
        "    loss = total\n"
        "    early_stop(monitor = val_loss, patience = 3)\n"
        "    step disc { loss = d_loss; params = [D]; optimizer = adam(2e-4, beta1 = 0.5) }\n"
        "    step gen {\n        loss = g_loss\n        params = [G, D.fc1]\n    }\n"
        "}\n").items
    assert train == S.TrainDef(None, model="gan", items=(
        setting("data", string("mixture")),
        setting("validation", num("0.2")),
        setting("optimizer", call("adam", lr=num("1e-3"))),
        setting("metrics", lst(n("accuracy"), n("f1"))),
        setting("loss", n("total")),
        S.Directive(None, call=call("early_stop", monitor=n("val_loss"), patience=num("3"))),
        S.StepBlock(None, name="disc", settings=(
            setting("loss", n("d_loss")), setting("params", lst(n("D"))),
            setting("optimizer", call("adam", num("2e-4"), beta1=num("0.5"))))),
        S.StepBlock(None, name="gen", settings=(
            setting("loss", n("g_loss")),
            setting("params", lst(n("G"), attr(n("D"), "fc1"))))),
    ))


def test_empty_train_block():
    assert parse_text("train m { }\n").items == (S.TrainDef(None, model="m", items=()),)


def test_whole_program_in_order():
    prog = parse_text('import "a.net"\nfn f(x) = x\nlayer L(x) { return x }\n'
                      "model m { }\ntrain m { }\n", "whole.net")
    assert [type(i).__name__ for i in prog.items] == \
        ["Import", "FnDef", "LayerDef", "ModelDef", "TrainDef"]
    assert prog.file == "whole.net"


def test_language_md_first_look():
    """The model of LANGUAGE.md section 1, statement by statement."""
    from front_syntax import EXAMPLES

    from netc.compiler.parse import parse_file

    model, train = parse_file(EXAMPLES / "digits_mlp.net").items
    assert model.params == (pspec("batch", num("64")), pspec("hidden", num("128")))
    assert model.body[2] == assign("h", value=pipe(
        "dropout", pipe("relu", pipe("Dense", x, n("hidden"), alias="fc1")), num("0.1")))
    assert model.body[4] == S.Output(None, name="probs", value=call("softmax", n("logits")))
    assert train.items[-1] == S.Directive(None, call=call(
        "early_stop", monitor=n("val_loss"), patience=num("3")))
