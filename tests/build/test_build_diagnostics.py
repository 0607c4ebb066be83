"""build_ir: one test per user-facing diagnostic, asserting the message and line:col."""

import os

import pytest
from buildutil import build_text, expect_error

from netc.compiler.errors import NetError


def M(body, extra=""):
    return extra + "model m {\n" + body + "\n}\n"


def test_unknown_name_with_suggestion():
    expect_error(M("    input hidden: f32[2, 3]\n    output o = hiden + 1"),
                 "unknown name 'hiden' — did you mean 'hidden'?", 3, 16)


def test_unknown_layer_with_suggestion():
    expect_error(M("    input x: f32[2, 3]\n    output o = x -> Dence(4)"),
                 "unknown layer 'Dence' — did you mean 'Dense'?", 3, 21)


def test_unknown_function_with_suggestion():
    expect_error(M("    input x: f32[2, 3]\n    output o = rellu(x)"),
                 "unknown function 'rellu' — did you mean 'relu'?", 3, 16)


def test_wrong_arity():
    expect_error(M("    input x: f32[2, 3]\n    output o = relu(x, 2)"),
                 "relu() takes at most 1 argument (x), got 2", 3, 24)


def test_unknown_keyword():
    expect_error(M("    input x: f32[2, 3]\n    output o = softmax(x, axs = 0)"),
                 "softmax() has no parameter 'axs' — did you mean 'axis'?", 3, 27)


def test_missing_layer_argument():
    expect_error(M("    input x: f32[2, 3]\n    output o = x -> Dense()"),
                 "Dense is missing its argument 'units'", 3, 16)


def test_shape_mismatch_shows_both_shapes():
    e = expect_error(M("    input a: f32[2, 3]\n    input b: f32[4, 5]\n    output o = a @ b"),
                     "matmul", 4, 16)
    assert "f32[2,3]" in e.message and "f32[4,5]" in e.message


def test_rank_error_conv_on_rank_2():
    expect_error(M("    input x: f32[2, 3]\n    output o = x -> Conv2D(4, 3)"),
                 "Conv2D: conv2d: expected a rank-4 NCHW tensor, got f32[2,3]", 3, 16)


def test_non_scalar_loss():
    expect_error(M("    input x: f32[2, 3]\n    loss x * 2"),
                 "a loss must be a scalar, but this is f32[2,3]", 3, 10)


def test_duplicate_instance_name():
    expect_error(M("    input x: f32[2, 3]\n    h = x -> Dense(3) as fc\n"
                   "    output o = h -> Dense(3) as fc"),
                 "layer instance name 'fc' is used twice", 4, 33)


def test_duplicate_input():
    expect_error(M("    input x: f32[2, 3]\n    input x: f32[2, 3]"),
                 "'x' is already defined in this scope", 3, 5)


def test_recursive_layer():
    text = "layer Loop(x) {\n    return x -> Loop\n}\n" + M("    input x: f32[2]\n"
                                                            "    output o = x -> Loop")
    expect_error(text, "layer 'Loop' calls itself", 2, 12)


def test_update_of_a_non_state():
    expect_error(M("    input x: f32[3]\n    param w: [3] = zeros\n    w <- x"),
                 "'w <- ...' updates a state, but 'w' is a param", 4, 5)


def test_tensor_too_large():
    expect_error(M("    input x: f32[100000, 100000]"), "more than the 8 GiB", 2, 14)


def test_tensor_size_is_exact_for_huge_dimensions():
    # the element count once went through an int64 product: 2**32 * 2**32 wrapped to 0 (and
    # passed), a dimension past 2**63 raised OverflowError (an internal compiler error)
    expect_error(M("    input x: f32[4294967296, 4294967296]"), "more than the 8 GiB", 2, 14)
    expect_error(M("    input x: f32[99999999999999999999999999, 3]"), "more than the 8 GiB",
                 2, 14)


def test_computed_tensor_too_large():
    # the limit holds for every value, not only declared ones: zeros()/broadcast_to()/reshape
    # results once got through and the interpreter died allocating them
    expect_error(M("    input x: f32[2]\n    output o = x + sum(zeros([100000, 100000, 100]))"),
                 "f32[100000,100000,100] needs 3725.3 GiB, more than the 8 GiB", 3, 24)


