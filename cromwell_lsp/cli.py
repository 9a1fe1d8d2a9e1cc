"""The `cromwell` command line.

Subcommands print human-readable text by default; with --json they print exactly one JSON
document on stdout (progress goes to stderr), with snake_case keys carrying their units.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

from . import __version__
from .features.cli_features import NothingFound


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def info() -> dict:
    """What this installation runs on: version, kernels, ISA, threads."""
    import numpy as np

    from . import kernels

    return {
        "version": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu": _cpu_model(),
        "native_kernels": kernels.native_available(),
        "isa": kernels.isa(),
        "isas_supported": kernels.supported_isas(),
        "threads": kernels.threads(),
        "cores": kernels.num_cores(),
    }


def _cmd_info(args) -> int:
    data = info()
    if args.json:
        print(json.dumps(data))
        return 0
    width = max(len(k) for k in data)
    for key, value in data.items():
        if isinstance(value, list):
            value = ", ".join(value)
        print(f"{key.replace('_', ' '):<{width}}  {value}")
    return 0


def _cmd_bench(args) -> int:
    from . import kernels

    if args.threads is not None:
        kernels.set_threads(args.threads)
    if args.what == "kernels":
        from .eval.bench_kernels import format_table, run

        result = run(only=args.only, quick=args.quick)
        print(json.dumps(result) if args.json else format_table(result))
        return 0
    if args.what == "decode":
        from .eval.bench_decode import run

        _print_result(run(args.config, args.quant, args.image, args.weights,
                          log=lambda m: print(m, file=sys.stderr)), args.json)
        return 0
    if args.what == "keystrokes":
        from .eval.bench_keystrokes import run

        _print_result(run(args.model, args.file, args.chars, args.threads, args.max_tokens,
                          log=lambda m: print(m, file=sys.stderr)), args.json)
        return 0
    raise SystemExit(f"unknown benchmark {args.what!r}")


def _print_result(result: dict, as_json: bool) -> None:
    """One JSON document, or a `key value` line per entry."""
    if as_json:
        print(json.dumps(result))
        return
    width = max(map(len, result), default=0) + 2
    for key, value in result.items():
        print(f"{key:{width}s} {value}")


def _cmd_quantize(args) -> int:
    from .model.weights import quantize_file

    quantize_file(args.src, args.dst)
    print(f"wrote {args.dst}", file=sys.stderr)
    return 0


def _cmd_train(args) -> int:
    from pathlib import Path

    def log(msg):
        print(msg, file=sys.stderr)

    for flag in ("max_files", "eval_cases"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be 1 or more, "
                             f"not {getattr(args, flag)}")
    if args.what == "corpus":
        manifest = _build_corpus(args, Path(args.out), log)
        summary = {k: v for k, v in manifest.items() if k != "sources"}
        print(json.dumps(summary if args.json else manifest, indent=None if args.json else 2))
        return 0
    if args.what == "tokenizer":
        from .training import tokenizer

        report = tokenizer.train(Path(args.corpus), Path(args.out), args.vocab, log=log)
        print(json.dumps(report))
        return 0
    if args.what == "run":
        from .training.train import TrainConfig, main as train_main

        c = TrainConfig(model=args.config, corpus=args.corpus, tokenizer=args.tokenizer,
                        out=args.out, compile=bool(args.compile), **{k: v for k, v in vars(args).items()
                                         if k in _TRAIN_KNOBS and v is not None})
        print(json.dumps(train_main(c)))
        return 0
    if args.what == "export":
        from .training.export import export

        quants = ("int8",) if args.int8_only else ("f32", "int8")
        report = export(Path(args.out) / "ckpt.pt" if not args.ckpt else args.ckpt,
                        args.to, args.tokenizer, log=log, quants=quants,
                        gptq_corpus=args.corpus if args.gptq else None, gptq_rows=args.gptq)
        print(json.dumps(report))
        return 0
    if args.what == "edit":
        from .training.edit import edit

        if not args.ckpt:
            raise ValueError("train edit needs --ckpt (the checkpoint to edit); it writes "
                             "OUT/ckpt.pt")
        if Path(args.ckpt).resolve() == (Path(args.out) / "ckpt.pt").resolve():
            raise ValueError("train edit writes a new checkpoint: --out must not hold --ckpt")
        given = {"layer": args.edit_layer, "contexts": args.edit_contexts,
                 "strength": args.edit_strength, "task": args.edit_task,
                 "weights": args.weights and Path(args.weights),
                 "starts": args.starts}  # the rest: edit()'s defaults
        report = edit(Path(args.ckpt), Path(args.out), Path(args.corpus), Path(args.tokenizer),
                      seed=args.seed or 0, log=log,
                      **{k: v for k, v in given.items() if v is not None})
        print(json.dumps(report))
        return 0
    if args.what == "eval":
        from .training import evaluate

        weights = Path(args.weights) if args.weights else Path(args.out) / "export" / "model-int8.safetensors"
        report = evaluate.run(Path(args.out), weights, Path(args.corpus), Path(args.tokenizer),
                              workers=args.workers, log=log, cases=args.eval_cases)
        print(json.dumps(report, indent=None if args.json else 2))
        return 0
    if args.what == "starts":
        from .training import evaluate

        if not args.weights or not args.out.endswith(".json"):
            raise ValueError("train starts needs --weights (the model that completes) and "
                             "--out FILE.json (its completions)")
        report = evaluate.starts_report(Path(args.weights), Path(args.corpus), Path(args.out),
                                        args.starts or 10_000,
                                        Path(args.against) if args.against else None,
                                        guard=args.guard, editor=args.editor,
                                        alternatives=args.alternatives, workers=args.workers,
                                        mid_line=args.midline)
        print(json.dumps(report, indent=None if args.json else 2))
        return 0
    if args.what == "humaneval":
        from .model import DEFAULT_WEIGHTS
        from .training import humaneval

        weights = Path(args.weights) if args.weights else DEFAULT_WEIGHTS
        if not weights.is_file():
            raise ValueError(f"train humaneval: no weights file {weights}")
        if args.starts is not None and args.starts < 1:
            raise ValueError(f"--starts must be 1 or more, not {args.starts}")
        if args.out is not None and not args.out.endswith(".json"):
            raise ValueError("train humaneval --out takes a FILE.json (each problem's "
                             "completion and result)")
        report = humaneval.report(weights, Path(args.out) if args.out else None,
                                  editor=args.editor, workers=args.workers,
                                  limit=args.starts, log=log)
        print(json.dumps(report, indent=None if args.json else 2))
        return 0
    if args.what == "import":
        from .training.export import import_weights

        if not args.weights:
            raise ValueError("train import needs --weights (an exported .safetensors model)")
        report = import_weights(args.weights, Path(args.out) / "ckpt.pt", args.tokenizer,
                                step=args.steps, log=log)
        print(json.dumps(report))
        return 0
    if args.what == "own":
        from .training import owncompletions
        from .training.evaluate import parse_kinds

        if not args.weights or not args.out.endswith(".jsonl"):
            raise ValueError("train own needs --weights (the model that completes) and "
                             "--out FILE.jsonl")
        print(json.dumps(owncompletions.build(
            Path(args.weights), Path(args.corpus), Path(args.out), args.starts or 2000, args.samples,
            args.temperature, seed=args.seed or 0, workers=args.workers or 2, log=log,
            kinds=parse_kinds(args.kinds))))
        return 0
    if args.what == "align":
        from .training.align import AlignConfig, run as align_run

        knobs = {k: v for k, v in (("steps", args.steps), ("lr", args.lr), ("seed", args.seed),
                                   ("batch", args.image_batch), ("side", args.image_side),
                                   ("max_minutes", args.max_minutes),
                                   ("read_steps", args.read_steps))
                 if v is not None}
        print(json.dumps(align_run(AlignConfig(out=args.out, corpus=args.corpus,
                                               tokenizer=args.tokenizer, **knobs), log=log)))
        return 0
    if args.what == "metric":
        from .training.align import set_metric

        set_metric(Path(args.ckpt) if args.ckpt else Path(args.out) / "ckpt-aligned.pt",
                   args.corpus, args.tokenizer, log=log)
        return 0
    if args.what == "all":
        return _train_all(args, log)
    raise SystemExit(f"unknown training step {args.what!r}")


def _build_corpus(args, out, log) -> dict:
    """`train corpus` and `train all`'s corpus step: the same flags, the same build."""
    from pathlib import Path

    from .training import corpus

    return corpus.build(out, cache=Path(args.cache) if args.cache else None,
                        packages=[] if args.stdlib_only else corpus.PACKAGES, log=log,
                        workers=args.workers, max_files=args.max_files)


