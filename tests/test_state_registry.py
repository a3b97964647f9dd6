"""State storage and caching, the registry, and strict parameter parsing."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from bench.errors import UserError
from bench.params import parse
from bench.registry import METHODS, Registry
from bench.state import State, StateCache, content_key


def test_state_round_trips_through_safetensors(tmp_path):
    state = State(
        {"vector": torch.randn(3, 8), "mask": torch.tensor([1, 0, 1])},
        {"layer": 2, "source": ["a", "b"]},
    )
    state.save(tmp_path / "s.safetensors")
    loaded = State.load(tmp_path / "s.safetensors")
    assert loaded.meta == {"layer": 2, "source": ["a", "b"]}
    assert set(loaded.tensors) == {"vector", "mask"}
    assert all(torch.equal(loaded.tensors[k], state.tensors[k]) for k in state.tensors)


def test_state_cache_fits_once_per_content_key(tmp_path):
    cache = StateCache(tmp_path)
    calls = []

    def fit():
        calls.append(1)
        return State({"v": torch.ones(2)}, {"n": 1})

    key = content_key({"method": "x"}, {"target": "t"}, "fingerprint")
    first, cached_first = cache.get_or_fit(key, fit)
    second, cached_second = cache.get_or_fit(key, fit)
    assert (cached_first, cached_second) == (False, True) and len(calls) == 1
    assert torch.equal(first.tensors["v"], second.tensors["v"])
    assert content_key({"method": "x"}, {"target": "u"}, "fingerprint") != key


def test_registry_did_you_mean_and_known_names():
    with pytest.raises(
        UserError, match=r"unknown method 'prompt' \(did you mean 'prompting'\?\); known: "
    ):
        METHODS.get("prompt")


def test_registry_rejects_two_items_with_one_name():
    @dataclass
    class Item:
        name: str

    registry = Registry("thing", "steerbench.nothing", lambda: [Item("a")])
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(Item("a"))
    assert registry.names() == ["a"]


@dataclass(frozen=True)
class Params:
    layer: int = 3
    scale: float = 1.0
    positions: str = "all"
    layers: tuple[int, ...] = ()
    name: str | None = None


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"layer": 5}, Params(layer=5)),
        ({"scale": 2}, Params(scale=2.0)),
        ({"layers": [1, 2]}, Params(layers=(1, 2))),
        ({"name": None}, Params()),
    ],
)
def test_parse_accepts_and_coerces(data, expected):
    assert parse(Params, data) == expected


@pytest.mark.parametrize(
    "data, message",
    [
        ({"layr": 5}, "unknown key 'p.layr' (did you mean 'layer'?)"),
        ({"layer": "5"}, "p.layer: expected an integer, got '5'"),
        ({"layer": True}, "p.layer: expected an integer, got True"),
        ({"layers": [1, "x"]}, "p.layers[1]: expected an integer"),
        ({"positions": 3}, "p.positions: expected str"),
    ],
)
def test_parse_rejects_naming_the_key(data, message):
    with pytest.raises(UserError) as error:
        parse(Params, data, "p")
    assert message in str(error.value)
