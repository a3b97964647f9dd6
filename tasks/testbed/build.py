"""Build and cache the testbed model: corpus -> tokenizer -> small GPT-2 (see ``train.py``).

``ensure_testbed()`` returns a directory that ``AutoModelForCausalLM.from_pretrained`` and
``AutoTokenizer.from_pretrained`` load, building it on first use. The directory is
``<cache root>/testbed/v{GENERATOR_VERSION}-seed{seed}-r{recipe fingerprint}``: a build of
another recipe (another thread count, say) is another testbed with its own directory. The cache
root is the ``cache_dir`` argument, else ``$STEERBENCH_CACHE``, else ``~/.cache/steerbench``. A
build is written into a temporary sibling directory and renamed into place, under a file lock,
so an interrupted or concurrent build never leaves (or reads) a half-written model.
``testbed.json`` beside the weights records the recipe, the build environment (torch version,
CPU kernels), timings and SHA-256 hashes of corpus, tokenizer and weights.

A multi-threaded build trains in a child process that sets how its OpenMP threads wait: on an
idle machine they spin briefly before they sleep (``GOMP_SPINCOUNT``), since sleeping at once
(``OMP_WAIT_POLICY=PASSIVE``) costs about a third of the speed; when other tasks keep the cores
busy (the runnable tasks in ``/proc/loadavg`` say so) they sleep at once, since spinning
threads then wait on preempted siblings and the build runs several times slower. The results
are bit-identical either way; a user who sets either variable gets an in-process build with
their setting.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .train import (
    Recipe,
    build_environment,
    encode,
    train_model,
    train_tokenizer,
    weights_hash,
)
from .world import GENERATOR_VERSION, corpus_hash, generate_corpus

INFO_FILE = "testbed.json"
_CHILD_ENV = "STEERBENCH_TESTBED_CHILD"  # set in the child process that does the build
# The child's OpenMP waiting (see module doc): spin about a tenth of a millisecond, then sleep;
# or sleep at once on a busy machine.
_OPENMP_WAIT = {"GOMP_SPINCOUNT": "200000"}
_OPENMP_WAIT_BUSY = {"OMP_WAIT_POLICY": "PASSIVE"}


def _openmp_wait(threads: int) -> dict[str, str]:
    """How the build's OpenMP threads should wait, given how many other tasks are running now
    (the load average lags by a minute: the install or test run that just ended would count)."""
    others = _other_running_tasks()
    free = (os.cpu_count() or 1) - others
    return _OPENMP_WAIT if free >= threads else _OPENMP_WAIT_BUSY


def _other_running_tasks(samples: int = 5, interval: float = 0.05) -> int:
    """Runnable tasks besides this one (Linux ``/proc/loadavg``; 0 where it cannot be read)."""
    counts = []
    for _ in range(samples):
        try:
            running = Path("/proc/loadavg").read_text().split()[3].split("/")[0]
        except (OSError, IndexError, ValueError):
            return 0
        counts.append(int(running) - 1)
        time.sleep(interval)
    return sorted(counts)[len(counts) // 2]


DEFAULT_RECIPE = Recipe()
# Intra-op threads of a default build. 2 is fastest on an idle 2-core machine; on a machine
# shared with other jobs 1 avoids OpenMP threads waiting on each other (several times faster
# there). Weights are deterministic for a given thread count, so it is recorded.
THREADS_ENV = "STEERBENCH_TESTBED_THREADS"


def default_recipe() -> Recipe:
    """``DEFAULT_RECIPE``, with ``threads`` from ``$STEERBENCH_TESTBED_THREADS`` when set."""
    env = os.environ.get(THREADS_ENV, "").strip()
    if not env:
        return DEFAULT_RECIPE
    if not env.isdigit() or int(env) < 1:
        raise ValueError(f"{THREADS_ENV} must be a positive integer, got {env!r}")
    return dataclasses.replace(DEFAULT_RECIPE, threads=int(env))


@dataclass(frozen=True)
class BuildInfo:
    path: Path
    generator_version: int
    seed: int
    recipe: Recipe
    corpus_sha256: str
    tokenizer_sha256: str
    weights_sha256: str
    n_tokens: int
    final_loss: float
    timings: dict[str, float]
    environment: dict[str, str]  # torch version and CPU kernels the weights were trained with

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["path"] = str(self.path)
        return d

    @classmethod
    def from_json(cls, d: dict) -> BuildInfo:
        fields = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in fields}
        return cls(**(d | {"path": Path(d["path"]), "recipe": Recipe(**d["recipe"])}))


# ------------------------------------------------------------------------------ cache paths


def cache_root(cache_dir: Path | str | None = None) -> Path:
    """``cache_dir``, else ``$STEERBENCH_CACHE``, else ``~/.cache/steerbench``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("STEERBENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "steerbench"


def testbed_dir(
    seed: int = 0, cache_dir: Path | str | None = None, recipe: Recipe | None = None
) -> Path:
    """Where the testbed of ``seed`` and ``recipe`` (default: ``default_recipe()``) lives."""
    recipe = recipe or default_recipe()
    name = f"v{GENERATOR_VERSION}-seed{seed}-r{recipe.fingerprint()}"
    return cache_root(cache_dir) / "testbed" / name


def read_info(model_dir: Path | str) -> dict | None:
    """The build record of a finished testbed directory, or None."""
    try:
        return json.loads((Path(model_dir) / INFO_FILE).read_text())
    except (OSError, ValueError):
        return None


def ensure_testbed(
    seed: int = 0,
    cache_dir: Path | str | None = None,
    progress: bool = True,
    force: bool = False,
    recipe: Recipe | None = None,
) -> Path:
    """The testbed model directory for ``seed`` and ``recipe`` (default: ``default_recipe()``),
    built (a few CPU minutes) if not cached, or rebuilt with ``force``."""
    recipe = recipe or default_recipe()
    target = testbed_dir(seed, cache_dir, recipe)
    if read_info(target) is not None and not force:
        return target
    with _lock(target.with_name(target.name + ".lock")):
        if force or read_info(target) is None:  # another process may have built it meanwhile
            if progress:
                print(f"steerbench: building the testbed model (first use, a few minutes on "
                      f"2 CPU cores) into {target}", file=sys.stderr, flush=True)  # fmt: skip
            build_testbed(target, seed, recipe, progress=progress)
    return target


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            import fcntl
        except ImportError:  # not POSIX: no inter-process lock, the atomic rename still holds
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------ the build


def build_testbed(
    out_dir: Path | str,
    seed: int = 0,
    recipe: Recipe | None = None,
    progress: bool = True,
    **overrides: object,
) -> BuildInfo:
    """Build corpus, tokenizer and model into ``out_dir`` (replaced atomically if it exists).

    ``recipe`` defaults to ``default_recipe()``; ``overrides`` replace its fields, e.g.
    ``build_testbed(d, steps=20, n_docs=500)`` for a tiny build in tests."""
    recipe = dataclasses.replace(recipe or default_recipe(), **overrides)  # type: ignore[arg-type]
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    user_set = any(name in os.environ for name in ("OMP_WAIT_POLICY", *_OPENMP_WAIT, _CHILD_ENV))
    if recipe.threads > 1 and not user_set:
        return _build_in_child(out_dir, seed, recipe, progress)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    docs = generate_corpus(seed, recipe.n_docs)
    texts = [d.text for d in docs]
    timings["corpus_s"] = time.perf_counter() - t0

    t = time.perf_counter()
    # the world is closed: a slice of the corpus already holds every word
    tokenizer = train_tokenizer(texts[: recipe.tokenizer_docs], recipe.vocab_size, recipe.n_ctx)
    ids = encode(tokenizer, texts)
    timings["tokenizer_s"] = time.perf_counter() - t

    t = time.perf_counter()
    model, loss = train_model(ids, tokenizer, recipe, seed, progress)
    timings["train_s"] = time.perf_counter() - t

    t = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _portable_tokenizer_config(tmp / "tokenizer_config.json")
        timings["save_s"] = time.perf_counter() - t
        timings["total_s"] = time.perf_counter() - t0
        info = BuildInfo(
            path=out_dir,
            generator_version=GENERATOR_VERSION,
            seed=seed,
            recipe=recipe,
            corpus_sha256=corpus_hash(docs),
            tokenizer_sha256=_file_hash(tmp / "tokenizer.json"),
            weights_sha256=weights_hash(model),
            n_tokens=int(ids.numel()),
            final_loss=loss,
            timings={k: round(v, 2) for k, v in timings.items()},
            environment=build_environment(),
        )
        (tmp / INFO_FILE).write_text(json.dumps(info.to_json(), indent=2) + "\n")
        _replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return info


def _build_in_child(out_dir: Path, seed: int, recipe: Recipe, progress: bool) -> BuildInfo:
    """Run ``build_testbed`` in a child Python with OpenMP waiting set (see module doc)."""
    package_root = Path(__file__).resolve().parents[2]  # the directory holding ``tasks``
    env = dict(os.environ, **_openmp_wait(recipe.threads), **{_CHILD_ENV: "1"})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(package_root), env.get("PYTHONPATH")]))
    args = json.dumps([str(out_dir), seed, dataclasses.asdict(recipe), progress])
    code = "import sys; from tasks.testbed.build import _child_main; _child_main(sys.argv[1])"
    result = subprocess.run([sys.executable, "-c", code, args], env=env, check=False)
    info = read_info(out_dir)
    if result.returncode != 0 or info is None:
        raise RuntimeError(f"the testbed build failed (child exit code {result.returncode})")
    return BuildInfo.from_json(info)


def _child_main(args: str) -> None:
    out_dir, seed, recipe, progress = json.loads(args)
    build_testbed(out_dir, seed, Recipe(**recipe), progress)


def _replace_dir(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``; an existing ``dst`` is moved aside first and then deleted."""
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _portable_tokenizer_config(path: Path) -> None:
    """Name the class that transformers 4.x and 5.x both load (5.x writes its own new name)."""
    config = json.loads(path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
