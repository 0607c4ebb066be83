"""Stage 2c — the built-in layers the language cannot express itself, written against the builder.

Takes: a `LayerContext` (the builder, positioned inside a fresh or shared layer instance, and where
each argument was written) and the call's bound arguments. Gives: the layer's result node(s).
Dense (its `bias` flag), BatchNorm (the train/eval mode and running statistics), Embedding (a
gather), and the recurrent layers RNN, LSTM and GRU (a loop over time and the `sequences` flag)
live here; the others are in grammar/prelude/layers.net.

Arguments are checked here, in Python, for both kinds of built-in layer, so that a bad one is
reported in the user's terms at the argument (`Dense: units must be a positive integer`), never as
an error from inside the layer's body: the native layers check their own; `PRELUDE_CHECKS` holds
the checks of the prelude layers (Conv2D's sizes, MultiHeadAttention's `dim` divisible by
`heads`), which the builder runs before the `.net` body of a prelude layer.

Weight layouts are `x @ W` (W is [in, out]); gate order LSTM (i, f, g, o), GRU (r, z, n) as in
PyTorch, whose `weight_ih` is our `Wx` transposed. GRU keeps the hidden bias `bh` apart because
its candidate uses r * (h Wh_n + bh_n), as PyTorch does.
"""

from __future__ import annotations

from .build_expr import describe
from .errors import NetTypeError, ShapeError, SourceLoc
from .ir import Node, TensorType
from .ops import composites as C
from .ops.base import pair


class LayerContext:
    """What a native layer may do: declare params/state, update state, emit ops."""

    def __init__(self, builder, loc: SourceLoc, arg_locs: dict[str, SourceLoc] | None = None):
        self.b = builder
        self.g = builder.g
        self.loc = loc
        self.arg_locs = arg_locs or {}

    def arg_loc(self, name: str) -> SourceLoc:
        """Where argument `name` was written; the call for one left to its default."""
        return self.arg_locs.get(name, self.loc)

    @property
    def training(self) -> bool:
        return self.g.mode == "train"

    def param(self, name: str, shape: tuple[int, ...], init=("glorot_uniform", {})) -> Node:
        return self.b.declare("param", name, TensorType(tuple(shape), self.g.float_dtype), init,
                              False, self.loc)

    def state(self, name: str, shape: tuple[int, ...], init=("zeros", {})) -> Node:
        return self.b.declare("state", name, TensorType(tuple(shape), self.g.float_dtype), init,
                              False, self.loc)

    def update(self, state: Node, value: Node) -> None:
        full = state.attrs["name"]
        if full in self.b.updated:
            raise ShapeError(f"state '{full}' is updated twice in one step (a layer with running "
                             "statistics cannot be shared across loop iterations)", self.loc)
        self.b.updated[full] = self.loc
        if self.training:
            self.g.updates[full] = value

    def op(self, op: str, *inputs: Node, **attrs) -> Node:
        return self.g.add(op, list(inputs), attrs or None, self.loc)

    def const(self, v: float) -> Node:
        return self.g.const(v, self.g.float_dtype, self.loc)


def _tensor(x, layer: str, what: str = "its input", rank: int | None = None,
            min_rank: int = 1, loc: SourceLoc | None = None) -> Node:
    if not isinstance(x, Node):
        raise NetTypeError(f"{layer}: {what} must be a tensor", loc)
    if rank is not None and x.type.rank != rank:
        raise ShapeError(f"{layer} expects a rank-{rank} input, got {x.type}", loc)
    if x.type.rank < min_rank:
        raise ShapeError(f"{layer} expects an input of rank >= {min_rank}, got {x.type}", loc)
    return x


def _pos_int(v, layer: str, what: str, loc) -> int:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise NetTypeError(f"{layer}: {what} must be a positive integer, got {describe(v)}",
                           loc)
    return v


def _flag(v, layer: str, what: str, loc) -> bool:
    if not isinstance(v, bool):
        raise NetTypeError(f"{layer}: {what} must be true or false, got {describe(v)}", loc)
    return v


def dense(ctx: LayerContext, x, units, bias=True):
    x = _tensor(x, "Dense", loc=ctx.loc)
    units = _pos_int(units, "Dense", "units", ctx.arg_loc("units"))
    W = ctx.param("W", (x.type.shape[-1], units))
    y = ctx.op("matmul", x, W) if x.type.rank >= 2 else \
        ctx.op("reshape", ctx.op("matmul", ctx.op("reshape", x, shape=(1, x.type.shape[0])), W),
               shape=(units,))
    if _flag(bias, "Dense", "bias", ctx.arg_loc("bias")):
        y = ctx.op("add", y, ctx.param("b", (units,), ("zeros", {})))
    return y