def _train_all(args, log) -> int:
    """corpus -> tokenizer -> run -> export -> eval in one command, each step skipped when
    its output is already there (the run resumes from its checkpoint); --ship also writes
    the int8 model and its tokenizer into the package (cromwell_lsp/weights)."""
    import time
    from pathlib import Path

    from .training import evaluate, tokenizer
    from .training.export import export
    from .training.train import TrainConfig, main as train_main

    out, corpus_dir, tok_path = Path(args.out), Path(args.corpus), Path(args.tokenizer)
    times: dict[str, float] = {}

    def timed(name, fn):
        t0 = time.time()
        result = fn()
        times[name] = round(time.time() - t0, 1)
        log(f"[all] {name}: {times[name]} s")
        return result

    if not (corpus_dir / "manifest.json").exists():
        timed("corpus", lambda: _build_corpus(args, corpus_dir, log))
    if not tok_path.exists():
        timed("tokenizer", lambda: tokenizer.train(corpus_dir, tok_path, args.vocab, log=log))
    knobs = {k: v for k, v in vars(args).items() if k in _TRAIN_KNOBS and v is not None}
    if args.config in ALL_STEPS:  # the whole pipeline within an hour on a 2-core CPU
        knobs.setdefault("steps", ALL_STEPS[args.config])
    budget = knobs.pop("budget_minutes", ALL_BUDGET.get(args.config, 0.0))
    if budget:
        knobs["budget_minutes"] = training_budget(budget, sum(times.values()))
        log(f"[all] training gets {knobs['budget_minutes']:g} of the {budget:g} minutes")
    c = TrainConfig(model=args.config, corpus=str(corpus_dir), tokenizer=str(tok_path), out=str(out),
                    compile=bool(args.compile), **knobs)
    trained = timed("train", lambda: train_main(c))
    report = timed("export", lambda: export(out / "ckpt.pt", out / "export", tok_path, log=log))
    if args.ship:
        timed("ship", lambda: export(out / "ckpt.pt", Path(args.to), tok_path, log=log,
                                     quants=("int8",)))
    ev = timed("eval", lambda: evaluate.run(out, out / "export" / "model-int8.safetensors",
                                           corpus_dir, tok_path, workers=args.workers, log=log,
                                           cases=args.eval_cases))
    summary = {"times_s": times, "total_min": round(sum(times.values()) / 60, 1),
               "steps": trained["step"], "tokens": trained["tokens"], "export": report,
               "completions_parse": ev["completions_parse"],
               "completions_parse_no_loop": ev["completions_parse_no_loop"],
               "completions_editor_parse": ev["completions_editor_parse"],
               "completions_editor_useful": ev["completions_editor_useful"], "retrieval": ev["retrieval"],
               "trained": ev["trained"], "unigram": ev["unigram"]}
    print(json.dumps(summary, indent=None if args.json else 2))
    return 0


