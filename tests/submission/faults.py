"""Fault injection for the Lambdas, at the one seam where spikebatch makes AWS clients.

:class:`Faults` counts every AWS call an invocation makes through ``spikebatch.aws`` (a
botocore ``before-call`` hook on each client it hands out) and, from a chosen call on,
makes every call fail, so the handler cannot clean up:

- ``die``: the call raises :class:`Died`, a ``BaseException``: the Lambda was killed there
  (a timeout, out of memory, a lost host). ``except Exception`` cannot catch it, and any
  AWS call a ``finally`` or ``except BaseException`` block tries dies too.
- ``fail``: the call raises AWS's own 503 ``ServiceUnavailable``; the handler lives on and
  sees every further call fail.

:func:`deliver` then plays Lambda's asynchronous retry schedule on a fake clock: the
first retry a minute after the failed attempt ended, the second two minutes after that,
then the on-failure destination. :class:`Throttle` answers SubmitJob at the HTTP level
(inside botocore, so its retry mode really runs) with 429s, or with a lost answer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any, Literal

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError, ReadTimeoutError

from spikebatch import aws

Mode = Literal["die", "fail"]
RETRY_DELAYS_S = (60.0, 120.0)  # Lambda: 1 min before the first retry, 2 min before the second


class Died(BaseException):
    """The invocation was killed at this AWS call; nothing after it runs."""


class FakeClock:
    """What the claim module reads as ``time``: sleeping moves the clock, nothing waits."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now
        self.on_sleep: Callable[[], None] | None = None

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        if self.on_sleep is not None:
            self.on_sleep()


@dataclass
class Faults:
    """Counts the current invocation's AWS calls; from call ``at`` on, each one fails."""

    at: int | None = None
    mode: Mode = "die"
    calls: list[str] = field(default_factory=list)
    interleave: Callable[[], None] | None = None
    """Run once, just before call ``at`` (instead of failing it): a concurrent invocation."""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _paused: bool = False

    def arm(self, at: int | None, mode: Mode = "die") -> None:
        self.at, self.mode, self.calls = at, mode, []

    def _before_call(self, model: Any, **_: Any) -> None:
        with self._lock:
            if self._paused:
                return
            self.calls.append(f"{model.service_model.service_id.hyphenize()}.{model.name}")
            n = len(self.calls)
            hit = self.at is not None and n >= self.at
            run_other = hit and self.interleave is not None
            if run_other:
                self._paused = True
        if run_other:
            other, self.interleave, self.at = self.interleave, None, None
            try:
                assert other is not None
                other()
            finally:
                self._paused = False
            return
        if not hit:
            return
        if self.mode == "die":
            raise Died(self.calls[-1])
        raise ClientError(
            {
                "Error": {"Code": "ServiceUnavailable", "Message": "injected fault"},
                "ResponseMetadata": {"HTTPStatusCode": 503},
            },
            model.name,
        )


def watch_clients(injector: Faults, monkeypatch: pytest.MonkeyPatch) -> Faults:
    """Make every client ``spikebatch.aws`` hands out report its calls to ``injector``."""
    real_client = aws.client

    def client(service: str, *, region: str | None = None) -> Any:
        made = real_client(service, region=region)
        made.meta.events.register(
            "before-call", injector._before_call, unique_id="spikebatch-faults"
        )
        return made

    monkeypatch.setattr(aws, "client", client)
    return injector


@dataclass
class Attempt:
    """One invocation of the handler: what it returned or how it ended."""

    outcome: Literal["ok", "died", "error"]
    result: Any = None
    error: str | None = None
    calls: list[str] = field(default_factory=list)


def deliver(
    invoke: Callable[[Any], Any],
    event: Any,
    *,
    clock: FakeClock,
    faults: Faults,
    first: tuple[int, Mode] | None = None,
    died_after_s: float = 0.0,
    retry_delays_s: tuple[float, ...] = RETRY_DELAYS_S,
) -> list[Attempt]:
    """One asynchronous delivery of ``event``, as Lambda makes it: up to 1 + len(retries)
    attempts, the first with ``first`` = (call number, mode) injected, the retries clean.

    ``died_after_s``: how long after its start a killed attempt ended (0: it crashed at
    once; the Lambda timeout: it hung until Lambda killed it).
    """
    attempts: list[Attempt] = []
    for number in range(1 + len(retry_delays_s)):
        faults.arm(*(first if number == 0 and first else (None, "die")))
        start = clock.now
        try:
            attempts.append(Attempt("ok", result=invoke(event)))
        except Died as exc:
            attempts.append(Attempt("died", error=f"killed at {exc}"))
            clock.now = max(clock.now, start + died_after_s)
        except Exception as exc:  # a function error: Lambda retries it
            attempts.append(Attempt("error", error=f"{type(exc).__name__}: {exc}"))
        attempts[-1].calls = list(faults.calls)
        if attempts[-1].outcome == "ok" or number == len(retry_delays_s):
            break
        clock.now += retry_delays_s[number]
    faults.arm(None)
    return attempts


def clean_run_calls(
    invoke: Callable[[Any], Any], event: Any, faults: Faults, undo: Callable[[], None]
) -> list[str]:
    """The AWS calls one fault-free invocation makes (then ``undo`` its effects)."""
    faults.arm(None)
    invoke(event)
    calls = list(faults.calls)
    undo()
    return calls


class _Body(BytesIO):
    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.read()


@dataclass
class Throttle:
    """SubmitJob answers at the HTTP level, inside botocore: ``throttled`` 429s in a row,
    then the real (moto) answer; or, with ``lose_answer``, the job is created and the
    answer lost (a read timeout, or a 500 when ``lose_answer == 500``)."""

    throttled: int = 0
    lose_answer: Literal["timeout", 500] | None = None
    attempts: int = 0
    sleeps: list[float] = field(default_factory=list)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import botocore.endpoint
        from moto.core.models import botocore_stubber

        batch = aws.client("batch")
        batch.meta.events.unregister("before-send", botocore_stubber)

        def send(event_name: str, request: Any, **kwargs: Any) -> Any:
            if not event_name.endswith(".SubmitJob"):
                return botocore_stubber(event_name, request, **kwargs)
            self.attempts += 1
            if self.throttled > 0:
                self.throttled -= 1
                body = b'{"__type": "TooManyRequestsException", "message": "Too Many Requests."}'
                headers = {"Content-Type": "application/json"}
                return AWSResponse(request.url, 429, headers, _Body(body))
            answer = botocore_stubber(event_name, request, **kwargs)  # the job is created
            if self.lose_answer == "timeout":
                self.lose_answer = None
                raise ReadTimeoutError(endpoint_url=request.url)
            if self.lose_answer == 500:
                self.lose_answer = None
                body = b'{"__type": "ServerException", "message": "Internal error"}'
                return AWSResponse(request.url, 500, {}, _Body(body))
            return answer

        batch.meta.events.register("before-send", send)

        real_time = botocore.endpoint.time

        class _NoWait:
            def __getattr__(self, name: str) -> Any:
                return getattr(real_time, name)

            def sleep(_, seconds: float) -> None:
                self.sleeps.append(seconds)

        monkeypatch.setattr(botocore.endpoint, "time", _NoWait())
