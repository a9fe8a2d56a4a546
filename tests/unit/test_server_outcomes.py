"""One table maps how a served request ended to its status, counter, label and log line."""

from __future__ import annotations

import dataclasses
import logging

import anyio
import anyio.lowlevel
import pytest

import aio_client as ac
from aio_client import CancelReason, current_token
from aio_client.server import ServerOutcome, ServerOutcomeKind, ServerStats
from aio_client.server._core import Rejection, ServerCore
from aio_client.server._outcomes import OUTCOMES, Ending, rejection

from .helpers import StatusExchange

STATS_FIELDS = {field.name for field in dataclasses.fields(ServerStats)}


def test_every_ending_has_one_row_counting_in_a_stats_field() -> None:
    """Each ending has a row; its counter is a ServerStats field and its status a real one."""
    assert set(OUTCOMES) == set(Ending)
    for ending, row in OUTCOMES.items():
        assert row.counter in STATS_FIELDS, ending
        assert isinstance(row.kind, ServerOutcomeKind), ending
        assert row.status is None or 400 <= row.status <= 599, ending
    # Every outcome label an observer can see is reachable from the table.
    assert {row.kind for row in OUTCOMES.values()} == set(ServerOutcomeKind)


def test_a_504_always_says_do_not_retry_and_a_refusal_comes_with_text() -> None:
    """Responses built from the table: 504 carries X-Do-Not-Retry, each has a body."""
    for ending, row in OUTCOMES.items():
        if row.status is None or row.status == 499:
            continue
        answer = rejection(row)
        assert answer.deliverable
        assert answer.body, ending
        assert (dict(answer.headers).get("x-do-not-retry") == "1") == (row.status == 504)
        assert not rejection(row, started=True).deliverable


async def test_a_token_cancelled_by_the_app_is_counted_and_labelled_as_cancelled() -> None:
    """An app cancelling a request's token: 503, counted in `cancelled` (not `shutdown`)."""
    seen: list[ServerOutcome] = []
    core = ServerCore(observer=seen.append)

    async def handler() -> int:
        token = current_token()
        assert token is not None
        token.cancel(CancelReason.EXPLICIT, "the app gave up")
        await _forever()
        return 200

    admission = core.admit((), method="GET")
    assert not isinstance(admission, Rejection)
    answer = await core.run(admission, StatusExchange(handler))
    assert isinstance(answer, Rejection)
    assert answer.status == 503
    assert b"cancelled" in answer.body
    assert core.stats.cancelled == 1
    assert core.stats.shutdown == 0
    assert [(o.outcome, o.status) for o in seen] == [(ServerOutcomeKind.CANCELLED, 503)]


