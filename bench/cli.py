"""The `steerbench` command.

    steerbench run [EXPERIMENT.toml] [-o DIR]     sweep methods x tasks, write results + report
                   [-q] [--force] [--processes N] (or: accelerate launch -m bench run ...)
    steerbench list                                registered methods and tasks, with parameters
    steerbench report RUN_DIR [RUN_DIR ...]        (re)build the report from result files
    steerbench check RUN_DIR --baseline FILE       regression check for CI
    steerbench bench [--methods a,b]               steering cost vs unsteered generation
    steerbench testbed build | check               the built-in testbed model
    steerbench testbed lm-eval-tasks               its capability tasks for lm-eval (prints
                                                   the --include_path)
    steerbench lm-eval [LM-EVAL ARGS ...]          lm-eval's own command line, with the
                                                   `steerbench` model registered
    steerbench judge MODEL [MODEL ...] [-o DIR]    self-judgement accuracy per suite and model

Errors a user can cause print one line and exit 2 (checked before a model loads where they
can be); warnings print one line each; an interrupt (Ctrl-C, SIGTERM) keeps finished cells and
the manifest says how the run ended.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from bench.distributed import RankFailed, launched_rank
from bench.errors import UserError, one_line_warnings


def _run(args: argparse.Namespace) -> int:
    from bench.distributed import WORLD_SIZE, launch

    if args.processes > 1 and int(os.environ.get(WORLD_SIZE, "1")) == 1:
        return launch(args.processes, _run_argv(args))
    if args.processes < 1:
        raise UserError(f"--processes must be at least 1, got {args.processes}")
    return _run_here(args)


def _run_argv(args: argparse.Namespace) -> list[str]:
    """The `run` command line that each launched process runs (without `--processes`)."""
    argv = ["run", *([args.experiment] if args.experiment else [])]
    argv += [*(["-o", args.output] if args.output else []), *(["-q"] if args.quiet else [])]
    return argv + (["--force"] if args.force else [])


def _run_here(args: argparse.Namespace) -> int:
    """The run in this process: alone, or as one rank of a launched group (`bench.distributed`),
    where rank 0 alone claims and writes the run folder and shows progress."""
    from bench.config import ModelConfig, load_experiment
    from bench.distributed import from_environment
    from bench.plan import build_methods, build_tasks, replace_output_dir
    from bench.preflight import check_capability, check_device, check_model_folder, load_data
    from bench.progress import progress_bars
    from bench.rundir import RunDir

    experiment = replace_output_dir(load_experiment(args.experiment), args.output)
    # Everything the user named is checked before a model loads (minutes, on first use).
    build_methods(experiment.methods)
    tasks = build_tasks(experiment.tasks)
    evaluator = (
        ModelConfig(name=experiment.evaluator, device=experiment.model.device)
        if experiment.evaluator  # read like the subject: a model source, hub id or directory
        else None
    )
    check_device(experiment.model.device)
    check_capability(experiment.capability)
    check_model_folder(experiment.model)
    if evaluator is not None:
        check_model_folder(evaluator, what="evaluator")
    group = from_environment(experiment.model.device)
    if group.distributed and experiment.model.device_map is not None:
        # Each rank would spread its own copy over every device of the machine.
        raise UserError(
            "[model] device_map with several processes: run a dispatched model in one process"
        )
    progress = not args.quiet and group.main
    with progress_bars(progress):
        data = load_data(tasks)
    run_dir = RunDir(experiment.output_dir)
    if group.main:
        run_dir.claim(experiment.to_dict(), force=args.force)
    try:
        with progress_bars(progress):
            return _sweep(args, experiment, evaluator, data, run_dir, progress, group)
    finally:
        run_dir.release()
        group.close()


def _sweep(args, experiment, evaluator_config, data, run_dir, progress: bool, group) -> int:
    """Load the models and run the sweep into the claimed `run_dir`. Its manifest ends in the
    run's true status on every way out: complete, interrupted (Ctrl-C, SIGTERM) or failed."""
    from bench.records import Manifest, MethodEntry, ModelInfo, TaskEntry
    from bench.rundir import git_hash, package_versions
    from bench.runner import Runner
    from bench.sources import load_subject

    started = time.time()
    model = replace(experiment.model, device=group.device(experiment.model.device))
    subject = load_subject(model, progress=progress)
    evaluator = None
    if evaluator_config is not None:
        evaluator_config = replace(evaluator_config, device=model.device)
        evaluator = load_subject(evaluator_config, progress=progress)
    runner = Runner(
        experiment,
        subject,
        run_dir,
        evaluator=evaluator,
        progress=progress,
        data=data,
        group=group,
    )
    if not group.main:  # a rank that computes its shares of the cells; rank 0 records them
        runner.run()
        return 0
    manifest = Manifest(
        status="running",
        experiment=experiment.to_dict(),
        experiment_file=str(args.experiment) if args.experiment else None,
        seeds=tuple(experiment.seeds),
        packages=package_versions(),
        git=git_hash(),
        model=ModelInfo(subject.name, subject.fingerprint(), subject.model_type, subject.n_layers),
        evaluator=experiment.evaluator or "unsteered subject",
        methods=tuple(MethodEntry(m.label, m.method.name, m.strengths) for m in runner.methods),
        tasks=tuple(TaskEntry(t.name, dict(t.scorers())) for t in runner.tasks),
        started=started,
    )
    run_dir.write_manifest(manifest)

    def end(status: str) -> None:
        wall = time.time() - started
        run_dir.write_manifest(replace(manifest, status=status, wall_seconds=wall))

    try:
        runner.run()
    except KeyboardInterrupt as stop:
        end("interrupted")
        print(
            f"interrupted; finished cells are kept in {run_dir.root} (run again to resume)",
            file=sys.stderr,
        )
        return _exit_code(stop)
    except BaseException:
        end("failed")
        raise
    tasks = tuple(runner.data.get(entry.name, entry) for entry in manifest.tasks)
    manifest = replace(manifest, tasks=tasks)
    end("complete")
    print(f"results: {run_dir.root}")
    if runner.capability is None and experiment.capability.tasks:
        print(
            f"capability: not measured ({subject.name} names no lm-eval tasks of its own; list "
            "some in [capability] tasks to measure what steering costs it)"
        )
    if experiment.report:
        from reports import build_report

        print(f"report: {build_report([run_dir.root])}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from bench.params import describe
    from bench.registry import METHODS, MODEL_SOURCES, TASKS

    for title, registry in (("methods", METHODS), ("tasks", TASKS)):
        print(f"{title}:")
        for name in registry.names():
            item = registry.get(name)
            print(f"  {name:<20} {item.summary}")
            for field, kind, default in describe(item.Params):
                print(f"      {field:<22} {kind:<24} default: {default!r}")
            strengths = getattr(item, "default_strengths", None)
            if strengths:
                print(f"      {'(strengths)':<22} {'':<24} default: {list(strengths)}")
    print("model sources (any other [model] name is a hub id or a local directory):")
    for name in MODEL_SOURCES.names():
        print(f"  {name:<20} {MODEL_SOURCES.get(name).summary}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from bench.config import SelectionConfig
    from reports import build_report

    output = Path(args.output) if args.output else None
    budget = args.fluency_budget
    if budget is not None:
        try:
            SelectionConfig(fluency_budget=budget)
        except ValueError as error:
            raise UserError(f"--fluency-budget: {error}") from None
    path = build_report([Path(p) for p in args.run_dirs], output=output, fluency_budget=budget)
    print(f"report: {path}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from reports import run_check

    return run_check(args)


def _bench(args: argparse.Namespace) -> int:
    from bench.perf import run

    return run(args)


def _judge(args: argparse.Namespace) -> int:
    import torch

    from bench.config import ModelConfig, load_experiment
    from bench.judgement import measure
    from bench.plan import build_tasks
    from bench.preflight import load_data
    from bench.sources import load_subject
    from reports import judgement

    # The suites (and their data) are the experiment's: the default one's, or a file's.
    experiment = load_experiment(args.experiment)
    tasks = build_tasks(experiment.tasks)
    pairs = [task.judgement_pairs(splits) for task, splits in zip(tasks, load_data(tasks))]
    records = []
    for name in args.models:
        subject = load_subject(ModelConfig(name=name, device=args.device), progress=False)
        with torch.no_grad():
            records += [measure(subject, t.name, p) for t, p in zip(tasks, pairs)]
        del subject
    print(judgement.text_table(judgement.table(records)))
    md = judgement.write(Path(args.output), records)
    print(f"report: {md}")
    return 0


def _testbed(args: argparse.Namespace) -> int:
    from tasks.testbed.commands import build_command, check_command, lm_eval_tasks_command

    cache = Path(args.cache_dir) if args.cache_dir else None
    if args.action == "lm-eval-tasks":
        return lm_eval_tasks_command(cache_dir=cache, force=args.force)
    if args.action == "build":
        return build_command(seed=args.seed, cache_dir=cache, force=args.force)
    return check_command(seed=args.seed, cache_dir=cache, n=args.n)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="steerbench", description="Benchmark LLM steering methods.")
    sub = top.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="sweep methods x tasks x strengths and write results")
    run.add_argument(
        "experiment",
        nargs="?",
        help="experiment TOML (default: every method and task on the built-in testbed)",
    )
    run.add_argument("-o", "--output", help="run directory (overrides output_dir)")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    run.add_argument(
        "--force",
        action="store_true",
        help="write into a folder that holds another experiment or files steerbench did not "
        "write (finished cells that still apply are reused)",
    )
    run.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="data parallel: run in N processes on this machine, each cell's examples shared "
        "among them (the same as `accelerate launch --num_processes N -m bench run ...`)",
    )
    run.set_defaults(func=_run)

    lst = sub.add_parser("list", help="registered methods and tasks with their parameters")
    lst.set_defaults(func=_list)

    rep = sub.add_parser("report", help="build the report of one run, or compare several")
    rep.add_argument("run_dirs", nargs="+", help="run directories")
    rep.add_argument(
        "-o", "--output", help="where to write the report (default: the first run's report/)"
    )
    rep.add_argument(
        "--fluency-budget",
        type=float,
        help="re-choose operating points on select with perplexity <= BUDGET x unsteered "
        "(default: the run's own choice)",
    )
    rep.set_defaults(func=_report)

    chk = sub.add_parser("check", help="compare a run with a baseline; exit 1 on regression")
    chk.add_argument("run_dir", help="run directory to check")
    chk.add_argument("--baseline", help="baseline summary JSON (or a run directory)")
    chk.add_argument(
        "--tolerance",
        action="append",
        default=[],
        metavar="METRIC=VALUE",
        help="per-metric tolerance, e.g. perplexity=10%% or positive_rate=0.05",
    )
    chk.add_argument("--junit", help="write JUnit XML here")
    chk.add_argument("--json", dest="json_out", help="write the machine-readable verdict here")
    chk.add_argument(
        "--update-baseline",
        action="store_true",
        help="write the run's headline numbers as the new baseline",
    )
    chk.set_defaults(func=_check)

    perf = sub.add_parser("bench", help="steering cost: steered / unsteered generation time")
    from bench.perf import add_arguments

    add_arguments(perf)
    perf.set_defaults(func=_bench)

    jd = sub.add_parser(
        "judge", help="self-judgement: each model's accuracy at telling better from worse"
    )
    jd.add_argument("models", nargs="+", metavar="MODEL", help="testbed, a hub id or a folder")
    jd.add_argument("-e", "--experiment", help="take the suites from this experiment file")
    jd.add_argument("-o", "--output", default="runs/judgement", help="report folder")
    jd.add_argument("--device", default="cpu")
    jd.set_defaults(func=_judge)

    tb = sub.add_parser(
        "testbed",
        help="build or check the built-in testbed model; lm-eval-tasks writes its capability "
        "tasks for lm-eval and prints their --include_path (no model needed)",
    )
    tb.add_argument("action", choices=("build", "check", "lm-eval-tasks"))
    tb.add_argument("--seed", type=int, default=0)
    tb.add_argument(
        "--cache-dir",
        help="testbed cache directory (default: $STEERBENCH_CACHE or ~/.cache/steerbench)",
    )
    tb.add_argument("--force", action="store_true", help="rebuild even if cached")
    tb.add_argument("-n", type=int, default=200, help="held-out prompts per vital sign")
    tb.set_defaults(func=_testbed)

    # Only listed here for --help: `main` hands everything after `lm-eval` to lm-eval untouched.
    sub.add_parser(
        "lm-eval",
        help="lm-eval's command line with the `steerbench` model registered "
        "(lm_eval --model steerbench --model_args pretrained=...,method=caa,state=PATH,strength=4)",
        add_help=False,
    )
    return top