def training_budget(budget_min: float, spent_s: float) -> float:
    """`train all --budget-minutes`: the whole way to the exported model; training gets
    what the corpus and tokenizer (spent_s, 0 when they were there already) left of it,
    less the export's reserve.  Too little left is an error, not a two-step model."""
    left = budget_min - spent_s / 60 - EXPORT_RESERVE_MIN
    if left < 2:
        raise SystemExit(f"--budget-minutes {budget_min:g} leaves {left:.1f} min for training "
                         f"after the corpus and tokenizer; give more, or 0 for no budget")
    return round(left, 2)


ALL_STEPS = {"tiny": 1300}  # `train all` default: corpus + tokenizer + training + export < 1 h
ALL_BUDGET = {"tiny": 55.0}  # and on a slower machine the step count shrinks to keep it so
EXPORT_RESERVE_MIN = 1.0     # kept back from training for the export (fp32 + int8, checked)
_TRAIN_KNOBS = {"steps": int, "batch_size": int, "seq_len": int, "lr": float, "warmup": int,
                "image_every": int, "eval_every": int, "ckpt_every": int, "seed": int,
                "max_minutes": float, "jepa_ramp": int, "image_batch": int, "image_side": int,
                "min_lr": float, "blocks_per_file": int, "source_weights": str, "block_cap": int,
                "ul_every": int, "ul_weight": float, "ul_batch": int, "ul_tokens": int,
                "ul_margin": float, "ul_rules": str, "ul_kinds": str, "ul_kinds_share": float, "int8_aware": int, "anchor_kl": float, "budget_minutes": float, "own_data": str, "own_per_file": int, "own_min_ratio": float,
                "prefer_data": str, "prefer_every": int, "prefer_batch": int,
                "prefer_weight": float, "prefer_beta": float, "prefer_nll": float,
                "prefer_only": int, "prefer_real": int, "prefer_handlers": int}


