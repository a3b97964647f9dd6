"""Checks before loading: what an experiment names on this machine, checked before a model loads.

Loading a model (and, on first use, building the testbed) takes minutes; a device this machine
lacks, a broken model folder or a bad data file must fail before that, in one line. The values
themselves are checked when the experiment is parsed (`bench.config`); the output folder when
the run claims it (`bench.rundir.RunDir.claim`).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from bench.config import CapabilityConfig, ModelConfig
from bench.errors import UserError
from bench.task import Splits, Task

# How many devices of each type this machine has (a type not here is not one steerbench runs on).
DEVICE_COUNT: dict[str, Callable[[], int]] = {
    "cpu": lambda: 1,
    "cuda": lambda: torch.cuda.device_count() if torch.cuda.is_available() else 0,
    "mps": lambda: int(torch.backends.mps.is_available()),
}

# What `from_pretrained` reads from a saved folder (single files or a sharded index).
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# The files tokenizers are usually saved as: a folder with none of them gets a clear message
# only if `AutoTokenizer` cannot read it either (some tokenizers use other names).
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "spiece.model", "vocab.txt")


def check_device(device: str, what: str = "model.device") -> None:
    """`device` names a device torch knows and this machine has."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise UserError(
            f"{what} '{device}' is not a device name torch knows "
            f"(use one of {', '.join(DEVICE_COUNT)}, or e.g. 'cuda:1')"
        ) from None
    count = DEVICE_COUNT.get(parsed.type)
    if count is None:
        raise UserError(
            f"{what} '{device}': steerbench runs on {', '.join(DEVICE_COUNT)} devices only"
        )
    have = count()
    if have == 0:
        raise UserError(f"{what} '{device}': this machine has no {parsed.type} device")
    if parsed.index is not None and parsed.index >= have:
        raise UserError(f"{what} '{device}': this machine has {have} {parsed.type} device(s)")


def local_folder(name: str) -> Path | None:
    """The local path `from_pretrained` would read for `name`, if `name` is one."""
    path = Path(name).expanduser()
    return path if path.exists() else None


def check_model_folder(config: ModelConfig, what: str = "model.name") -> None:
    """A local model folder holds a readable config, weights that are whole and a tokenizer;
    names that are no local path (hub ids) are left to the loader, which says whether the hub
    copy is cached."""
    from bench.registry import MODEL_SOURCES

    folder = local_folder(config.name)
    if folder is None or MODEL_SOURCES.find(config.name) is not None:
        return
    if not folder.is_dir():
        raise UserError(
            f"{what} '{config.name}' is a file; give the model's folder "
            "(what save_pretrained wrote: config.json, the weights, the tokenizer)"
        )
    broken = f"local model folder {folder}"
    _check_config(folder, config, broken)
    _check_weights(folder, broken)
    _check_tokenizer(folder, config, broken)


def _check_config(folder: Path, config: ModelConfig, broken: str) -> None:
    from transformers import AutoConfig

    path = folder / "config.json"
    if not path.is_file():
        raise UserError(f"{broken} has no config.json (not a folder save_pretrained wrote?)")
    try:
        json.loads(path.read_text(encoding="utf-8"))
        AutoConfig.from_pretrained(str(folder), trust_remote_code=config.trust_remote_code)
    except (OSError, ValueError, KeyError) as error:  # JSONDecodeError, unknown model_type
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"{broken}: config.json is broken ({reason})") from None


def _check_weights(folder: Path, broken: str) -> None:
    files = [folder / name for name in WEIGHT_FILES if (folder / name).is_file()]
    for index in (folder / name for name in WEIGHT_INDEXES):
        if index.is_file():
            try:
                shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                raise UserError(f"{broken}: {index.name} is not a weight index") from None
            files += [folder / shard for shard in sorted(shards)]
    if not files:
        raise UserError(
            f"{broken} has no weights ({' or '.join(WEIGHT_FILES)}, or a sharded index)"
        )
    for path in files:
        if not path.is_file():
            raise UserError(f"{broken}: weight file {path.name} is missing")
        if path.suffix == ".safetensors":
            problem = safetensors_problem(path)
            if problem:
                raise UserError(f"{broken}: {path.name} is {problem}")
        elif path.stat().st_size == 0:
            raise UserError(f"{broken}: {path.name} is empty")


def safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file cannot be whole (from its header and size), or None. Reads
    only the header: a truncated copy is found without loading the weights."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            return "truncated (no header)"
        (length,) = struct.unpack("<Q", head)
        if 8 + length > size:
            return "truncated (the header runs past the end of the file)"
        try:
            header = json.loads(handle.read(length))
            end = max(
                (
                    entry["data_offsets"][1]
                    for key, entry in header.items()
                    if key != "__metadata__"
                ),
                default=0,
            )
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            return "not a safetensors file (unreadable header)"
    if 8 + length + end > size:
        return f"truncated ({size} of {8 + length + end} bytes)"
    return None


def _check_tokenizer(folder: Path, config: ModelConfig, broken: str) -> None:
    if any((folder / name).is_file() for name in TOKENIZER_FILES):
        return
    from transformers import AutoTokenizer

    try:
        AutoTokenizer.from_pretrained(str(folder), trust_remote_code=config.trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"{broken} has no tokenizer that loads ({reason})") from None


def check_capability(config: CapabilityConfig) -> None:
    """The capability suite's include paths are folders (its task names are lm-eval's to know:
    checked when lm-eval indexes them, at the first operating point)."""
    for path in config.include_paths:
        if not Path(path).is_dir():
            raise UserError(
                f"capability.include_path '{path}' is not a folder (for the testbed's tasks: "
                "`steerbench testbed lm-eval-tasks` prints it)"
            )


def load_data(tasks: Sequence[Task]) -> list[Splits]:
    """Every task's data, read now: a missing or malformed data file fails before the model
    loads. The runner takes the splits as they are (`Runner(data=...)`)."""
    return [task.load() for task in tasks]