def lm_eval_main(argv: Sequence[str]) -> int:
    """lm-eval's own command line with the `steerbench` model registered: lm-eval 0.4.13 has
    no plugin entry points for models, so its console script cannot know ours."""
    from lm_eval.__main__ import cli_evaluate

    import bench.lm_eval_model  # noqa: F401  (registers the model)

    saved = sys.argv
    sys.argv = ["lm-eval", *argv]  # lm-eval's parser reads sys.argv itself
    try:
        cli_evaluate()
    except SystemExit as done:  # argparse's --help and errors, lm-eval's own exits
        code = done.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        sys.argv = saved
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM (a CI timeout, `kill`), raised where the program is, like Ctrl-C's interrupt:
    the run stops through the same path and its manifest says "interrupted"."""


def _exit_code(stop: KeyboardInterrupt) -> int:
    """128 + the signal's number, as a shell reports a process the signal ended."""
    return 128 + (signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT)


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    def stop(signum, frame) -> None:
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: signals cannot be handled here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    lm_eval = argv[:1] == ["lm-eval"]
    args = None if lm_eval else parser().parse_args(argv)
    try:
        with _terminate_as_interrupt(), one_line_warnings():
            return lm_eval_main(argv[1:]) if lm_eval else args.func(args)
    except UserError as error:
        if launched_rank() == 0:  # every rank meets the same bad input: one line is enough
            print(f"steerbench: error: {error}", file=sys.stderr)
        return 2
    except RankFailed as error:
        if launched_rank() == 0 or not error.everywhere:
            print(f"steerbench: error: {error}; finished cells are kept", file=sys.stderr)
        return 1
    except KeyboardInterrupt as stop:
        print("interrupted", file=sys.stderr)
        return _exit_code(stop)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