def test_boolean_meeting_a_number_at_compile_time():
    # `true / 2` inside the prelude's MultiHeadAttention (heads = true) once raised
    # AttributeError in number_const (an internal compiler error): the other operand was a
    # plain number, not a tensor
    # (now the layer's argument check says it first)
    expect_error(M("    input x: f32[2, 5, 3]\n    output o = x -> MultiHeadAttention(true, 4)"),
                 "MultiHeadAttention: heads must be a positive integer, got the boolean true",
                 3, 40)
    expect_error(M("    input x: f32[2, 3]\n    output o = x + (true / 2)"),
                 "div: operands have different dtypes (bool[] and f32[])", 3, 21)
    expect_error(M("    input x: f32[2, 3]\n    output o = x + (true + 1)"),
                 "add: operands have different dtypes (bool[] and f32[])", 3, 21)


def test_a_number_that_the_tensor_type_cannot_hold():
    # `k + 3000000000` (k i32) was an internal compiler error (OverflowError from NumPy), and
    # `x * 1e40` (x f32) became inf with a RuntimeWarning printed
    expect_error(M("    input k: i32[3]\n    output o = k + 3000000000"),
                 "the number 3000000000 cannot meet an i32 tensor (i32 holds "
                 "-2147483648..2147483647)", 3, 20)
    expect_error(M("    input k: i32[3]\n    output o = clip(k, 0, 1" + "0" * 400 + ")"),
                 "is too large for f64", 3, 27)
    # a built-in's number argument meeting an i32 tensor: internal compiler errors before
    expect_error(M("    input k: i32[3]\n    output o = clip(k, 0, 1.5)"),
                 "the number 1.5 cannot meet an i32 tensor (it is not an integer)", 3, 16)
    expect_error(M("    input k: i32[3]\n    output o = clip(k, 0, 3000000000)"),
                 "cannot meet an i32 tensor (i32 holds", 3, 16)
    expect_error(M("    input x: f32[3]\n    output o = leaky_relu(x, alpha = 1e40)"),
                 "the number 1e+40 is too large for f32", 3, 16)
    expect_error(M("    input x: f32[3]\n    output o = x * 1e40"),
                 "the number 1e+40 is too large for f32 (at most 3.4028235e+38)", 3, 20)
    expect_error(M("    input x: f32[3]\n    output o = x - 1" + "0" * 400),
                 "is too large for f32", 3, 20)
    expect_error(M("    input x: f64[3]\n    output o = x * 1e400"), "is too large for f64", 3, 20)
    for text in ("    input k: i32[3]\n    output o = clip(k, -2147483648, 2147483647)",
                 "    input x: f32[3]\n    output o = x * 3.4028235e38"):
        build_text(M(text))
    build_text(M("    input x: f32[3]\n    output o = x * 1e40"), float_dtype="f64")


def test_mixed_dtypes_suggest_what_the_language_has():
    # the message once said "use a cast", but the language has no cast function
    expect_error(M("    input x: f32[2, 3]\n    output o = x * (x > 0)"),
                 "mul: operands have different dtypes (f32[2,3] and bool[2,3]); element types "
                 "never mix implicitly: turn a bool into numbers with where(c, 1.0, 0.0)", 3, 16)
    expect_error(M("    input x: f64[2, 3]\n    param w: [3] = ones\n    output o = x * w"),
                 "declare both f64 (param W: f64[...]), or compile with dtype='float64'", 4, 16)


def test_bad_dimension():
    expect_error(M("    input x: f32[2, 0]"), "a dimension must be a positive compile-time "
                 "integer, got the number 0", 2, 21)


def test_layer_name_must_be_capitalized():
    expect_error("layer dense2(x) {\n    return x\n}\n" + M("    input x: f32[2]"),
                 "layer names start with a capital letter", 1, 1)


def test_fn_cannot_call_a_layer():
    text = "fn f(x) = x -> Dense(3)\n" + M("    input x: f32[2, 3]\n    output o = f(x)")
    e = expect_error(text, "function 'f' cannot call layer 'Dense'", 1, 16)
    assert any("in function 'f' called here" in n for n, _ in e.diagnostics[0].notes)


def test_param_in_fn_is_refused():
    text = "fn f(x) {\n    param w: [2] = zeros\n    return x * w\n}\n" + M(
        "    input x: f32[2]\n    output o = f(x)")
    expect_error(text, "'param' is not allowed in a function", 2, 5)


def test_output_in_layer_is_refused():
    text = "layer L(x) {\n    output y = x\n    return x\n}\n" + M(
        "    input x: f32[2]\n    output o = L(x)")
    expect_error(text, "'output' is not allowed in a layer", 2, 5)


def test_statement_after_return():
    text = "fn f(x) {\n    return x\n    y = x\n}\n" + M("    input x: f32[2]\n"
                                                      "    output o = f(x)")
    expect_error(text, "comes after 'return'", 3, 5)


