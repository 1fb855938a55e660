"""The server's quotas of long-lived streams (k3py/server/quota.py): each key holds at most the
limit, one more is the quota's 429 Status and leaves the counts as they were, other keys are
untouched, and a count goes back down however its holder ends (normally, an error, a task
cancelled while holding it), a key back at 0 being forgotten; and a stream's context entered as one of a key's
(`around`), never entered beyond the limit."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from k3py.api import errors
from k3py.server.quota import WHOLE_SERVER, Quota

pytestmark = pytest.mark.unit

SAYS = "at most 2 tails per user: stop following another first"


def test_a_key_holds_at_most_the_limit_and_others_are_untouched():
    quota = Quota(2, SAYS)
    with quota.hold("alice"), quota.hold("alice"):
        with pytest.raises(errors.StatusError) as e, quota.hold("alice"):
            pass
        assert (e.value.code, e.value.reason, e.value.message) == (429, "TooManyRequests", SAYS)
        with quota.hold("bob"):
            assert (quota.held("alice"), quota.held("bob"), len(quota)) == (2, 1, 2)
        assert (quota.held("bob"), len(quota)) == (0, 1)
    assert quota.held("alice") == 0 and len(quota) == 0  # nothing kept of a user gone
    with quota.hold("alice"):
        assert quota.held("alice") == 1


def test_without_a_key_one_count_is_kept_for_the_whole_server():
    quota = Quota(1, SAYS)
    with quota.hold():
        assert quota.held(WHOLE_SERVER) == 1
        with pytest.raises(errors.StatusError), quota.hold():
            pass
    assert quota.held() == 0 and len(quota) == 0


def test_an_error_inside_gives_the_count_back():
    quota = Quota(1, SAYS)
    with pytest.raises(ValueError), quota.hold("alice"):
        raise ValueError("the stream failed")
    assert len(quota) == 0


async def test_a_task_cancelled_while_holding_gives_the_count_back():
    quota = Quota(1, SAYS)
    holding = asyncio.Event()

    async def follow() -> None:
        with quota.hold("alice"):
            holding.set()
            await asyncio.Event().wait()  # a quiet stream: only a cancel ends it
    task = asyncio.create_task(follow())
    await holding.wait()
    assert quota.held("alice") == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(quota) == 0


async def test_a_context_is_entered_as_one_of_a_keys_and_not_beyond_the_limit():
    quota = Quota(1, SAYS)
    entered = []

    @contextlib.asynccontextmanager
    async def stream(name: str):
        entered.append(name)
        yield name
    async with quota.around("alice", stream("first")) as value:
        assert value == "first" and quota.held("alice") == 1
        with pytest.raises(errors.StatusError) as e:
            async with quota.around("alice", stream("second")):
                pass
        assert e.value.code == 429
    assert entered == ["first"] and len(quota) == 0
