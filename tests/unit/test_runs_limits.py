"""A run's limits narrow the server's, never widen them."""

from __future__ import annotations

from server.runs.limits import reset_max_turns, run_max_turns, set_max_turns


def test_a_run_lowers_the_servers_turn_limit_but_cannot_raise_it() -> None:
    """``max_turns`` of a run applies below the server's ``max_turns`` and is capped by it above."""
    assert run_max_turns(25) == 25
    for asked, effective in ((3, 3), (1000, 25)):
        token = set_max_turns(asked)
        try:
            assert run_max_turns(25) == effective
        finally:
            reset_max_turns(token)
