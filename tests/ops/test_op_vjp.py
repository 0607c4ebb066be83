"""Every differentiable primitive's VJP (via autodiff.grad) against central differences in f64."""

import numpy as np
import pytest
from op_cases import LOC, all_cases, build_case

from netc.compiler.autodiff import grad
from netc.compiler.interpret import interpret
from netc.compiler.ops import PRIMITIVES
from netc.compiler.verify import verify

H = 1e-6


def _smooth_float(op, case):
    return PRIMITIVES[op].differentiable and case.smooth


@pytest.mark.parametrize("op,i,case", all_cases(_smooth_float))
def test_vjp_matches_central_differences(op, i, case):
    g, node, operands, feeds, params = build_case(op, case, seed=i + 1)
    if not node.type.is_float or not any(x.op == "param" for x in operands):
        pytest.skip("no float operand or result: nothing to differentiate")
    r = np.random.default_rng(100 + i)
    ct = g.const(r.normal(size=node.type.shape), "f64", LOC)
    loss = g.add("sum", [g.add("mul", [node, ct], None, LOC)], None, LOC)
    wrt = [x for x in operands if x.op == "param"]
    grads = grad(g, loss, wrt)
    verify(g)
    values = interpret(g, feeds, params, {}, wanted=[grads[w.id] for w in wrt])

    def f(p):
        return float(interpret(g, feeds, p, {}, wanted=[loss])[loss.id])

    for w in wrt:
        name = w.attrs["name"]
        ad = values[grads[w.id].id]
        assert ad.shape == w.type.shape and grads[w.id].type == w.type
        fd = np.zeros(w.type.shape)
        base = params[name]
        for idx in np.ndindex(*w.type.shape):
            up, down = base.copy(), base.copy()
            up[idx] += H
            down[idx] -= H
            fd[idx] = (f({**params, name: up}) - f({**params, name: down})) / (2 * H)
        np.testing.assert_allclose(ad, fd, rtol=1e-6, atol=1e-7, err_msg=f"{op} d/d{name}")