def test_tuple_unpack_mismatch():
    expect_error(M("    input x: f32[2]\n    a, b = x"), "cannot unpack a tensor f32[2]", 3, 12)


def test_fancy_indexing_is_refused():
    expect_error(M("    input x: f32[4]\n    input i: i32[2]\n    output o = x[i]"),
                 "fancy indexing", 4, 18)


def test_index_out_of_range():
    expect_error(M("    input x: f32[4, 3]\n    output o = x[:, 3]"),
                 "index 3 is out of range for axis 1 of size 3", 3, 21)


def test_unknown_initializer():
    expect_error(M("    param w: [2, 2] = glorot_unifrom"),
                 "unknown initializer 'glorot_unifrom' — did you mean 'glorot_uniform'?", 2, 23)


def test_override_of_unknown_model_parameter():
    with pytest.raises(NetError) as info:
        build_text("model m(hidden = 3) {\n    input x: f32[2, hidden]\n}\n",
                   overrides={"hiden": 4})
    assert "model 'm' has no parameter 'hiden' — did you mean 'hidden'?" in info.value.message


def test_import_cycle_names_the_chain(tmp_path):
    (tmp_path / "a.net").write_text('import "b.net"\nfn fa(x) = x\n')
    (tmp_path / "b.net").write_text('import "a.net"\nfn fb(x) = x\n')
    with pytest.raises(NetError) as info:
        build_text('import "a.net"\n' + M("    input x: f32[2]"), tmp_path)
    assert "import cycle" in info.value.message and "a.net" in info.value.message
    assert info.value.loc.line == 1


def test_missing_import(tmp_path):
    with pytest.raises(NetError) as info:
        build_text('import "nope.net"\n' + M("    input x: f32[2]"), tmp_path)
    assert "cannot import 'nope.net'" in info.value.message
    assert (info.value.loc.line, info.value.loc.col) == (1, 1)


@pytest.mark.parametrize("make, target, what", [
    (lambda d: (d / "lib").mkdir(), "lib", "is a directory"),
    (lambda d: os.mkfifo(d / "lib"), "lib", "is not a regular file (a FIFO)"),
    (lambda d: None, "/dev/zero", "is not a regular file (a character device)"),
])
def test_import_of_something_not_a_regular_file(tmp_path, make, target, what):
    # these said "does not exist"; a FIFO or a device must be refused without being read
    if target.startswith("/dev/") and not os.path.exists(target):
        pytest.skip(f"no {target} here")
    make(tmp_path)
    with pytest.raises(NetError) as info:
        build_text(f'import "{target}"\n' + M("    input x: f32[2]"), tmp_path)
    full = target if os.path.isabs(target) else str(tmp_path / target)
    assert info.value.message == f"cannot import '{target}': {full} {what}"
    assert (info.value.loc.line, info.value.loc.col) == (1, 1)


@pytest.mark.parametrize("listed, col", [("ln", 25), ("fc, ln", 29)])
def test_regularizer_naming_an_instance_without_weights(listed, col):
    # said "l2(): argument 'ts' lists no tensors", at the call, or nothing when listed with others
    body = ("    input x: f32[4, 3]\n    target y: f32[4, 2]\n"
            "    h = x -> LayerNorm() as ln -> Dense(2) as fc\n"
            f"    loss mse(h, y) + l2({listed})")
    expect_error(M(body), "l2(): layer instance 'ln' has no weights (parameters of rank >= 2), "
                 "which is what an instance name stands for here; name its parameters instead: "
                 "ln.gamma, ln.beta", 5, col)
    build_text(M(body.replace(f"l2({listed})", "l2(fc, ln.gamma) + l1(fc)")))


@pytest.mark.parametrize("listed", ["[fc, ln.gamma]", "[fc], ln.gamma", "fc, [ln.gamma]"])
def test_regularizer_over_a_list_literal(listed):
    # l2([fc, ln.gamma]) said "argument 'ts' must list tensors, got a list of 2 values"
    body = ("    input x: f32[4, 3]\n    target y: f32[4, 2]\n"
            "    h = x -> LayerNorm() as ln -> Dense(2) as fc\n"
            "    loss mse(h, y) + l2({})")
    a = build_text(M(body.format(listed)))
    b = build_text(M(body.format("fc, ln.gamma")))
    assert a.graph.to_text() == b.graph.to_text()
    expect_error(M(body.format("[]")), "l2(): argument 'ts' lists no tensors", 5, 22)


