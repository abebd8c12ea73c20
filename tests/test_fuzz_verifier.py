"""The randomized soundness suite (benchmarks/fuzz_verifier.py): a quick seeded sample of its cases, and its reference.

Every sampled case runs its verifier setting and is checked against the suite's independent reference: no wrong
verdict, invalid counterexample, lower bound above the true minimum, crash, or reference beaten by the verifier.
The reference itself is checked against brute-force sampling and the LP of the best sample's phase pattern, its
two search methods against each other, its scale invariance, and the checks against planted wrong answers (so
that both the verifier's and the reference's mistakes make a test fail).
"""
from fractions import Fraction

import numpy as np
import pytest

from benchmarks import fuzz_verifier as fuzz
from explain_mnist.network import Affine, Network, ReLU
from explain_mnist.verifier import Verdict

QUICK_LIMIT = 5.0   # seconds per verifier call; the sampled cases take well under one

# ids spread over the generators and settings (chosen from a 300-case run as the quick ones that together cover
# every setting, weight kind, scale mode, box kind, decision rule, the wide-input nets and shifted margins)
SAMPLE = [0, 1, 8, 12, 25, 26, 51, 54, 64, 102, 110, 111, 116, 121, 127, 131, 148, 156, 160, 162, 168, 171, 185, 195,
          204, 205, 227, 233, 235, 246, 251, 253, 254, 284, 285, 298]

# tiny cases (2-3 free inputs, at most 12 hidden neurons) for the brute-force checks of the reference
TINY = [86, 32, 89, 145, 182, 175, 245, 3]


# cases that failed on earlier code (ids of this generator): bounds that were not bounds on nets times 2^-41..-46
# (163, 285, 557, 1002, 1061, 1102), a MIP robust under an absolute 1e-6 tolerance (104, 134, 929), robust within
# rounding (542), float-tie counterexamples (94, 757, 545, 1125, 1304, 1348, 1429), robust within the MIP's
# relative tolerance (515, 1153, 229, 660, 574, 831, 1046: outcome within_tolerance)
REGRESSION = [163, 285, 557, 1002, 1061, 1102, 104, 134, 929, 542, 94, 757, 545, 1125, 1304, 1348, 1429, 515, 1153,
              229, 660, 574, 831, 1046]


@pytest.mark.parametrize("case_id", SAMPLE + REGRESSION)
def test_sampled_case_is_sound(case_id):
    record = fuzz.run_case(case_id, time_limit=QUICK_LIMIT)
    assert record["outcome"] in ("ok", "tie", "within_tolerance", "skipped"), \
        f"case {case_id} ({record['shape']}, {record['setting']}): {record}"


def test_sample_covers_settings_and_generators():
    cases = [fuzz.case(i) for i in SAMPLE]
    metas = [case.net.meta for case in cases]
    assert {case.settings for case in cases} == set(fuzz.SETTINGS)
    assert {m["weights"] for m in metas} == {"gaussian", "sparse", "heavy", "integer"}
    assert {m["scale"] for m in metas} == {"none", "whole", "first"}
    assert {m["box"] for m in metas} == {"point", "tiny", "small", "unit", "huge"}
    assert {m["decision"] for m in metas} == {"argmax", "sigmoid"}
    assert {m["size"] for m in metas} == {"small", "medium", "wide_input"}
    assert any("shift_target" in m for m in metas) and any(m["modifiers"] for m in metas)
    assert min(m["scale_exponent"] for m in metas) <= -40 and max(m["scale_exponent"] for m in metas) >= 10


def test_case_reruns_from_its_id():
    for case_id in SAMPLE[:5]:
        first, again = fuzz.case(case_id), fuzz.case(case_id)
        assert first.c == again.c and first.settings == again.settings and first.net.meta == again.net.meta
        assert np.array_equal(first.lo, again.lo) and np.array_equal(first.hi, again.hi)
        for a, b in zip(first.net.affines, again.net.affines):
            assert np.array_equal(a.dense_W(), b.dense_W()) and np.array_equal(a.b, b.b)


@pytest.mark.parametrize("case_id", TINY)
def test_reference_is_the_minimum_of_brute_force_sampling(case_id):
    net, lo, hi, c, _ = fuzz.case(case_id)
    ref = fuzz.reference(net, lo, hi, c)
    assert ref.optimal
    assert np.all(ref.x >= lo) and np.all(ref.x <= hi)
    assert ref.margin == min(fuzz.exact_margins(net, ref.x, c))   # a true value at a true point
    rng = np.random.default_rng(case_id)
    X = lo + (hi - lo) * rng.random((10_000, lo.size))
    X[:1000] = np.where(rng.random((1000, lo.size)) < 0.5, lo, hi)    # corners too
    margins = fuzz.float_margins(net, X, c)
    best, row = np.unravel_index(np.argmin(margins), margins.shape)
    sampled = min(fuzz.exact_margins(net, X[best], c))
    slack = Fraction(fuzz.tie_tolerance(ref))
    assert ref.margin <= sampled + slack
    # the LP over the best sample's phase pattern contains that sample, and the minimum is its optimum
    points, _ = fuzz.pattern_lp(net, lo, hi, c, int(row), fuzz._phases(net, X[best]))
    at_pattern = min(min(fuzz.exact_margins(net, x, c)) for x in np.atleast_2d(points))
    assert at_pattern <= sampled + slack
    assert abs(at_pattern - ref.margin) <= slack