def batch_norm(ctx: LayerContext, x, momentum=0.1, eps=1e-5):
    """Normalizes per channel: axis 1 of NCHW images, the last axis otherwise."""
    x = _tensor(x, "BatchNorm", min_rank=2, loc=ctx.loc)
    shape = x.type.shape
    ch_axis = 1 if x.type.rank == 4 else x.type.rank - 1
    c = shape[ch_axis]
    axes = tuple(a for a in range(x.type.rank) if a != ch_axis)
    bshape = tuple(c if a == ch_axis else 1 for a in range(x.type.rank))
    gamma = ctx.param("gamma", (c,), ("ones", {}))
    beta = ctx.param("beta", (c,), ("zeros", {}))
    mean_s = ctx.state("running_mean", (c,), ("zeros", {}))
    var_s = ctx.state("running_var", (c,), ("ones", {}))
    n = 1
    for a in axes:
        n *= shape[a]
    if ctx.training:
        mean = C.mean(ctx.g, x, axes, True, ctx.loc)
        var = C.var(ctx.g, x, axes, True, ctx.loc)
        m = float(momentum)
        flat_mean = ctx.op("reshape", mean, shape=(c,))
        flat_var = ctx.op("reshape", var, shape=(c,))
        unbiased = ctx.op("mul", flat_var, ctx.const(n / max(n - 1, 1)))
        ctx.update(mean_s, ctx.op("add", ctx.op("mul", mean_s, ctx.const(1 - m)),
                                  ctx.op("mul", flat_mean, ctx.const(m))))
        ctx.update(var_s, ctx.op("add", ctx.op("mul", var_s, ctx.const(1 - m)),
                                 ctx.op("mul", unbiased, ctx.const(m))))
    else:
        mean = ctx.op("reshape", mean_s, shape=bshape)
        var = ctx.op("reshape", var_s, shape=bshape)
        ctx.update(mean_s, mean_s)  # keeps the "updated once" check the same in both modes
        ctx.update(var_s, var_s)
    inv = ctx.op("rsqrt", ctx.op("add", var, ctx.const(float(eps))))
    y = ctx.op("mul", ctx.op("sub", x, mean), inv)
    return ctx.op("add", ctx.op("mul", y, ctx.op("reshape", gamma, shape=bshape)),
                  ctx.op("reshape", beta, shape=bshape))


def embedding(ctx: LayerContext, x, vocab, dim):
    x = _tensor(x, "Embedding", loc=ctx.loc)
    if x.type.dtype != "i32":
        raise NetTypeError(f"Embedding takes integer indices (i32), got {x.type}", ctx.loc)
    vocab = _pos_int(vocab, "Embedding", "vocab", ctx.arg_loc("vocab"))
    dim = _pos_int(dim, "Embedding", "dim", ctx.arg_loc("dim"))
    table = ctx.param("table", (vocab, dim), ("normal", {"std": 1.0, "mean": 0.0}))
    return ctx.op("gather", table, x, axis=0)


def _time_steps(ctx: LayerContext, xw: Node) -> list[Node]:
    """Slices [b, T, G] into T tensors [b, G]."""
    b, t, gdim = xw.type.shape
    out = []
    for i in range(t):
        s = ctx.op("slice", xw, starts=(None, i, None), stops=(None, i + 1, None),
                   steps=(None, 1, None))
        out.append(ctx.op("reshape", s, shape=(b, gdim)))
    return out


def _cols(ctx: LayerContext, x: Node, k: int, units: int) -> Node:
    b = x.type.shape[0]
    s = ctx.op("slice", x, starts=(None, k * units), stops=(None, (k + 1) * units),
               steps=(None, 1))
    return ctx.op("reshape", s, shape=(b, units))


def _recurrent(ctx: LayerContext, name: str, x, units, sequences, gates: int, cell):
    x = _tensor(x, name, rank=3, loc=ctx.loc)
    units = _pos_int(units, name, "units", ctx.arg_loc("units"))
    seq = _flag(sequences, name, "sequences", ctx.arg_loc("sequences"))
    b, _, f = x.type.shape
    Wx = ctx.param("Wx", (f, gates * units))
    Wh = ctx.param("Wh", (units, gates * units), ("orthogonal", {"gain": 1.0}))
    bx = ctx.param("b", (gates * units,), ("zeros", {}))
    xw = ctx.op("add", ctx.op("matmul", x, Wx), bx)
    zero = ctx.op("broadcast_to", ctx.const(0.0), shape=(b, units))
    h, c = zero, zero
    outs = []
    for xt in _time_steps(ctx, xw):
        h, c = cell(ctx, xt, h, c, Wh, units)
        outs.append(ctx.op("reshape", h, shape=(b, 1, units)))
    if not seq:
        return h
    return outs[0] if len(outs) == 1 else ctx.op("concat", *outs, axis=1)