@pytest.mark.parametrize("call, message, col", [
    # max_pool2d(x, 0) said "stride must be >= 1, got (0, 0)" (the stride defaults to k), and
    # every size was reported at the whole call; Conv2D's said "a dimension must be a positive
    # compile-time integer" (its weight's shape) or "Conv2D: conv2d: stride must be >= 1"
    ("max_pool2d(x, 0)", "max_pool2d(): argument 'k' (the kernel size) must be >= 1, got 0", 30),
    ("avg_pool2d(x, [2, 0])", "avg_pool2d(): argument 'k' (the kernel size) must be >= 1, got "
     "[2, 0]", 30),
    ("x -> max_pool2d(k = -1)", "max_pool2d(): argument 'k' (the kernel size) must be >= 1, "
     "got -1", 32),
    ("avg_pool2d(x, [1, 2, 3])", "avg_pool2d(): argument 'k' (the kernel size) must be an "
     "integer or a pair of integers, got [1, 2, 3]", 30),
    ("max_pool2d(x, 2, stride = 0)", "max_pool2d(): argument 'stride' must be >= 1, got 0", 33),
    ("conv2d(x, w, stride = [1, 0])", "conv2d(): argument 'stride' must be >= 1, got [1, 0]",
     29),
    ("conv2d(x, w, pad = -1)", "conv2d(): argument 'pad' must be >= 0, got -1", 29),
    ("conv2d(x, w, 1, true)", "conv2d(): argument 'pad' must be an integer or a pair of "
     "integers, got true", 32),
    ("x -> Conv2D(4, 0)", "Conv2D: kernel (the kernel size) must be a positive integer, got "
     "the number 0", 31),
    ("x -> Conv2D(0, 3)", "Conv2D: filters must be a positive integer, got the number 0", 28),
    ("x -> Conv2D(4, 3, stride = 0)", "Conv2D: stride must be >= 1, got 0", 34),
    ("x -> Conv2D(4, 3, pad = [1, -2])", "Conv2D: pad must be >= 0, got [1, -2]", 34),
    ("flatten(x) -> Dense(0)", "Dense: units must be a positive integer, got the number 0", 36),
    ("flatten(x) -> Dense(3, bias = 2)", "Dense: bias must be true or false, got the number 2",
     39),
])
def test_bad_kernel_stride_pad_are_named_at_the_argument(call, message, col):
    expect_error(M(f"    input x: f32[2, 3, 8, 8]\n    param w: [4, 3, 3, 3]\n"
                   f"    output o = {call}"), message, 4, col)


def test_conv2d_layer_of_a_user_is_not_checked_as_the_prelude_one():
    # the prelude's argument checks belong to the prelude layer, not to the name
    layer = ("layer Conv2D(x, filters, kernel, stride = 1, pad = 0) {\n"
             "    return x * filters\n}\n")
    build_text(M("    input x: f32[2, 3]\n    output o = x -> Conv2D(2, 0, pad = -5)", layer))


def test_duplicate_definition():
    text = "fn f(x) = x\nfn f(x) = x * 2\n" + M("    input x: f32[2]")
    e = expect_error(text, "'f' is defined twice", 2, 1)
    assert e.diagnostics[0].notes[0][1].line == 1


TRAIN_MODEL = M("    input x: f32[2, 3]\n    target y: i32[2]\n"
                "    logits = x -> Dense(4) as fc\n    loss cross_entropy(logits, y)")


@pytest.mark.parametrize("setting, message, col", [
    ("optimzer = adam", "unknown train setting 'optimzer' — did you mean 'optimizer'?", 5),
    ("optimizer = adma(1e-3)", "unknown optimizer 'adma' — did you mean 'adam'?", 17),
    ("optimizer = adam(lr = -1)", "adam: lr must be > 0", 17),
    ("optimizer = sgd(0.1, momentom = 0.9)", "sgd has no argument 'momentom' — did you mean "
     "'momentum'?", 26),
    ("schedule = cosin", "unknown schedule 'cosin' — did you mean 'cosine'?", 16),
    ("metrics = [acuracy]", "unknown metric 'acuracy' — did you mean 'accuracy'?", 16),
    ("freeze = [fc2]", "freeze: no layer instance or parameter 'fc2' — did you mean 'fc'?", 15),
    ("batch = 0", "batch must be >= 1, got 0", 13),
    ("epochs = 2.5", "epochs must be an integer, got 2.5", 14),
    ("early_stop(monitor = val_acc)", "early_stop cannot monitor 'val_acc'", 5),
    ("augment = [random_crop(pad = 0)]", "random_crop: pad must be >= 1, got 0", 16),
    ("validation = 1.5", "validation must be < 1, got 1.5", 18),
    # 1e400 is inf: once accepted as a learning rate (or decay), training gave NaN
    ("optimizer = adam(lr = 1e400)", "adam: lr must be a finite number, got inf", 17),
    ("schedule = exponential(1e999)", "exponential: gamma must be a finite number, got inf", 16),
])
def test_train_block_mistakes(setting, message, col):
    expect_error(TRAIN_MODEL + "train m {\n    " + setting + "\n}\n", message, 8, col)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_overridden_lr_must_be_finite(value):
    # --set lr=nan / lr=inf (read by Python's float) and configure(lr=nan) were accepted
    from netc.compiler.build_train import override_train
    built = build_text(TRAIN_MODEL)
    with pytest.raises(NetError, match=f"lr must be a finite number, got {value}"):
        override_train(built.train, {"lr": value}, built)


