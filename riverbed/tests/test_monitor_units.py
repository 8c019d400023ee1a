"""The monitor's pure parts: which node's memory is exported."""

from __future__ import annotations

from riverbed.monitor import fullest_node


def test_the_node_closest_to_its_limit_is_the_one_exported() -> None:
    nodes = [
        {"used_memory": 900, "maxmemory": 10_000},  # 9 % full, the most bytes after the next
        {"used_memory": 700, "maxmemory": 1_000},  # 70 % full: refuses writes first
        {"used_memory": 100, "maxmemory": 10_000},
    ]
    assert fullest_node(nodes) == (700, 1_000)


def test_without_limits_the_node_using_the_most_is_exported() -> None:
    nodes = [{"used_memory": 5, "maxmemory": 0}, {"used_memory": 9, "maxmemory": 0}]
    assert fullest_node(nodes) == (9, 0)
    assert fullest_node([]) == (0, 0)
