"""The cost model's formulas against values derived by hand for small cases."""
import math

import numpy as np
import pytest

from ddp.bench import costmodel as cm

MB = 2 ** 20


@pytest.mark.parametrize("p", [2, 3, 4, 8, 1024])
def test_ring_allreduce_is_two_p_minus_one_latencies_plus_two_p_minus_one_over_p_volumes(p):
    n, alpha, beta = 3e6, 7e-6, 2e9
    assert cm.ring_allreduce_time(n, p, alpha, beta) == pytest.approx(
        2 * (p - 1) * alpha + 2 * (p - 1) / p * n / beta, rel=1e-12)


def test_ring_hand_values():
    # p = 2: 2·α + 1·n/β = 20 µs + 1 ms
    assert cm.ring_allreduce_time(1e6, 2, 1e-5, 1e9) == pytest.approx(1.02e-3)
    # p = 4: 6·α + 1.5·n/β = 60 µs + 1.5 ms
    assert cm.ring_allreduce_time(1e6, 4, 1e-5, 1e9) == pytest.approx(1.56e-3)


@pytest.mark.parametrize("p,steps", [(2, 1), (4, 2), (5, 3), (8, 3), (1024, 10)])
def test_tree_allreduce_takes_two_ceil_log2_p_full_messages(p, steps):
    n, alpha, beta = 1e6, 1e-5, 1e9
    assert cm.tree_allreduce_time(n, p, alpha, beta) == pytest.approx(2 * steps * (alpha + n / beta))


def test_one_rank_moves_nothing():
    for algorithm in cm.ALGORITHMS:
        assert cm.allreduce_time(1e9, 1, 1e-3, 1.0, algorithm) == 0.0


def test_best_is_the_cheaper_one_and_tree_wins_small_messages_at_scale():
    # 1 KB on 1024 ranks, α = 10 µs: ring 2046 α ≈ 20.5 ms, tree 20 α ≈ 0.2 ms
    small = cm.allreduce_time(1e3, 1024, 1e-5, 1e9, "best")
    assert small == cm.tree_allreduce_time(1e3, 1024, 1e-5, 1e9) < cm.ring_allreduce_time(1e3, 1024, 1e-5, 1e9)
    # 100 MB on 8 ranks: the ring's bandwidth term (1.75 n/β) beats the tree's (6 n/β)
    big = cm.allreduce_time(1e8, 8, 1e-5, 1e9, "best")
    assert big == cm.ring_allreduce_time(1e8, 8, 1e-5, 1e9) < cm.tree_allreduce_time(1e8, 8, 1e-5, 1e9)


def test_unknown_algorithm_is_named():
    with pytest.raises(ValueError, match="ring, tree, best.*'butterfly'"):
        cm.allreduce_time(1.0, 2, 0.0, 1.0, "butterfly")


def test_bus_bandwidth_scales_algorithm_bandwidth_by_two_p_minus_one_over_p():
    assert cm.bus_bandwidth(1e6, 1e-3, 2) == pytest.approx(1e9)
    assert cm.bus_bandwidth(1e6, 1e-3, 4) == pytest.approx(1.5e9)
    # a ring with no latency runs at exactly the link's bandwidth, whatever p
    for p in (2, 3, 16):
        assert cm.bus_bandwidth(5e6, cm.ring_allreduce_time(5e6, p, 0.0, 3e9), p) == pytest.approx(3e9)


def test_fit_recovers_alpha_and_beta_from_noisy_times():
    rng = np.random.default_rng(0)
    sizes = [4 ** k for k in range(5, 13)]
    for p, alpha, beta in [(2, 20e-6, 5e9), (4, 3e-6, 1e9)]:
        times = [cm.ring_allreduce_time(n, p, alpha, beta) * (1 + 0.02 * rng.standard_normal())
                 for n in sizes]
        a, b = cm.fit_alpha_beta(sizes, times, p)
        assert a == pytest.approx(alpha, rel=0.1) and b == pytest.approx(beta, rel=0.05)


def test_fit_with_a_negative_intercept_takes_alpha_zero():
    sizes = [1e3, 1e4, 1e5, 1e6]
    times = [n / 1e9 - 1e-7 if n == 1e3 else n / 1e9 for n in sizes]
    alpha, beta = cm.fit_alpha_beta(sizes, times, 2)
    assert alpha == 0.0 and beta == pytest.approx(1e9, rel=0.05)