@pytest.mark.parametrize("case_id", TINY)
def test_enumeration_and_milp_find_the_same_minimum(case_id):
    net, lo, hi, c, _ = fuzz.case(case_id)
    enumerated = fuzz.reference(net, lo, hi, c, method="enumerate")
    solved = fuzz.reference(net, lo, hi, c, method="milp")
    assert enumerated.optimal and solved.optimal
    assert abs(enumerated.margin - solved.margin) <= Fraction(fuzz.tie_tolerance(enumerated))


@pytest.mark.parametrize("k", [-46, -20, 20])
def test_reference_scales_with_the_network(k):
    """Scaled layer by layer by powers of two (logits times 2^k exactly), the minimum is 2^k times the same."""
    net, lo, hi, c, _ = fuzz.case(TINY[0])
    layers = [(a.dense_W().copy(), a.b.copy()) for a in net.affines]
    fuzz._scale(np.random.default_rng(0), layers, "whole", k)
    scaled = fuzz._network(layers, net.decision, False, net.name, {})
    assert np.array_equal(scaled.forward(lo), net.forward(lo) * 2.0 ** k)
    ref, ref_scaled = fuzz.reference(net, lo, hi, c), fuzz.reference(scaled, lo, hi, c)
    assert abs(ref_scaled.margin - ref.margin * Fraction(2) ** k) <= Fraction(fuzz.tie_tolerance(ref_scaled))


def test_exact_margins_agree_with_the_forward_pass_and_the_spec_matrix():
    for case_id in SAMPLE[:8]:
        net, lo, hi, c, _ = fuzz.case(case_id)
        assert np.array_equal(fuzz.spec_rows(net, c), net.spec_matrix(c))
        x = (lo + hi) / 2
        exact = np.array([float(m) for m in fuzz.exact_margins(net, x, c)])
        assert np.allclose(exact, net.margins(x, c), rtol=0, atol=1e-12 * fuzz.term_scale(net, x, c))


def _tiny_ref(robust: bool):
    """Return a tiny case with its reference whose minimum is > 0 (robust) or < 0."""
    for case_id in TINY:
        net, lo, hi, c, _ = fuzz.case(case_id)
        ref = fuzz.reference(net, lo, hi, c)
        if (ref.margin > 0) == robust and ref.margin != 0:
            return net, lo, hi, c, ref
    pytest.fail("no tiny case of that kind: extend TINY")


def test_checks_catch_planted_wrong_answers():
    net, lo, hi, c, ref = _tiny_ref(robust=False)
    assert fuzz.check(net, lo, hi, c, Verdict("robust", lower_bound=1.0), ref)["outcome"] == "wrong"
    assert fuzz.check(net, lo, hi, c, Verdict("unknown", lower_bound=float(ref.margin) / 2), ref)["outcome"] \
        == "bad_bound"
    assert fuzz.check(net, lo, hi, c, Verdict("unknown", lower_bound=float(ref.margin) * 2), ref)["outcome"] == "ok"
    assert fuzz.check(net, lo, hi, c, Verdict("not_robust", ref.x), ref)["outcome"] == "ok"
    outside = ref.x.copy()
    outside[np.argmax(hi - lo)] = hi.max() + 1.0
    assert fuzz.check(net, lo, hi, c, Verdict("not_robust", outside), ref)["outcome"] == "invalid_counterexample"

    net, lo, hi, c, ref = _tiny_ref(robust=True)
    assert fuzz.check(net, lo, hi, c, Verdict("robust", lower_bound=float(ref.margin) / 2), ref)["outcome"] == "ok"
    assert fuzz.check(net, lo, hi, c, Verdict("not_robust", ref.x), ref)["outcome"] == "invalid_counterexample"


def test_a_counterexample_below_the_reference_is_the_suites_own_failure():
    net, lo, hi, c, ref = _tiny_ref(robust=False)
    planted = fuzz.Reference(ref.x, Fraction(1), True, "planted", ref.scale, 0.0, spread=1.0)
    assert fuzz.check(net, lo, hi, c, Verdict("not_robust", ref.x), planted)["outcome"] == "reference_miss"


def test_counterexample_is_judged_in_exact_arithmetic():
    """logit = (x + 1) - 1: at x = 1e-17 the float forward pass gives 0 (a tie, class 0) but exactly it is > 0."""
    net = Network([Affine(np.array([[1.0]]), np.array([1.0])), ReLU(), Affine(np.array([[1.0]]), np.array([-1.0]))],
                  decision="sigmoid", input_shape=(1,))
    lo, hi, x = np.array([1e-17]), np.array([1.0]), np.array([1e-17])
    assert net.predict(x) == 0
    ref = fuzz.reference(net, lo, hi, 1)
    assert ref.margin == Fraction(1e-17)
    assert fuzz.check(net, lo, hi, 1, Verdict("not_robust", x), ref)["outcome"] == "invalid_counterexample"
    assert fuzz.check(net, lo, hi, 1, Verdict("robust", lower_bound=0.0), ref)["outcome"] == "tie"   # 1e-17 of 2