@pytest.mark.parametrize("key", ["l2", "clip_norm", "epochs"])
def test_overridden_settings_must_be_finite(key):
    # --set l2=nan said "<--set l2>:2:10: error: expected a number, a string or true/false
    # here" (the nan was written into .net text, where no literal spells it)
    from netc.compiler.build_train import override_train
    built = build_text(TRAIN_MODEL)
    with pytest.raises(NetError, match=f"{key} must be a finite number, got nan"):
        override_train(built.train, {key: float("nan")}, built)


def test_train_block_for_unknown_model():
    expect_error(TRAIN_MODEL + "train mm {\n}\n", "train block for unknown model 'mm' — did "
                 "you mean 'm'?", 7, 7)


def test_named_losses_need_step_blocks():
    text = M("    input x: f32[2]\n    loss a = mean(x)\n    loss b = sum(x)") + \
        "train m {\n    epochs = 1\n}\n"
    expect_error(text, "has only named losses (a, b)", 6, 1)


def test_step_block_unknown_loss():
    text = M("    input x: f32[2]\n    h = x -> Dense(2) as D\n    loss a = mean(h)") + \
        "train m {\n    step s { loss = aa; params = [D] }\n}\n"
    expect_error(text, "step 's': no loss named 'aa' — did you mean 'a'?", 7, 21)


def test_error_inside_prelude_layer_points_at_the_call():
    expect_error(M("    input x: f32[2, 3, 4, 5]\n    output o = x -> MultiHeadAttention(2, 4)"),
                 "MultiHeadAttention: reshape: cannot reshape", 3, 16)


@pytest.mark.parametrize("args, col", [("2, 5", 43), ("dim = 5, heads = 2", 40)])
def test_attention_dim_not_divisible_by_heads(args, col):
    # said "MultiHeadAttention: reshape(): argument 'shape': a shape holds integers, got the
    # number 2.5", the prelude layer's insides
    e = expect_error(M(f"    input x: f32[2, 3, 4]\n    output o = x -> MultiHeadAttention({args})"),
                     "MultiHeadAttention: dim (5) must be divisible by heads (2), each head "
                     "taking dim / heads features", 3, col)
    assert not e.diagnostics[0].notes


def test_every_message_is_free_of_python_reprs():
    """No diagnostic leaks internal names (tracebacks are checked by the CLI tests)."""
    for text in [M("    input x: f32[2]\n    output o = x -> Foo"),
                 M("    input x: f32[2]\n    output o = x.foo")]:
        with pytest.raises(NetError) as info:
            build_text(text)
        assert "<" not in info.value.message and "object at" not in info.value.message


def test_an_enormous_loop_is_refused_at_its_header():
    # loops unroll into the graph: `for t in 0..100000000` built for hours (netc check hung)
    msg = "loops are unrolled when the model compiles, and this one takes the model past " \
          "100000 loop-body runs in all"
    expect_error(M("    input x: f32[2]\n    h = x\n    for t in 0..100000000 { h = h + 1 }\n"
                   "    output h"), msg + " (100000000 here)", 4, 5)
    expect_error(M("    input x: f32[2]\n    h = x\n    repeat 200000 { h = h * 2 }\n"
                   "    output h"), msg, 4, 5)
    # nested loops count every run of the inner body (the outer one's runs come first)
    expect_error(M("    input x: f32[2]\n    h = x\n    for i in 0..100000 {\n"
                   "        for j in 0..2 { h = h + 1 }\n    }\n    output h"), msg + " (2 here)",
                 5, 9)
    build_text(M("    input x: f32[2]\n    h = x\n    for i in 0..3 {\n"
                 "        repeat 4 { h = h + 1 }\n    }\n    output h"))