def test_fit_needs_two_ranks():
    with pytest.raises(ValueError, match="1 rank"):
        cm.fit_alpha_beta([1, 2], [1.0, 2.0], 1)


def test_bucket_sizes_follow_the_reducers_rule():
    # first bucket capped at 1 MiB, then 25 MiB; a bucket closes before the parameter that
    # would overflow it; a parameter larger than the cap gets a bucket of its own
    sizes = cm.bucket_sizes([100, 600_000, 600_000, 10 * MB, 10 * MB, 10 * MB, 30 * MB],
                            cap_bytes=25 * MB)
    assert sizes == [600_100, 600_000 + 20 * MB, 10 * MB, 30 * MB]
    assert cm.bucket_sizes([5, 5, 5], cap_bytes=10) == [10, 5]  # first bucket min(1 MiB, cap)
    assert cm.bucket_sizes([], 10) == []


def test_flat_buckets_cover_the_gradient():
    sizes = cm.flat_buckets(25.6e6 * 4)
    assert sizes[0] == MB and all(s <= 25 * MB for s in sizes)
    assert sum(sizes) == pytest.approx(25.6e6 * 4)
    assert len(sizes) == 1 + math.ceil((25.6e6 * 4 - MB) / (25 * MB))


def test_exposed_communication_hand_cases():
    # α = 0, β = 1 GB/s, 2 ranks: an allreduce of n bytes takes n/β (2(p-1)/p = 1)
    # two 3 MB buckets (3 ms each), backward 4 ms: ready at 2 and 4 ms; the first runs 2–5,
    # the second 5–8: 4 ms after backward ends
    assert cm.exposed_communication([3e6, 3e6], 4e-3, 2, 0.0, 1e9) == pytest.approx(4e-3)
    # two 1 MB buckets (1 ms each), backward 10 ms: ready at 5 and 10 ms; the first runs 5–6
    # (hidden), the second 10–11: only the last bucket is exposed
    assert cm.exposed_communication([1e6, 1e6], 10e-3, 2, 0.0, 1e9) == pytest.approx(1e-3)
    # one bucket: it can only start when backward ends: all of it is exposed
    assert cm.exposed_communication([2e6], 5e-3, 2, 0.0, 1e9) == pytest.approx(2e-3)
    # without overlap the sum, whatever the backward time
    assert cm.exposed_communication([3e6, 3e6], 1.0, 2, 0.0, 1e9, overlap=False) == pytest.approx(6e-3)
    # latency counts per bucket: 2·α each on 2 ranks
    assert cm.exposed_communication([1e6], 1e-3, 2, 1e-4, 1e9) == pytest.approx(1e-3 + 2e-4)


def test_predict_weak_scaling_efficiency():
    work = cm.Workload("toy", [3e6, 3e6], forward_s=2e-3, backward_s=4e-3, optimizer_s=1e-3)
    link = cm.Link("toy", 0.0, 1e9)
    one = cm.predict(work, 1, link)
    assert one.efficiency == 1.0 and one.exposed_s == 0.0
    two = cm.predict(work, 2, link)
    assert two.exposed_s == pytest.approx(4e-3) and two.comm_s == pytest.approx(6e-3)
    assert two.efficiency == pytest.approx(7 / 11)
    assert two.efficiency_serial == pytest.approx(7 / 13)


def test_efficiency_falls_with_ranks_and_rises_with_compute():
    link = cm.LINKS["25GbE"]
    effs = [cm.predict(cm.RESNET50, p, link).efficiency for p in (8, 64, 512, 1024)]
    assert all(a >= b for a, b in zip(effs, effs[1:]))
    slow = cm.scaled(cm.RESNET50, 10 * cm.RESNET50.compute_s)
    assert cm.predict(slow, 1024, link).efficiency > effs[-1]


def test_compute_for_efficiency_hits_the_target():
    link = cm.LINKS["100Gb"]
    for target in (0.5, 0.9, 0.99):
        need = cm.compute_for_efficiency(cm.BERT_BASE, 256, link, target)
        assert cm.predict(cm.scaled(cm.BERT_BASE, need), 256, link).efficiency == pytest.approx(
            target, abs=1e-6)
