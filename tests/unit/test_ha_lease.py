"""The lease's arithmetic: an active instance always fences itself before its grant ends."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carousel_gateway.ha.lease import LeaseKeeper, LeaseSettings, Role

SETTINGS = LeaseSettings(ttl_s=5.0, renew_s=1.0, margin_s=0.5)


def test_a_grant_makes_the_instance_active_until_its_local_deadline() -> None:
    keeper = LeaseKeeper(SETTINGS)
    assert keeper.tick(0.0) is Role.STANDBY and not keeper.renew_due(0.0)
    keeper.granted(epoch=3, sent_at=100.0)
    assert keeper.role is Role.ACTIVE and keeper.epoch == 3
    assert keeper.deadline == 104.5
    assert not keeper.renew_due(100.5) and keeper.renew_due(101.0)
    assert keeper.next_wakeup(100.2) == pytest.approx(0.8)
    keeper.granted(epoch=3, sent_at=101.0)  # renewed
    assert keeper.tick(105.4) is Role.ACTIVE
    assert keeper.tick(105.5) is Role.FENCED
    assert keeper.next_wakeup(106.0) is None and not keeper.renew_due(106.0)


def test_a_refused_renewal_fences_and_a_late_grant_does_not_revive() -> None:
    keeper = LeaseKeeper(SETTINGS)
    keeper.granted(epoch=1, sent_at=0.0)
    keeper.refused()
    assert keeper.role is Role.FENCED
    keeper.granted(epoch=1, sent_at=1.0)  # a renewal's reply that arrives too late
    assert keeper.tick(1.0) is Role.FENCED
    keeper.stood_down()
    assert keeper.role is Role.STANDBY and keeper.epoch is None
    keeper.granted(epoch=2, sent_at=10.0)  # a new take
    assert keeper.role is Role.ACTIVE and keeper.epoch == 2


def test_a_renewal_returning_another_epoch_is_a_bug_not_a_grant() -> None:
    keeper = LeaseKeeper(SETTINGS)
    keeper.granted(epoch=1, sent_at=0.0)
    with pytest.raises(ValueError, match="epoch 2"):
        keeper.granted(epoch=2, sent_at=1.0)


@pytest.mark.parametrize(
    ("ttl", "renew", "margin"), [(5, 5, 0.5), (5, 1, 5), (5, 1, 0), (5, 4.6, 0.5)]
)
def test_settings_that_would_fence_before_renewing_are_refused(ttl, renew, margin) -> None:
    with pytest.raises(ValueError):
        LeaseSettings(ttl_s=ttl, renew_s=renew, margin_s=margin)


@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0.0, max_value=3.0),  # time from the last send to this one
            st.floats(min_value=0.0, max_value=10.0),  # how long the request took to arrive
            st.booleans(),  # did the grant come back?
        ),
        min_size=1,
        max_size=30,
    ),
    st.floats(min_value=0.0, max_value=20.0),
)
def test_whenever_the_instance_thinks_it_is_active_the_database_grant_is_valid(
    requests: list[tuple[float, float, bool]], probe_after: float
) -> None:
    """The database stamps a grant at its ``now()``, after the request was sent (any
    latency): the instance's own deadline always comes before that grant's expiry."""
    keeper = LeaseKeeper(SETTINGS)
    sent = 0.0
    database_expiry = float("-inf")
    for gap, latency, granted in requests:
        sent += gap
        if granted and keeper.tick(sent + latency) is not Role.FENCED:
            database_expiry = sent + latency + SETTINGS.ttl_s
            keeper.granted(epoch=1, sent_at=sent)
        for now in (sent, sent + latency, sent + latency + probe_after):
            if keeper.tick(now) is Role.ACTIVE:
                assert now < database_expiry
