"""The hypothesis profile the suite runs under (tests/conftest.py): the same examples on every
run, and a failure that says how to replay it."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies import array


def test_every_run_draws_the_same_examples(request):
    """Under the default profile two runs of one property test see the same examples (with
    fresh draws, ten arrays of five floats would coincide by chance essentially never)."""
    chosen = request.config.getoption("hypothesis_profile")
    if chosen not in (None, "fixed"):
        pytest.skip(f"--hypothesis-profile={chosen}: fresh examples were asked for")
    runs = [[], []]
    for seen in runs:
        @settings(max_examples=10)
        @given(array((5,)))
        def draw(x):
            seen.append(x.tolist())
        draw()
    assert len(runs[0]) == 10
    assert runs[0] == runs[1]


def test_a_failure_prints_how_to_replay_it():
    """A failing property test's report carries the @reproduce_failure line (print_blob)."""
    @settings(max_examples=50)
    @given(st.integers(0, 1000))
    def below_ten(n):
        assert n < 10

    with pytest.raises(AssertionError) as failure:
        below_ten()
    notes = "\n".join(getattr(failure.value, "__notes__", []))
    assert "@reproduce_failure(" in notes, notes
