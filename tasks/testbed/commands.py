"""Entry points for ``steerbench testbed build|check|lm-eval-tasks`` (the core CLI parses the arguments)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from .build import ensure_testbed, read_info, testbed_dir
from .check import all_pass, format_vital_signs, vital_signs
from .train import Recipe


def build_command(
    seed: int = 0, cache_dir: Path | None = None, force: bool = False, recipe: Recipe | None = None
) -> int:
    """Build (or, with ``force``, rebuild) the testbed; print its path and timings. Exit code."""
    target = testbed_dir(seed, cache_dir, recipe)
    info = read_info(target)
    if info is not None and not force:
        print(f"testbed already built: {target}")
        _print_info(info)
        return 0
    print(f"building testbed (seed {seed}) into {target} ...", flush=True)
    ensure_testbed(seed, cache_dir, progress=True, force=True, recipe=recipe)
    _print_info(read_info(target) or {})
    print(target)
    return 0


def check_command(
    seed: int = 0, cache_dir: Path | None = None, n: int = 96, recipe: Recipe | None = None
) -> int:
    """Print the vital-signs table of the (built or cached) testbed; 0 when all targets pass."""
    model_dir = ensure_testbed(seed, cache_dir, progress=True, recipe=recipe)
    start = time.perf_counter()
    signs = vital_signs(model_dir, n=n, seed=seed)
    print(f"testbed {model_dir} (n={n}, {time.perf_counter() - start:.0f} s)")
    print(format_vital_signs(signs))
    ok = all_pass(signs)
    print("all targets met" if ok else "some targets FAILED", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def lm_eval_tasks_command(cache_dir: Path | None = None, force: bool = False) -> int:
    """Write (or, with ``force``, rewrite) the testbed's lm-eval tasks; print the directory to
    give lm-eval as ``--include_path``."""
    from .capability import ensure_lm_eval_tasks, lm_eval_tasks_dir

    if force:
        (lm_eval_tasks_dir(cache_dir) / "testbed_text.yaml").unlink(missing_ok=True)
    print(ensure_lm_eval_tasks(cache_dir))
    return 0


def _print_info(info: dict) -> None:
    timings = info.get("timings", {})
    if timings:
        print("timings: " + ", ".join(f"{k[:-2]} {v:.1f} s" for k, v in timings.items()))
    if "weights_sha256" in info:
        print(f"weights sha256: {info['weights_sha256']}")
    environment, recipe = info.get("environment", {}), info.get("recipe", {})
    if environment:
        print(
            f"built with torch {environment.get('torch')} on {environment.get('cpu_capability')}"
            f" kernels, {recipe.get('precision')}, {recipe.get('threads')} threads"
        )
