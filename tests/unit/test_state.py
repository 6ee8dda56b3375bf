import itertools

import pytest

from gracehttp.errors import IllegalTransition
from gracehttp.state import TRANSITIONS, Lifecycle, State


def _at(state: State) -> Lifecycle:
    """A lifecycle walked along legal moves to `state`."""
    path = {
        State.NEW: [],
        State.STARTING: [State.STARTING],
        State.READY: [State.STARTING, State.READY],
        State.DRAINING: [State.STARTING, State.READY, State.DRAINING],
        State.STOPPING: [State.STARTING, State.READY, State.DRAINING, State.STOPPING],
        State.STOPPED: [State.STARTING, State.READY, State.DRAINING, State.STOPPING, State.STOPPED],
    }[state]
    lc = Lifecycle()
    for step in path:
        lc.to(step)
    return lc


@pytest.mark.parametrize(("old", "new"), list(itertools.product(State, State)))
def test_every_pair_is_allowed_or_raises(old: State, new: State) -> None:
    lc = _at(old)
    if new in TRANSITIONS[old]:
        lc.to(new)
        assert lc.state is new
    else:
        with pytest.raises(IllegalTransition):
            lc.to(new)
        assert lc.state is old


def test_table_covers_every_state_and_stopped_is_final() -> None:
    assert set(TRANSITIONS) == set(State)
    assert TRANSITIONS[State.STOPPED] == frozenset()


def test_readiness_is_derived_from_state_and_drained() -> None:
    lc = _at(State.READY)
    assert lc.is_ready
    lc.set_drained(True)
    assert not lc.is_ready
    lc.set_drained(False)
    assert lc.is_ready
    lc.to(State.DRAINING)
    assert not lc.is_ready
    assert lc.is_shutting_down


def test_listeners_see_each_transition() -> None:
    seen = []
    lc = Lifecycle()
    lc.on_change(lambda old, new: seen.append((old, new)))
    lc.to(State.STARTING)
    lc.to(State.READY)
    assert seen == [(State.NEW, State.STARTING), (State.STARTING, State.READY)]