def _settings(args):
    from .settings import Settings

    raw = {"maxTokens": args.max_tokens} if getattr(args, "max_tokens", None) else {}
    settings, errors = Settings.parse(raw)
    if errors:
        raise ValueError("; ".join(errors))
    return settings


def _cmd_complete(args) -> int:
    from .features import cli_features as cf

    path, (line, col) = cf.parse_spec(args.position, 2)
    src = cf.read_source(path)
    cf.offset_of(src, line, col)  # a bad position fails before the model loads
    model = cf.load_model(args.model, args.threads)
    result = cf.complete(model, src, line, col, _settings(args))
    print(json.dumps(result) if args.json else result["completion"])
    return 0


def _cmd_edit(args) -> int:
    from .features import cli_features as cf

    src = cf.read_source(args.file)
    if args.apply:
        cf.check_writable_here(src.path)  # before the model runs, not after
    model = cf.load_model(args.model, args.threads)
    action, new = cf.edit(model, src, args.action, args.line, _settings(args))
    print(f"{action.title} (line {action.line + 1})", file=sys.stderr)
    sys.stdout.write(cf.unified_diff(src.text, new, args.file))
    if args.apply:
        cf.write_atomic(src, new)
        print(f"wrote {args.file}", file=sys.stderr)
    return 0


def _cmd_explain(args) -> int:
    from .features import cli_features as cf

    if cf.is_image(args.target):
        cf.check_image(args.target)
        model = cf.load_model(args.model, args.threads)
        print(cf.explain_image(model, args.target, _settings(args)))
        return 0
    path, (line,) = cf.parse_spec(args.target, 1)
    src = cf.read_source(path)
    cf.explain_column(src, line)
    model = cf.load_model(args.model, args.threads)
    print(cf.explain_line(model, src, line, _settings(args)))
    return 0


