"""The `netc` command line.

Takes: argv. Gives: an exit code — 0 on success, 1 when the user's files or data have a mistake
(diagnostics printed to stderr), 2 on bad usage (unknown command or flag), 3 on an internal compiler
error (a bug in netc: a short report, the traceback only with NETC_DEBUG=1), 130 on Ctrl-C.

Commands: `check FILE...` (every diagnostic through shape inference and train-block validation;
`--format json`), `graph FILE --stage parsed|forward|backward|optimized --format text|dot|svg`,
`plan FILE` (fused kernels and the arena), `emit FILE --llvm|--optimized|--asm|--obj` (the
generated code), `export FILE -o DIR` (a standalone C library: export.py), and `train`, `eval`,
`predict`, `tune` (in cli_train.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import traceback

from . import __version__
from .compiler import syntax as S
from .compiler.errors import Diagnostic, InternalCompilerError, NetError, UsageError

EXIT_OK, EXIT_USER, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own usage errors: exit 2 with a clear line
        self.print_usage(sys.stderr)
        print(f"netc: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _set_pairs(pairs: list[str] | None) -> dict:
    out: dict = {}
    for item in pairs or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects key=value, got '{item}'")
        out[key.strip()] = _number_or_text(value.strip())
    return out


def _number_or_text(v: str):
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    if v in ("true", "false"):
        return v == "true"
    return v


def _check_file(path: str, overrides: dict, used: set[str]) -> list[Diagnostic]:
    """The diagnostics of one file; `used` collects the --set keys some model takes."""
    from .compiler.build_ir import build
    from .compiler.program import load_program

    try:
        prog = load_program(path)
        if not prog.models:
            return []  # a library of fns and layers: parsing and imports are the checks
        for name in prog.models:
            mdef = prog.models[name]
            known = {p.name for p in mdef.params}
            used.update(known & set(overrides))
            build(path, model=name, program=prog,
                  overrides={k: v for k, v in overrides.items() if k in known})
    except NetError as e:
        return e.diagnostics
    return []


def cmd_check(args) -> int:
    overrides = _set_pairs(args.set)
    failed = 0
    results = []
    used: set[str] = set()
    for path in args.files:
        diags = _check_file(path, overrides, used)
        failed += bool(diags)
        results.append((path, diags))
        if args.format == "text":
            if diags:
                print(NetError("", diagnostics=diags).format(), file=sys.stderr)
            elif not args.quiet:
                print(f"{path}: ok")
    if args.format == "json":
        out = [d.to_json() | {"file": d.to_json()["file"] or p} for p, ds in results for d in ds]
        print(json.dumps(out, indent=2))
    unused = [k for k in overrides if k not in used]
    if unused and not failed:  # (a file that failed may be the one that has it)
        raise UsageError(f"--set {unused[0]}: no model in {', '.join(args.files)} has a "
                         f"parameter '{unused[0]}', so nothing was checked with it")
    return EXIT_USER if failed else EXIT_OK


def cmd_graph(args) -> int:
    from .compiler.parse import parse_file

    if args.stage == "parsed":
        program = parse_file(args.file)
        text = "\n".join(_pretty(item) for item in program.items)
        if args.format != "text":
            raise UsageError("--stage parsed is shown as text only")
        print(text)
        return EXIT_OK
    g = _stage_graph(args.file, args.stage, args.model, _set_pairs(args.set), args.mode)
    if args.format == "text":
        print(g.to_text())
    elif args.format == "dot":
        print(g.to_dot())
    else:
        dot = shutil.which("dot")
        if dot is None:
            raise NetError("--format svg needs Graphviz's 'dot' program: install the "
                           "'graphviz' package (apt-get install graphviz), or use --format dot")
        res = subprocess.run([dot, "-Tsvg"], input=g.to_dot(), capture_output=True, text=True,
                             timeout=300)
        if res.returncode != 0:
            raise NetError(f"dot failed: {res.stderr.strip()[:500]}")
        if args.out:
            from .saved import atomic_write, check_writable
            check_writable(args.out, {"the .net file": args.file})
            atomic_write(args.out, lambda f: f.write(res.stdout.encode()))
        else:
            sys.stdout.write(res.stdout)
    return EXIT_OK


def _stage_graph(path: str, stage: str, model: str | None, overrides: dict, mode: str):
    """The graph after `stage`: forward, backward (the whole training step), optimized."""
    from .compiler.build_ir import build
    from .compiler.pipeline import optimize
    from .compiler.train import build_step

    if stage != "forward":
        if mode == "eval":  # it was silently ignored: the training step is a train-mode graph
            raise UsageError(f"--mode eval shows the forward graph only; --stage {stage} is the "
                             "training step (use --stage forward --mode eval)")
        mode = "train"
    built = build(path, model=model, overrides=overrides, mode=mode)
    if stage == "forward":
        return built.graph
    build_step(built.graph, built.train, steps_per_epoch=1)
    if stage == "backward":
        return built.graph
    return optimize(built.graph).graph


def cmd_plan(args) -> int:
    from .compiler.build_ir import build
    from .compiler.codegen.step_input import jit_fit
    from .compiler.passes.report import plan_png, plan_report
    from .compiler.train import build_step

    built = build(args.file, model=args.model, overrides=_set_pairs(args.set),
                  mode="eval" if args.eval else "train")
    if not args.eval:
        build_step(built.graph, built.train, steps_per_epoch=1)
    print(plan_report(built.graph, fit=jit_fit))
    if args.png:
        if not plan_png(built.graph, args.png, fit=jit_fit):
            raise NetError("--png needs matplotlib: pip install 'netc[plot]' (or matplotlib)")
        print(f"lifetime chart written to {args.png}")
    return EXIT_OK


def cmd_emit(args) -> int:
    from .compiler.build_ir import build
    from .emit import emit_object, emit_text

    request = "predict" if args.predict else None
    if args.out:
        from .saved import check_writable
        check_writable(args.out, {"the .net file": args.file})
    built = build(args.file, model=args.model, overrides=_set_pairs(args.set),
                  mode="eval" if args.predict else "train")
    if args.obj:
        if not args.out:
            raise UsageError("--obj writes a binary object file: give it a name with -o FILE.o")
        from .saved import atomic_write
        data = emit_object(built, request=request)
        atomic_write(args.out, lambda f: f.write(data))
        print(f"wrote {len(data)} bytes of object code to {args.out}")
        return EXIT_OK
    what = "asm" if args.asm else "opt" if args.optimized else "llvm"
    text = emit_text(built, what=what, request=request)
    if args.out:
        from .saved import atomic_write
        atomic_write(args.out, lambda f: f.write(text.encode()))
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_export(args, sets: dict) -> int:
    from .cli_train import open_model
    from .export import describe, export_library

    m = open_model(args, sets)
    out = args.out or os.path.join("export", args.name or m.name or "model")
    print(describe(export_library(m, out, name=args.name, link=not args.no_link,
                                  steps_per_epoch=args.steps_per_epoch)))
    return EXIT_OK


def _pretty(node, indent: int = 0) -> str:
    pad = "  " * indent
    if isinstance(node, tuple):
        return "\n".join(_pretty(n, indent) for n in node)
    fields = getattr(node, "__dataclass_fields__", None)
    if fields is None:
        return pad + repr(node)
    head = f"{pad}{type(node).__name__}"
    if isinstance(node, S.Stmt) and hasattr(node, "loc") and node.loc is not None:
        head += f"  @{node.loc.line}:{node.loc.col}"
    lines = [head]
    for name in fields:
        if name in ("loc", "text") or name.endswith("_loc") or name.endswith("_locs"):
            continue
        v = getattr(node, name)
        nested = isinstance(v, tuple) and v and hasattr(v[0], "__dataclass_fields__")
        if nested or isinstance(v, S.Stmt):
            lines.append(f"{pad}  {name}:")
            lines.append(_pretty(v, indent + 2))
        else:
            lines.append(f"{pad}  {name}: {v!r}")
    return "\n".join(lines)


def make_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="netc", description="Compile and train neural networks written in .net "
                "files.")
    p.add_argument("--version", action="version", version=f"netc {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    c = sub.add_parser("check", help="report every mistake in .net files (exit 1 if any)")
    c.add_argument("files", nargs="+", metavar="FILE")
    c.add_argument("--format", choices=("text", "json"), default="text")
    c.add_argument("--set", action="append", metavar="K=V", help="override a model parameter")
    c.add_argument("-q", "--quiet", action="store_true", help="print nothing for valid files")
    c.set_defaults(func=cmd_check)
    gr = sub.add_parser("graph", help="show the program or its IR graph after a stage")
    gr.add_argument("file", metavar="FILE")
    gr.add_argument("--stage", default="forward",
                    choices=("parsed", "forward", "backward", "optimized"))
    gr.add_argument("--format", choices=("text", "dot", "svg"), default="text")
    gr.add_argument("--mode", choices=("train", "eval"), default="train")
    gr.add_argument("--model", help="which model, when the file has several")
    gr.add_argument("--set", action="append", metavar="K=V", help="override a model parameter")
    gr.add_argument("-o", "--out", help="write the output (svg) to this file")
    gr.set_defaults(func=cmd_graph)
    pl = sub.add_parser("plan", help="show the fused kernels and the memory plan of the "
                        "training step")
    pl.add_argument("file", metavar="FILE")
    pl.add_argument("--model", help="which model, when the file has several")
    pl.add_argument("--set", action="append", metavar="K=V", help="override a model parameter")
    pl.add_argument("--eval", action="store_true", help="plan the inference graph instead")
    pl.add_argument("--png", metavar="FILE", help="also draw the lifetime chart (matplotlib)")
    pl.set_defaults(func=cmd_plan)
    em = sub.add_parser("emit", help="show the generated code: LLVM IR, assembly or an object")
    em.add_argument("file", metavar="FILE")
    kind = em.add_mutually_exclusive_group()
    kind.add_argument("--llvm", action="store_true", help="LLVM IR as generated (the default)")
    kind.add_argument("--optimized", action="store_true", help="LLVM IR after the O3 pipeline")
    kind.add_argument("--asm", action="store_true", help="assembly for this machine's CPU")
    kind.add_argument("--obj", action="store_true", help="an object file (needs -o)")
    em.add_argument("--predict", action="store_true",
                    help="the inference module instead of the training step")
    em.add_argument("--model", help="which model, when the file has several")
    em.add_argument("--set", action="append", metavar="K=V", help="override a model parameter")
    em.add_argument("-o", "--out", metavar="FILE")
    em.set_defaults(func=cmd_emit)
    ex = sub.add_parser("export", help="the training step and inference as a standalone C "
                        "library (.h, .c, .o, .so)")
    ex.add_argument("file", metavar="FILE", help="a .net file, or a model saved by netc train")
    ex.add_argument("-o", "--out", metavar="DIR", help="the folder to write (default "
                    "export/NAME)")
    ex.add_argument("--name", help="the library's C name prefix (default: the model's name)")
    ex.add_argument("--model", help="which model, when the file has several")
    ex.add_argument("--set", action="append", metavar="K=V",
                    help="override a model parameter or a train setting")
    ex.add_argument("--weights", metavar="W.npz", help="start from these saved weights")
    ex.add_argument("--seed", type=int, metavar="S", help="initialisation and dropout seed")
    ex.add_argument("--steps-per-epoch", type=int, metavar="N",
                    help="the steps the learning-rate schedule counts as one epoch (default: "
                    "those of the saved model's training, else 1)")
    ex.add_argument("--no-link", action="store_true",
                    help="write the sources and the object only; do not run the C compiler")
    ex.set_defaults(func=cmd_export, threads=None, backend="jit")
    from .cli_train import add_commands
    add_commands(sub, _Parser)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        if args.command in ("train", "eval", "predict", "tune", "export"):
            for flag in ("epochs", "batch", "threads"):
                v = getattr(args, flag, None)
                if v is not None and v < 1:
                    raise UsageError(f"--{flag} must be at least 1, got {v}")
            if args.seed is not None and args.seed < 0:
                raise UsageError(f"--seed must be >= 0, got {args.seed}")
            return args.func(args, _set_pairs(args.set))
        return args.func(args)
    except UsageError as e:
        print(f"netc: error: {e.message}", file=sys.stderr)
        return EXIT_USAGE
    except NetError as e:
        print(e.format(), file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        print("netc: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
    except MemoryError as e:  # the user's model or data, not a bug: say so, with what to change
        detail = f" ({e})" if str(e) else ""
        print(f"netc: error: out of memory{detail}\n  the model's tensors (parameters, "
              "optimizer state, activations) or its data do not fit in this machine's memory: "
              "use a smaller batch or narrower layers (`netc plan FILE` shows the memory plan)",
              file=sys.stderr)
        return EXIT_USER
    except (InternalCompilerError, Exception) as e:  # a bug in netc: report it, no traceback
        if os.environ.get("NETC_DEBUG"):
            traceback.print_exc()
        msg = str(e) if isinstance(e, InternalCompilerError) else \
            f"internal compiler error: {type(e).__name__}: {e}\nThis is a bug in netc; please " \
            "report it with the .net file (NETC_DEBUG=1 shows the traceback)."
        print(f"netc: {msg}", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