@pytest.mark.parametrize(
    ("reason", "field", "status"),
    [
        (CancelReason.DEADLINE, "deadline_exceeded", 504),
        (CancelReason.CLIENT_DISCONNECTED, "client_disconnected", 499),
        (CancelReason.SHUTDOWN, "shutdown", 503),
    ],
)
async def test_the_count_the_status_and_the_label_agree_for_each_reason(
    reason: CancelReason, field: str, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Why the token fired decides the status, the stats counter and the observer's label."""
    seen: list[ServerOutcome] = []
    core = ServerCore(observer=seen.append)

    async def handler() -> int:
        token = current_token()
        assert token is not None
        token.cancel(reason, "test")
        await _forever()
        return 200

    admission = core.admit((), method="GET")
    assert not isinstance(admission, Rejection)
    with caplog.at_level(logging.INFO, logger="aio_client.server"):
        answer = await core.run(admission, StatusExchange(handler))
    assert isinstance(answer, Rejection)
    assert answer.status == status
    assert getattr(core.stats, field) == 1
    assert sum(getattr(core.stats, name) for name in STATS_FIELDS - {"requests"}) == 1
    assert [o.status for o in seen] == [status]
    assert seen[0].outcome is OUTCOMES[_ENDING[reason]].kind
    logged = [r.getMessage() for r in caplog.records]
    assert logged == (
        ["the client went away; its handler was cancelled (499)"] if status == 499 else []
    )


_ENDING = {
    CancelReason.DEADLINE: Ending.DEADLINE,
    CancelReason.CLIENT_DISCONNECTED: Ending.DISCONNECTED,
    CancelReason.SHUTDOWN: Ending.SHUTDOWN,
}


async def _forever() -> None:
    await anyio.sleep_forever()


async def test_an_apps_own_status_for_an_error_is_sent_even_an_unusual_one() -> None:
    """error_status may pick any status (499 included): it is answered, not taken for a hang-up."""

    async def handler() -> int:
        raise ac.RateLimitedError("slow down", retry_after=1.0)

    core = ServerCore(error_status=lambda exc: 499)
    admission = core.admit((), method="GET")
    assert not isinstance(admission, Rejection)
    answer = await core.run(admission, StatusExchange(handler))
    assert isinstance(answer, Rejection)
    assert answer.status == 499
    assert answer.deliverable
    assert core.stats.client_disconnected == 0


async def test_an_admission_has_every_field_and_a_token_like_one_made_by_hand() -> None:
    """admit() builds its Admission field by field: none may be missing, the token is complete."""
    core = ServerCore()
    admission = core.admit([("x-request-timeout", "2.5")], method="POST", scheme="https")
    assert not isinstance(admission, Rejection)
    values = {field.name: getattr(admission, field.name) for field in dataclasses.fields(admission)}
    assert values["budget"] == 2.5
    assert (values["method"], values["scheme"], values["holds_slot"]) == ("POST", "https", False)
    token = admission.token
    by_hand = ac.CancelToken(deadline=admission.deadline)
    for name in type(token).__slots__:
        if name not in ("__weakref__", "_id"):
            assert getattr(token, name) == getattr(by_hand, name), name
    assert token.deadline is admission.deadline
    assert admission.deadline.remaining() == pytest.approx(2.5, abs=0.1)


def test_the_completed_row_is_the_one_run_counts_inline() -> None:
    """run() counts a completed request without the table's count(): the row it stands for."""
    row = OUTCOMES[Ending.COMPLETED]
    assert (row.counter, row.log, row.status) == ("completed", None, None)


async def test_the_ambient_values_a_request_sets_have_every_field() -> None:
    """run() builds the request's ambient values field by field: none may be missing."""
    from aio_client._deadline import _Ambient, _ambient

    core = ServerCore()
    admission = core.admit([("x-request-timeout", "5"), ("x-request-priority", "low")])
    assert not isinstance(admission, Rejection)
    seen: list[dict[str, object]] = []

    async def handler() -> int:
        values = _ambient.get()
        seen.append({name: getattr(values, name) for name in _Ambient.__slots__})
        return 200

    assert await core.run(admission, StatusExchange(handler)) == 200
    assert seen == [
        {"deadline": admission.deadline, "priority": ac.Priority.LOW, "origin": admission}
    ]


async def test_the_admission_is_found_in_nested_ambient_blocks_and_gone_after() -> None:
    """current_admission() inside ambient() and shield() blocks, and None once the request ends."""
    from aio_client.server._core import current_admission

    core = ServerCore()
    admission = core.admit([("x-request-timeout", "5")])
    assert not isinstance(admission, Rejection)
    seen: list[object] = []

    async def handler() -> int:
        seen.append(current_admission())
        with ac.ambient(timeout=1.0):
            seen.append(current_admission())
            token = current_token()
            assert token is not None
            with token.shield(timeout=1.0):
                seen.append(current_admission())
        return 200

    assert current_admission() is None
    assert await core.run(admission, StatusExchange(handler)) == 200
    assert seen == [admission, admission, admission]
    assert current_admission() is None


async def test_a_request_served_inside_another_tokens_scope_sees_its_own_token() -> None:
    """Served in process under an outer token.scope(): current_token() is the request's."""
    core = ServerCore()
    outer = ac.CancelToken()
    seen: list[object] = []

    async def handler() -> int:
        seen.append(current_token())
        await anyio.lowlevel.checkpoint()
        seen.append(current_token())
        return 200

    admission = core.admit(())
    assert not isinstance(admission, Rejection)
    with outer.scope():
        assert await core.run(admission, StatusExchange(handler)) == 200
        assert current_token() is outer
    assert seen == [admission.token, admission.token]
    assert current_token() is None


@pytest.mark.parametrize(("wait", "header"), [(0.0, "1"), (0.2, "1"), (1.0, "1"), (1.2, "2")])
def test_a_refusals_retry_after_is_whole_seconds_rounded_up_and_never_zero(
    wait: float, header: str
) -> None:
    """A refusal with no wait of its own (a half-open breaker busy with its probe) still
    says 1: 0 would invite every client to retry at once."""
    answer = rejection(OUTCOMES[Ending.REFUSED], retry_after=wait)
    assert dict(answer.headers)["retry-after"] == header