def _cmd_serve(args) -> int:
    from .server import serve

    serve(tcp=args.tcp)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cromwell", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"cromwell {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="the language server (stdio by default)")
    p.add_argument("--stdio", action="store_true", help="talk over stdin/stdout (the default)")
    p.add_argument("--tcp", default=None, metavar="HOST:PORT", help="listen on TCP instead")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("complete", help="the completion at FILE:LINE:COL (1-based, like "
                       "compiler messages; COL counts characters)")
    p.add_argument("position", metavar="FILE:LINE:COL", help="where to complete, e.g. app.py:12:5")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    _model_options(p)
    p.set_defaults(func=_cmd_complete)

    p = sub.add_parser("edit", help="a code action on a file, printed as a unified diff")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--action", required=True, choices=["body", "docstring", "fix", "screenshot"],
                   help="complete a function body, add a docstring, fix a syntax error, or "
                        "the code from a screenshot a comment refers to")
    p.add_argument("--line", type=int, default=None,
                   help="1-based: the action at or nearest to this line (default: the first)")
    p.add_argument("--apply", action="store_true",
                   help="also write the file (atomically; only inside the current directory)")
    _model_options(p)
    p.set_defaults(func=_cmd_edit)

    p = sub.add_parser("explain", help="explain the definition on FILE:LINE, or a screenshot")
    p.add_argument("target", metavar="FILE:LINE|IMAGE",
                   help="a 1-based line of a Python file, or a .png/.jpg/.jpeg/.webp image")
    _model_options(p)
    p.set_defaults(func=_cmd_explain)

    p = sub.add_parser("info", help="version, kernel ISA and threads")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("bench", help="benchmarks that print numbers")
    p.add_argument("what", choices=["kernels", "decode", "keystrokes"], help="what to measure")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.add_argument("--threads", type=int, default=None, help="kernel threads (default: cores)")
    p.add_argument("--only", default=None, help="only kernels whose name contains this text")
    p.add_argument("--quick", action="store_true", help="smaller shapes and fewer repeats")
    p.add_argument("--config", default="tiny",
                   choices=["base", "small", "tiny", "llama-25m", "llama-100m"],
                   help="decode: model config (random weights unless --weights)")
    p.add_argument("--quant", default="f32", choices=["f32", "int8"], help="decode: weights")
    p.add_argument("--image", action="store_true", help="decode: also with a 256x256 image")
    p.add_argument("--weights", default=None, help="decode: a trained weights file")
    p.add_argument("--model", default=None, metavar="PATH",
                   help="keystrokes: the server's model (default: the packaged one)")
    p.add_argument("--file", default=None,
                   help="keystrokes: the Python file to type (default: one of Cromwell's own)")
    p.add_argument("--chars", type=int, default=200, help="keystrokes: characters to type")
    p.add_argument("--max-tokens", type=int, default=None,
                   help="keystrokes: tokens per completion (default: the server's)")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("quantize", help="an fp32 weights file -> its int8 variant")
    p.add_argument("src", help="fp32 .safetensors")
    p.add_argument("dst", help="int8 .safetensors to write")
    p.set_defaults(func=_cmd_quantize)

    p = sub.add_parser("train", help="build the corpus, the tokenizer, train and export")
    p.add_argument("what", choices=["corpus", "tokenizer", "run", "align", "metric", "export",
                                    "eval", "all", "import", "own", "starts", "humaneval",
                                    "edit"],
                   help="which step (all: every step in order, skipping finished ones; "
                        "import: an exported model -> OUT/ckpt.pt to train on from; "
                        "metric: set an aligned checkpoint's retrieval metric; "
                        "own: the model's working completions of training starts, to train on; "
                        "starts: greedy completions of all held-out block starts, counted; "
                        "edit: a checkpoint whose model writes a `try` body's handler, or "
                        "closes a header's brackets, by a closed-form edit of one layer "
                        "(training/edit.py); "
                        "humaneval: greedy pass@1 on HumanEval's 164 problems, run in "
                        "throwaway processes)")
    p.add_argument("--out", default=None,
                   help="corpus: a folder; tokenizer: a .json; run/export: the run folder")
    p.add_argument("--corpus", default="runs/corpus", help="corpus folder")
    p.add_argument("--tokenizer", default=None,
                   help="tokenizer.json (default: runs/tokenizer.json; where that is missing, "
                        "import takes the one beside --weights and every other step the "
                        "packaged one; a tokenizer other than the checkpoint's is refused)")
    p.add_argument("--config", default="tiny", choices=["tiny", "small", "base"],
                   help="run: model config")
    p.add_argument("--ckpt", default=None, help="export: checkpoint (default OUT/ckpt.pt); "
                   "edit: the checkpoint to edit; "
                   "metric: the one to set (default OUT/ckpt-aligned.pt)")
    p.add_argument("--to", default="cromwell_lsp/weights", help="export: destination folder")
    p.add_argument("--int8-only", action="store_true", help="export: only the int8 model")
    p.add_argument("--gptq", type=int, default=0, metavar="ROWS",
                   help="export: GPTQ-round the int8 weights on ROWS rows of --corpus's "
                        "training mixture instead of rounding to nearest (0: nearest)")
    p.add_argument("--ship", action="store_true",
                   help="all: also put the int8 model in the package (--to)")
    p.add_argument("--weights", default=None, help="eval: the engine's weights (default "
                   "OUT/export/model-int8.safetensors); import: the model to import; "
                   "edit --edit-task brackets: the int8 export of --ckpt, whose completions "
                   "of training starts are read; "
                   "humaneval: the model to judge (default: the packaged one)")
    p.add_argument("--compile", action="store_true", default=None, help="run: torch.compile")
    for knob, kind in _TRAIN_KNOBS.items():
        if knob == "budget_minutes":
            p.add_argument("--budget-minutes", type=float, default=None,
                           help="run: end the schedule within this many minutes of training, "
                                "fewer steps if the machine is slow; all: the same for corpus to "
                                "exported model (default for tiny: 55; 0: steps only)")
            continue
        p.add_argument(f"--{knob.replace('_', '-')}", type=kind, default=None, help=f"run: {knob}")
    p.add_argument("--edit-layer", default=None,
                   help="edit: the linear layer to edit (default: the AR head's last MLP "
                        "output, ar.layers.1.ffn.w2)")
    p.add_argument("--edit-task", default=None, choices=["handler", "brackets"],
                   help="edit: what to change: the end of a `try` body leads to its handler "
                        "(default), or a header's open bracket is closed before its colon, "
                        "learnt from the model's own completions (needs --weights)")
    p.add_argument("--edit-contexts", type=int, default=None,
                   help="edit: contexts to edit at most (`try` bodies from the training "
                        "split, or the model's bracket slips), and as many block ends kept "
                        "as they are (default 200)")
    p.add_argument("--edit-strength", type=float, default=None,
                   help="edit: how strongly ordinary inputs hold the layer's outputs; "
                        "larger: a smaller edit (default 1e4 for handler, 1e5 for brackets)")
    p.add_argument("--read-steps", type=int, default=None,
                   help="align: first steps that train reading alone, on strips of text")
    p.add_argument("--starts", type=int, default=None,
                   help="own: bare starts to complete (default 2000); starts: held-out "
                        "starts to complete at most (default 10000, all of them here); "
                        "humaneval: the first N problems only; edit --edit-task brackets: "
                        "training starts to complete (default 15000)")
    p.add_argument("--against", default=None,
                   help="starts: another model's completions file, for paired counts")
    p.add_argument("--guard", action="store_true",
                   help="starts: decode under the server's syntax guard (features/syntaxguard); "
                        "without it, the model's raw greedy completions")
    p.add_argument("--editor", action="store_true",
                   help="starts, humaneval: judge what the server inserts in the editor (guard "
                        "on, stopped at a loop, finished as the server finishes completions)")
    p.add_argument("--midline", action="store_true",
                   help="starts: each start cut inside its header's line (after its first "
                        "`(`, else after its colon), as if typed half-way; with --editor, "
                        "what the server inserts there (the line, and the body it opens)")
    p.add_argument("--alternatives", type=int, default=None,
                   help="starts --editor: completions generated again from another first "
                        "token when one would break the code (default: the server's setting)")
    p.add_argument("--samples", type=int, default=6,
                   help="own: sampled completions of each start, beside the greedy one")
    p.add_argument("--temperature", type=float, default=0.8, help="own: sampling temperature")
    p.add_argument("--kinds", default=None,
                   help="own: starts of these statements only, comma-separated (class,try; "
                        "default: every kind of block)")
    p.add_argument("--workers", type=int, default=None,
                   help="own: processes (default 2); corpus, all: processes for the per-file "
                        "work; starts, eval, all, humaneval: processes completing the starts "
                        "(default: one per core)")
    p.add_argument("--cache", default=None, help="folder for downloaded wheels")
    p.add_argument("--stdlib-only", action="store_true", help="corpus from the standard library only")
    p.add_argument("--max-files", type=int, default=None,
                   help="corpus, all: each source's first N files only (a quick trial run)")
    p.add_argument("--eval-cases", type=int, default=None,
                   help="eval, all: at most N cases in each of the report's samples "
                        "(a quick look at a trial run, not a measure)")
    p.add_argument("--vocab", type=int, default=16384, help="tokenizer vocabulary size")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=_cmd_train)
    return parser


