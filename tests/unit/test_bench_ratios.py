"""Issue 30's targets as `make bench` prints them: each a ratio of two figures of the same run."""
from tests.bench import Ratio, ratios


def test_a_ratio_is_met_at_its_bound_and_not_beyond_it():
    assert Ratio("p50", 29.0, 14.5, at_most=2).met
    assert not Ratio("p50", 29.1, 14.5, at_most=2).met
    assert Ratio("share", 98, 100, at_least=0.98).met and not Ratio("share", 97.9, 100, at_least=0.98).met
    assert not Ratio("beside", 10, 10, at_most=2, also=False).met  # the quiet p99 itself off target
    assert "NOT met" in Ratio("p50", 80.2, 14.5, at_most=2).line() and "5.53" in Ratio("p50", 80.2, 14.5, at_most=2).line()


def test_the_six_targets_from_one_runs_figures():
    quiet = [i / 1000 for i in range(1, 101)]  # 1..100 ms: p50 50.5, p99 ~99.99
    table = ratios(floor_sum=25.0, quiet=quiet, beside_hot=[2 * q for q in quiet], product_cpu=11.0, post_cpu=4.4,
                   accepted=100.0, delivered=98.0, drained=300.0)
    assert [round(r.value, 2) for r in table] == [2.02, 4.0, 2.5, 0.98, 2.0, 3.06]
    assert [r.met for r in table] == [False, True, True, True, True, True]