def _rnn_cell(ctx, xt, h, c, Wh, units):
    return ctx.op("tanh", ctx.op("add", xt, ctx.op("matmul", h, Wh))), c


def _lstm_cell(ctx, xt, h, c, Wh, units):
    z = ctx.op("add", xt, ctx.op("matmul", h, Wh))
    i, f, g, o = (_cols(ctx, z, k, units) for k in range(4))
    c = ctx.op("add", ctx.op("mul", ctx.op("sigmoid", f), c),
               ctx.op("mul", ctx.op("sigmoid", i), ctx.op("tanh", g)))
    return ctx.op("mul", ctx.op("sigmoid", o), ctx.op("tanh", c)), c


def rnn(ctx: LayerContext, x, units, sequences=False):
    return _recurrent(ctx, "RNN", x, units, sequences, 1, _rnn_cell)


def lstm(ctx: LayerContext, x, units, sequences=False):
    return _recurrent(ctx, "LSTM", x, units, sequences, 4, _lstm_cell)


def gru(ctx: LayerContext, x, units, sequences=False):
    def cell(ctx, xt, h, c, Wh, units):
        bh = ctx.param("bh", (3 * units,), ("zeros", {}))
        hw = ctx.op("add", ctx.op("matmul", h, Wh), bh)
        r = ctx.op("sigmoid", ctx.op("add", _cols(ctx, xt, 0, units), _cols(ctx, hw, 0, units)))
        z = ctx.op("sigmoid", ctx.op("add", _cols(ctx, xt, 1, units), _cols(ctx, hw, 1, units)))
        n = ctx.op("tanh", ctx.op("add", _cols(ctx, xt, 2, units),
                                  ctx.op("mul", r, _cols(ctx, hw, 2, units))))
        # h' = (1 - z) * n + z * h  =  n + z * (h - n)
        return ctx.op("add", n, ctx.op("mul", z, ctx.op("sub", h, n))), c
    return _recurrent(ctx, "GRU", x, units, sequences, 3, cell)


# name -> (function, [(parameter, default or None when required)])
NATIVE_LAYERS = {
    "Dense": (dense, [("x", None), ("units", None), ("bias", True)]),
    "BatchNorm": (batch_norm, [("x", None), ("momentum", 0.1), ("eps", 1e-5)]),
    "Embedding": (embedding, [("x", None), ("vocab", None), ("dim", None)]),
    "RNN": (rnn, [("x", None), ("units", None), ("sequences", False)]),
    "LSTM": (lstm, [("x", None), ("units", None), ("sequences", False)]),
    "GRU": (gru, [("x", None), ("units", None), ("sequences", False)]),
}


# ---------------------------------------------------------------- checks of the prelude layers

def _conv2d_args(ctx: LayerContext, x, filters, kernel, stride=1, pad=0) -> None:
    _pos_int(filters, "Conv2D", "filters", ctx.arg_loc("filters"))
    _pos_int(kernel, "Conv2D", "kernel (the kernel size)", ctx.arg_loc("kernel"))
    pair("Conv2D", "stride", stride, lo=1, loc=ctx.arg_loc("stride"))
    pair("Conv2D", "pad", pad, lo=0, loc=ctx.arg_loc("pad"))


def _attention_args(ctx: LayerContext, x, heads, dim) -> None:
    heads = _pos_int(heads, "MultiHeadAttention", "heads", ctx.arg_loc("heads"))
    dim = _pos_int(dim, "MultiHeadAttention", "dim", ctx.arg_loc("dim"))
    if dim % heads:
        raise ShapeError(f"MultiHeadAttention: dim ({dim}) must be divisible by heads ({heads}),"
                         " each head taking dim / heads features", ctx.arg_loc("dim"))


# prelude layer name -> a check of its bound arguments, run before its .net body (not for a
# user's own layer of the same name)
PRELUDE_CHECKS = {
    "Conv2D": _conv2d_args,
    "MultiHeadAttention": _attention_args,
}
