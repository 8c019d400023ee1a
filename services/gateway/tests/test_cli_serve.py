"""``riverbed-gateway serve`` sets the garbage collector for serving; the key commands do not."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from riverbed_gateway import cli


@pytest.fixture(autouse=True)
def _restore_thresholds() -> Iterator[None]:
    thresholds = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*thresholds)


def _main_without_serving(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> None:
    def service_main(given: Any, *, serve: Callable[[], Any], **_: Any) -> int:
        if not given or given[0] == "serve":
            serve()  # what would be served, built; not run
        return 0

    monkeypatch.setattr(cli, "service_main", service_main)
    monkeypatch.setattr(cli, "create_service", lambda settings: object())
    assert cli.main(argv) == 0


def test_serving_collects_less_often(monkeypatch: pytest.MonkeyPatch) -> None:
    _main_without_serving(monkeypatch, ["serve"])
    assert gc.get_threshold() == cli._GC_THRESHOLDS
    assert cli._GC_THRESHOLDS[0] > 700


def test_a_key_command_leaves_the_collector_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    _main_without_serving(monkeypatch, ["keys", "list"])
    assert gc.get_threshold() == (700, 10, 10)
