"""The supervisor's placement of a pool: pure logic, no cluster."""

from __future__ import annotations

from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.supervisor import spread


def test_one_node_leaves_placement_to_ray() -> None:
    assert spread([], 0) == "SPREAD"
    assert spread(["a" * 56], 3) == "SPREAD"


def test_a_pool_takes_the_nodes_in_turn_and_may_go_elsewhere() -> None:
    a, b, c = (letter * 56 for letter in "abc")  # node ids are 28 bytes in hex
    placed = [spread([a, b, c], index) for index in range(4)]
    assert all(isinstance(p, NodeAffinitySchedulingStrategy) for p in placed)
    assert [p.node_id for p in placed] == [a, b, c, a]
    # Soft, and spilling when busy: a gone or full node never holds a pool member back.
    assert all(p.soft and p._spill_on_unavailable for p in placed)
