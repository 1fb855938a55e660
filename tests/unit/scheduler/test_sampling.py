"""Which nodes a scheduling cycle filters (upstream's percentageOfNodesToScore): how many
fitting nodes end the search, where it starts from one cycle to the next, and that every node
is tried when fewer fit than that."""

from collections import Counter

import pytest

from k3py.server.scheduler.sampling import NodeSampler, feasible_nodes_to_find

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("nodes, find", [(10, 10), (99, 99), (100, 100), (250, 120),
                                         (1000, 420), (5000, 500), (100_000, 5000)])
def test_filtering_stops_after_upstreams_share_of_nodes(nodes, find) -> None:
    assert feasible_nodes_to_find(nodes) == find


class Tried:
    """A fits() that records each node it is asked about."""

    def __init__(self, fitting=lambda n: True) -> None:
        self.fitting = fitting
        self.nodes: list[int] = []

    def __call__(self, node: int) -> bool:
        self.nodes.append(node)
        return self.fitting(node)


def test_stops_once_enough_nodes_fit() -> None:
    sampler, fits = NodeSampler(), Tried()
    found = sampler.find(list(range(1000)), fits)
    assert found == list(range(420))
    assert fits.nodes == list(range(420))  # no node tried past the 420th that fits
    assert sampler.next_start == 420


def test_each_cycle_starts_where_the_last_stopped_and_wraps() -> None:
    sampler, nodes = NodeSampler(), list(range(1000))
    assert sampler.find(nodes, Tried())[0] == 0
    assert sampler.find(nodes, Tried()) == list(range(420, 840))
    fits = Tried()
    assert sampler.find(nodes, fits) == list(range(840, 1000)) + list(range(260))
    assert sampler.next_start == 260


def test_every_node_is_tried_equally_often_across_cycles() -> None:
    sampler, nodes, seen = NodeSampler(), list(range(1000)), Counter()
    for _ in range(50):  # 50 x 420 = 21 x 1000
        fits = Tried()
        sampler.find(nodes, fits)
        seen.update(fits.nodes)
    assert set(seen.values()) == {21} and len(seen) == 1000


def test_fewer_fitting_than_the_target_tries_every_node() -> None:
    sampler, nodes = NodeSampler(), list(range(1000))
    sampler.next_start = 500
    fits = Tried(lambda n: n % 10 == 0)  # 100 fit, fewer than 420
    found = sampler.find(nodes, fits)
    assert sorted(fits.nodes) == nodes  # each tried once, from 500 round to 499
    assert fits.nodes[0] == 500 and fits.nodes[-1] == 499
    assert sorted(found) == list(range(0, 1000, 10))
    assert sampler.next_start == 500
    none = Tried(lambda n: False)
    assert sampler.find(nodes, none) == [] and len(none.nodes) == 1000


def test_some_fitting_nodes_stop_the_search_where_the_target_is_reached() -> None:
    sampler, fits = NodeSampler(), Tried(lambda n: n % 2 == 0)  # 500 fit
    found = sampler.find(list(range(1000)), fits)
    assert len(found) == 420 and found[-1] == 838
    assert len(fits.nodes) == 839 and sampler.next_start == 839


def test_small_clusters_and_no_nodes() -> None:
    sampler, fits = NodeSampler(), Tried()
    assert sampler.find(list(range(99)), fits) == list(range(99))
    assert sampler.next_start == 0  # all 99 tried: round to the same start
    assert sampler.find([], Tried()) == []