RUN_TOKENIZER = Path("runs/tokenizer.json")


def _default_tokenizer(what: str, weights: str | None) -> str:
    """The tokenizer a training step uses when none is named (own, starts and humaneval
    read the one beside their --weights and take none): the run's own
    (runs/tokenizer.json, which `train tokenizer` and `train all` write); where there is
    none, the one beside the imported weights or the packaged model's, so the commands in
    docs/MODEL.md work on a checkout that has the shipped model and no tokenizer build.
    Every step checks the tokenizer's hash against its checkpoint's, so a wrong fallback
    is a clear error, not a silent mismatch."""
    if what in ("tokenizer", "all", "corpus", "own", "starts", "humaneval") or RUN_TOKENIZER.exists():
        return str(RUN_TOKENIZER)
    if what == "import" and weights and (Path(weights).parent / "tokenizer.json").exists():
        return str(Path(weights).parent / "tokenizer.json")
    from .model import DEFAULT_WEIGHTS

    packaged = DEFAULT_WEIGHTS.parent / "tokenizer.json"
    print(f"cromwell: no {RUN_TOKENIZER}; using {packaged}", file=sys.stderr)
    return str(packaged)


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, metavar="PATH",
                   help="a .safetensors model with its tokenizer.json beside it "
                        "(default: the packaged model)")
    p.add_argument("--max-tokens", type=int, default=None, help="tokens to generate at most")
    p.add_argument("--threads", type=int, default=None, help="kernel threads (default: cores)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.func is _cmd_train and args.out is None:
        args.out = {"corpus": "runs/corpus", "tokenizer": "runs/tokenizer.json",
                    "humaneval": None}.get(
            args.what, f"runs/{getattr(args, 'config', 'tiny')}")
    if args.func is _cmd_train and args.tokenizer is None:
        args.tokenizer = _default_tokenizer(args.what, args.weights)
    try:
        return args.func(args)
    except ValueError as exc:
        print(f"cromwell: error: {exc}", file=sys.stderr)
        return 2
    except NothingFound as exc:
        print(f"cromwell: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
