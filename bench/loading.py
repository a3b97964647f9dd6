"""Loading a model and its tokenizer with `from_pretrained`: precision, placement, errors.

`Subject.load` reads through here. A model is put whole on one device, or spread by accelerate
over the GPUs, the CPU and disk (`device_map`); `execution_device` says where a module placed by
such a map runs. A model that cannot be read is one line naming it and what to do.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch

from bench.errors import UserError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class _DroppedMaskAlarm(logging.Filter):
    """transformers' `generate` drops an attention mask of all ones (nothing is padded, so none
    is needed), and then the model warns, at the first generated end-of-text (the pad token),
    that it got no mask. steerbench always passes its masks: the warning is about transformers'
    own optimisation, not a padded batch, and would only alarm a user. Other messages pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "passing in an `attention_mask`" not in record.getMessage()


logging.getLogger("transformers.modeling_utils").addFilter(_DroppedMaskAlarm())


# accelerate's placements: what `[model] device_map` may say.
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


def dispatch_arguments(
    device_map: str, max_memory: dict[str, str] | None, offload_folder: str | None
) -> dict:
    """`from_pretrained`'s placement arguments. GPU budgets are keyed by index ("0": "20GiB"),
    which accelerate wants as integers; disk offload needs a folder (a temporary one, removed
    when the process ends, unless one is named)."""
    if offload_folder is None:
        offload_folder = tempfile.mkdtemp(prefix="steerbench-offload-")
        atexit.register(shutil.rmtree, offload_folder, ignore_errors=True)
    memory = None
    if max_memory is not None:
        memory = {int(k) if k.isdigit() else k: v for k, v in max_memory.items()}
    return {"device_map": device_map, "max_memory": memory, "offload_folder": offload_folder}


def execution_device(placement: int | str, placements: Iterable[int | str] = ()) -> torch.device:
    """The device a module placed at `placement` (an `hf_device_map` value; `placements`: all
    of the map's) runs on. Offloaded modules ("cpu", "disk") run on accelerate's main device,
    which loads their weights for each call: the first of the other placements, as
    `accelerate.dispatch_model` picks it (a GPU), or the CPU when there is none."""
    if placement in ("cpu", "disk"):
        others = list(set(placements) - {"cpu", "disk"})
        placement = others[0] if others else "cpu"
    if isinstance(placement, int):
        return torch.device("cuda", placement)
    return torch.device(placement)


def load_pretrained(
    source: str,
    *,
    dtype: str = "float32",
    trust_remote_code: bool = False,
    revision: str | None = None,
    device_map: str | None = None,
    max_memory: dict[str, str] | None = None,
    offload_folder: str | None = None,
) -> tuple[torch.nn.Module, object]:
    """The model (on the CPU, or placed by accelerate per `device_map`) and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES:
        raise UserError(f"unknown dtype '{dtype}'; use one of {', '.join(DTYPES)}")
    kwargs = {"trust_remote_code": trust_remote_code, "revision": revision}
    placement = (
        {} if device_map is None else dispatch_arguments(device_map, max_memory, offload_folder)
    )
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=DTYPES[dtype], **kwargs, **placement
        )
    except (OSError, ValueError) as error:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or not Path(source).exists()
        hint = (
            "not a local directory and not in the Hugging Face cache; download it where "
            "there is network (`hf download " + source + "`) or give a local path"
            if offline
            else str(error).splitlines()[0]
        )
        raise UserError(f"cannot load model '{source}': {hint}") from None
    return model, tokenizer
