"""L{Mirror}: a live local copy of the points a client subscribes to, over asyncio.

One connection at a time; when it drops, the mirror reconnects with backoff
and resumes (C{?since=V&epoch=E&alarm_seq=S}), so it misses nothing, and
replaces everything when the server answers with a resync (another epoch).
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import logging
import random
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import Any, Awaitable, Callable, Generic, Iterable, Literal, Mapping, TypeVar, Union
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.typing import Subprotocol

from hvac_push.client.errors import AuthenticationError, ClientError, ConnectionLost, HandshakeError, ServerError
from hvac_push.client.model import Alarm, AlarmChange, Filter, PointChange, PointState, Value
from hvac_push.client.state import MirrorState

log = logging.getLogger("hvac_push.client")

SUBPROTOCOL = "hvac-push.v1"
#: The server takes at most this many patterns per subscribe message.
PATTERNS_PER_MESSAGE = 100
#: Query keys the mirror sets itself; the same keys in the given URL are replaced.
_OWN_QUERY_KEYS = {"points", "since", "epoch", "alarm_seq", "token"}

TokenSource = Union[str, Callable[[], Union[str, Awaitable[str]]], None]
#: Where the token goes: the C{Authorization} header, a C{bearer.<token>} subprotocol, or C{?token=}.
TokenVia = Literal["header", "subprotocol", "query"]


@dataclass(frozen=True, slots=True)
class Connected:
    """The mirror is connected; C{resumed} when it picked up where it left off (no resync)."""

    url: str
    resumed: bool


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The connection closed (C{code} and C{reason} of the close frame, when there was one)."""

    code: int | None
    reason: str
    reconnecting: bool


@dataclass(frozen=True, slots=True)
class ServerNotice:
    """An C{error} message that answered no request of this client (e.g. C{forbidden} patterns at connect)."""

    code: str
    detail: str


Event = Union[PointChange, AlarmChange, Connected, Disconnected, ServerNotice]
T = TypeVar("T")


class Stream(Generic[T]):
    """An async iterator fed by the mirror; ends when the mirror closes, raises if it fails."""

    def __init__(self, owner: Mirror, kind: Literal["changes", "alarms", "events"]) -> None:
        self._owner = owner
        self.kind = kind
        self._items: dict[object, Any] = {}
        self._keys = itertools.count()
        self._wakeup = asyncio.Event()
        self._ended = False

    def push(self, item: Any) -> None:
        if isinstance(item, PointChange) and self.kind == "changes":
            # A slow reader gets the newest state of each point, never a backlog;
            # C{previous} stays what it last saw.
            older = self._items.get(item.point_id)
            if isinstance(older, PointChange):
                item = PointChange(item.point_id, item.point, older.previous, item.resync or older.resync)
            self._items[item.point_id] = item
        else:
            self._items[next(self._keys)] = item
        self._wakeup.set()

    def end(self) -> None:
        self._ended = True
        self._wakeup.set()

    def __aiter__(self) -> Stream[T]:
        return self

    async def __anext__(self) -> T:
        while not self._items:
            if self._ended:
                self._owner._streams.discard(self)
                if self._owner.failure is not None:
                    raise self._owner.failure
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()
        key = next(iter(self._items))
        item: T = self._items.pop(key)
        return item

    async def aclose(self) -> None:
        """Stop receiving (a stream not iterated any more would otherwise keep collecting)."""
        self._owner._streams.discard(self)
        self._items.clear()
        self.end()


class Mirror:
    """A live copy of the points (and their alarms) that match C{points}.

    Use it as C{async with Mirror(url, points=[...]) as plant:}. It connects,
    waits for the first snapshot, and keeps C{plant.points} and
    C{plant.alarms} current until it is closed. Follow changes with
    C{async for change in plant.changes()}, or register callbacks with
    L{on_change}, L{on_alarm} and L{on_event}.

    @param url: C{ws://host:port/ws} or C{wss://...}.
    @param points: subscription patterns (MQTT wildcards, docs/protocol.md); by
        default, what the server gives a client that names none: everything, or
        all that its token grants.
    @param filter: an optional change-of-value filter applied to C{points}.
    @param token: a bearer token, or a function (sync or async) returning a
        fresh one, called on every (re)connect.
    @param token_via: C{"header"} (C{Authorization: Bearer}), C{"subprotocol"}
        (C{bearer.<token>}, as browsers do) or C{"query"} (C{?token=}, the last resort).
    @param reconnect: reconnect and resume when the connection drops.
    @param backoff: first and largest delay between reconnect attempts, seconds.
    """

    def __init__(
        self,
        url: str,
        points: Iterable[str] | None = None,
        *,
        filter: Filter | None = None,
        token: TokenSource = None,
        token_via: TokenVia = "header",
        reconnect: bool = True,
        backoff: tuple[float, float] = (0.5, 30.0),
        open_timeout: float = 10.0,
        request_timeout: float = 10.0,
        ping_interval: float | None = 20.0,
        max_message_size: int | None = 2**28,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"not a WebSocket URL (ws://HOST:PORT/ws or wss://...): {url!r}")
        if token_via not in ("header", "subprotocol", "query"):
            raise ValueError("token_via must be 'header', 'subprotocol' or 'query'")
        self.url = url
        #: No patterns: the server's default subscription (everything, or what the token grants).
        self._server_default = points is None
        self._filters: dict[str, Filter | None] = {}
        for pattern in [points] if isinstance(points, str) else points or ():
            self._filters[pattern] = filter
        if points is not None and not self._filters:
            raise ValueError("points: at least one pattern, or None for the server's default")
        self._token = token
        self._token_via = token_via
        self._reconnect = reconnect
        self._backoff = backoff
        self._open_timeout = open_timeout
        self._request_timeout = request_timeout
        self._ping_interval = ping_interval
        self._max_message_size = max_message_size
        self._state = MirrorState()
        self._ws: ClientConnection | None = None
        self._runner: asyncio.Task[None] | None = None
        self._closing = False
        #: Request id to the answer it waits for (docs/protocol.md, Request ids).
        self._pending: dict[str, asyncio.Future[Mapping[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._streams: set[Stream[Any]] = set()
        self._change_callbacks: list[Callable[[PointChange], object]] = []
        self._alarm_callbacks: list[Callable[[AlarmChange], object]] = []
        self._event_callbacks: list[Callable[[Event], object]] = []
        self._callback_tasks: set[asyncio.Future[Any]] = set()
        self._applied = asyncio.Condition()
        self.failure: ClientError | None = None
        self.connections = 0

    # -- what the mirror holds -----------------------------------------------

    @property
    def points(self) -> Mapping[str, PointState]:
        """Point id to its current state (read-only, live)."""
        return MappingProxyType(self._state.points)

    @property
    def alarms(self) -> Mapping[str, Alarm]:
        """Alarm id to every listed alarm of the subscribed points (read-only, live)."""
        return MappingProxyType(self._state.alarms)

    @property
    def patterns(self) -> tuple[str, ...]:
        """The patterns this mirror asked for (besides the server's default, when it named none)."""
        return tuple(self._filters)

    @property
    def epoch(self) -> str | None:
        return self._state.epoch

    @property
    def version(self) -> int | None:
        """The hub version this mirror is up to date with."""
        return self._state.version

    @property
    def alarm_seq(self) -> int | None:
        return self._state.alarm_seq

    @property
    def connected(self) -> bool:
        return self._ws is not None

    @property
    def resyncs(self) -> int:
        """How many times the whole mirror was replaced (a new epoch, a server restart)."""
        return self._state.resyncs

    @property
    def resumes(self) -> int:
        """How many reconnects picked up exactly where the mirror left off."""
        return self._state.resumes

    # -- following changes ------------------------------------------------------

    def changes(self, current: bool = True) -> Stream[PointChange]:
        """Point changes, conflated per point for a slow reader.

        With C{current}, the stream starts with every point the mirror holds
        now (C{previous} None), so a consumer can build its own copy from it.
        """
        return self._stream("changes", current)

    def alarm_changes(self, current: bool = True) -> Stream[AlarmChange]:
        """Alarm transitions, every one, in order; with C{current}, the listed alarms first."""
        return self._stream("alarms", current)

    def events(self, current: bool = True) -> Stream[Event]:
        """Everything, not conflated: point and alarm changes, connects, disconnects, server notices."""
        return self._stream("events", current)

    def on_change(self, callback: Callable[[PointChange], object]) -> Callable[[], None]:
        """Call C{callback(change)} for every point change; returns a function that stops it."""
        return _register(self._change_callbacks, callback)

    def on_alarm(self, callback: Callable[[AlarmChange], object]) -> Callable[[], None]:
        return _register(self._alarm_callbacks, callback)

    def on_event(self, callback: Callable[[Event], object]) -> Callable[[], None]:
        return _register(self._event_callbacks, callback)

    async def wait_until(self, condition: Callable[[Mirror], bool], timeout: float | None = None) -> None:
        """Wait until C{condition(self)} holds (TimeoutError after C{timeout}).

        It is checked after every message, connect and disconnect.
        """

        async def check() -> None:
            async with self._applied:
                while not condition(self):
                    if self.failure is not None:
                        raise self.failure
                    await self._applied.wait()

        await asyncio.wait_for(check(), timeout)

    # -- life cycle -------------------------------------------------------------------

    async def __aenter__(self) -> Mirror:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect and apply the first snapshot.

        Raises L{AuthenticationError} or L{HandshakeError} when the server refuses,
        C{OSError} when nothing listens, C{TimeoutError} when nothing answers.
        """
        if self._runner is not None:
            raise RuntimeError("this Mirror was already started")
        self._ws = await self._open()
        self._runner = asyncio.get_running_loop().create_task(self._run(), name="hvac-push mirror")

    async def close(self) -> None:
        """Close the connection (code 1000) and end every stream."""
        self._closing = True
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()
        if self._runner is not None:
            self._runner.cancel()
            try:
                await self._runner
            except asyncio.CancelledError:
                pass
        self._end_streams()

    # -- requests ------------------------------------------------------------------

    async def subscribe(self, patterns: Iterable[str], filter: Filter | None = None) -> None:
        """Add patterns (or change their filter); their points arrive before this returns."""
        wanted = list(patterns)
        for chunk in _chunks(wanted):
            await self._request({"type": "subscribe", "points": chunk, **(filter.to_wire() if filter else {})})
            for pattern in chunk:
                self._filters[pattern] = filter

    async def unsubscribe(self, patterns: Iterable[str]) -> None:
        """Remove patterns as they were subscribed; points no pattern covers leave the mirror.

        (On the server's default subscription, which the client cannot see,
        points stay until a resync.)
        """
        for chunk in _chunks(list(patterns)):
            await self._request({"type": "unsubscribe", "points": chunk}, answered=False)
            for pattern in chunk:
                self._filters.pop(pattern, None)
        if not self._server_default:
            self._dispatch(self._state.keep_only(self._filters))

    async def ack(self, alarm_id: str, comment: str = "") -> None:
        """Acknowledge an alarm (C{comment} goes into the journal); the transition arrives as an alarm change."""
        await self._request({"type": "ack", "alarm": alarm_id, **({"comment": comment} if comment else {})})

    async def shelve(self, alarm_id: str, minutes: float, comment: str = "") -> float | None:
        """Shelve an alarm for C{minutes} (the server caps it); returns when the shelve ends, in epoch seconds.

        Needs the token's C{shelve} claim; the transition arrives as an alarm change.
        """
        answer = await self._request(
            {"type": "shelve", "alarm": alarm_id, "minutes": minutes, **({"comment": comment} if comment else {})}
        )
        until = answer.get("until")
        return float(until) if isinstance(until, (int, float)) else None

    async def unshelve(self, alarm_id: str, comment: str = "") -> None:
        """End a shelve now."""
        await self._request({"type": "unshelve", "alarm": alarm_id, **({"comment": comment} if comment else {})})

    async def out_of_service(self, point_id: str, on: bool = True, comment: str = "") -> None:
        """Take a point's alarms out of service (C{on}) or put them back."""
        await self._request(
            {"type": "out_of_service", "point": point_id, "on": on, **({"comment": comment} if comment else {})}
        )

    async def history(self, point_id: str, since: float = 0.0) -> list[tuple[float, Value]]:
        """The server's recent samples of a point with C{ts >= since}, oldest first."""
        answer = await self._request({"type": "history", "point": point_id, "since": since})
        samples = answer.get("samples")
        return [
            (float(s[0]), s[1])
            for s in (samples if isinstance(samples, list) else [])
            if isinstance(s, list) and len(s) >= 2 and isinstance(s[0], (int, float))
        ]

    async def ping(self) -> float:
        """Round trip to the server through its message handling, in seconds."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        await self._request({"type": "ping"})
        return loop.time() - started

    async def authenticate(self, token: str) -> Mapping[str, Any]:
        """Send a fresh token before the current one expires; it is also used for reconnects.

        Returns the server's C{authenticated} answer (new expiry and grant).
        """
        answer = await self._request({"type": "auth", "token": token})
        self._token = token
        return answer

    async def _request(self, message: dict[str, Any], *, answered: bool = True) -> Mapping[str, Any]:
        """Send C{message} with an C{id} of its own and wait for the answer echoing it, or the error.

        The server echoes the C{id} on every direct answer, so several
        requests may be in flight. A request with no answer on success
        (C{unsubscribe}) is followed by a C{ping} with the same C{id}: the
        server answers in order, so its C{pong} means "done", and an error
        before it is the request's.
        """
        ws = self._ws
        if ws is None:
            raise self.failure or ConnectionLost("not connected (reconnecting)")
        request_id = f"c{next(self._ids)}"
        answer: asyncio.Future[Mapping[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = answer
        try:
            await ws.send(json.dumps({**message, "id": request_id}))
            if not answered:
                await ws.send(json.dumps({"type": "ping", "id": request_id}))
            return await asyncio.wait_for(answer, self._request_timeout)
        except ConnectionClosed:
            raise ConnectionLost("the connection closed before the answer") from None
        finally:
            self._pending.pop(request_id, None)

    # -- the connection ---------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._follow()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug must end the streams, not leave them waiting forever
            log.exception("hvac-push: the mirror stopped")
            self._fail(ClientError(f"the mirror stopped: {e!r}"))

    async def _follow(self) -> None:
        """Read, and on a drop reconnect with backoff, until closed or refused for good."""
        attempt = 0
        while True:
            ws = self._ws
            if ws is not None:
                code, reason = await self._read(ws)
                self._ws = None
                self._fail_pending(ConnectionLost("the connection closed before the answer"))
                if self._closing:
                    return
                await self._notify_applied()
                self._emit_event(Disconnected(code, reason, self._reconnect))
                if not self._reconnect:
                    self._fail(ConnectionLost(f"connection closed ({code} {reason})".strip()))
                    return
                attempt = 0
            delay = min(self._backoff[1], self._backoff[0] * 2**attempt) * random.uniform(0.5, 1.0)
            attempt += 1
            await asyncio.sleep(delay)
            try:
                self._ws = await self._open()
                await self._notify_applied()
            except HandshakeError as e:
                if not e.retryable:
                    self._fail(e)
                    return
                log.warning("hvac-push: reconnect refused (%s), retrying", e)
                if e.retry_after:
                    await asyncio.sleep(max(0.0, e.retry_after - delay))
            except (OSError, asyncio.TimeoutError, ConnectionLost, InvalidHandshake) as e:
                log.info("hvac-push: reconnect failed (%s), retrying", e)
            except ClientError as e:
                self._fail(e)
                return

    async def _open(self) -> ClientConnection:
        """Connect, resuming when there is something to resume, and apply the first message."""
        resume = self._state.resume_point()
        query: dict[str, str] = {} if self._server_default else {"points": ",".join(self._filters)}
        if resume is not None:
            query["since"] = str(resume.version)
            query["epoch"] = resume.epoch
            if resume.alarm_seq is not None:
                query["alarm_seq"] = str(resume.alarm_seq)
        token = await self._current_token()
        headers: dict[str, str] = {}
        subprotocols = [Subprotocol(SUBPROTOCOL)]
        if token is not None:
            if self._token_via == "header":
                headers["Authorization"] = f"Bearer {token}"
            elif self._token_via == "subprotocol":
                subprotocols.append(Subprotocol(f"bearer.{token}"))
            else:
                query["token"] = token
        url = _with_query(self.url, query)
        try:
            ws = await connect(
                url,
                additional_headers=headers,
                subprotocols=subprotocols,
                open_timeout=self._open_timeout,
                ping_interval=self._ping_interval,
                max_size=self._max_message_size,
                # No permessage-deflate: the server's fan-out fast path sends pre-built frames.
                compression=None,
            )
        except InvalidStatus as e:
            raise _refusal(e, token is not None) from None
        except InvalidURI as e:
            raise ClientError(f"bad URL: {e}") from None
        try:
            first = await asyncio.wait_for(ws.recv(decode=True), self._open_timeout)
        except (ConnectionClosed, asyncio.TimeoutError) as e:
            await ws.close()
            raise ConnectionLost(f"no snapshot after the handshake ({type(e).__name__})") from None
        message = _decode(first)
        if message is None or message.get("type") not in ("snapshot", "update"):
            await ws.close()
            raise ConnectionLost(f"expected a snapshot first, got {str(first)[:100]!r}")
        self.connections += 1
        resumes = self._state.resumes
        self._dispatch(self._state.receive(message, opening=True))
        await self._notify_applied()
        self._emit_event(Connected(self.url, resumed=self._state.resumes > resumes))
        # Filters cannot go in the URL: set them again on every connection. The
        # patterns are already subscribed, so the answers hold no new points;
        # on the server's default subscription, patterns added later are sent
        # here too, and their answers hold the current state of their points.
        by_filter: dict[Filter | None, list[str]] = {}
        for pattern, rule in self._filters.items():
            if rule is not None or self._server_default:
                by_filter.setdefault(rule, []).append(pattern)
        try:
            for rule, patterns in by_filter.items():
                for chunk in _chunks(patterns):
                    await ws.send(json.dumps({"type": "subscribe", "points": chunk, **(rule.to_wire() if rule else {})}))
        except ConnectionClosed:
            raise ConnectionLost("the connection closed while subscribing") from None
        return ws

    async def _current_token(self) -> str | None:
        token = self._token
        if token is None or isinstance(token, str):
            return token
        fresh = token()
        return await fresh if inspect.isawaitable(fresh) else fresh

    async def _read(self, ws: ClientConnection) -> tuple[int | None, str]:
        """Apply messages until the connection closes; the close code and reason."""
        try:
            async for raw in ws:
                message = _decode(raw)
                if message is None:
                    log.warning("hvac-push: ignored a message that is not a JSON object: %.100r", raw)
                    continue
                self._answer(message)
                self._dispatch(self._state.receive(message, opening=False))
                await self._notify_applied()
        except ConnectionClosed:
            pass
        return ws.close_code, ws.close_reason or ""

    def _answer(self, message: Mapping[str, Any]) -> None:
        """Give a message to the request whose C{id} it echoes, if any; a server error without one is a notice."""
        kind = message.get("type")
        request_id = message.get("id")
        answer = self._pending.get(request_id) if isinstance(request_id, str) else None
        if answer is not None and not answer.done():
            if kind == "error":
                answer.set_exception(ServerError(str(message.get("error", "error")), str(message.get("detail", ""))))
            else:
                answer.set_result(message)
            return
        if kind == "error":
            self._emit_event(ServerNotice(str(message.get("error", "error")), str(message.get("detail", ""))))

    def _fail_pending(self, error: ClientError) -> None:
        for answer in self._pending.values():
            if not answer.done():
                answer.set_exception(error)

    def _fail(self, error: ClientError) -> None:
        log.error("hvac-push: giving up: %s", error)
        self.failure = error
        self._end_streams()
        asyncio.get_running_loop().create_task(self._notify_applied())

    async def _notify_applied(self) -> None:
        async with self._applied:
            self._applied.notify_all()

    # -- dispatch ---------------------------------------------------------------

    def _stream(self, kind: Literal["changes", "alarms", "events"], current: bool) -> Stream[Any]:
        stream: Stream[Any] = Stream(self, kind)
        if current and kind != "alarms":
            for point_id, point in self._state.points.items():
                stream.push(PointChange(point_id, point))
        if current and kind != "changes":
            for alarm_id, alarm in self._state.alarms.items():
                stream.push(AlarmChange(alarm_id, alarm))
        if self._closing or self.failure is not None:
            stream.end()
        else:
            self._streams.add(stream)
        return stream

    def _dispatch(self, changes: list[PointChange | AlarmChange]) -> None:
        for change in changes:
            if isinstance(change, PointChange):
                for on_change in list(self._change_callbacks):
                    self._call(on_change, change)
            else:
                for on_alarm in list(self._alarm_callbacks):
                    self._call(on_alarm, change)
            self._emit_event(change)

    def _emit_event(self, event: Event) -> None:
        for stream in list(self._streams):
            if (
                stream.kind == "events"
                or (stream.kind == "changes" and isinstance(event, PointChange))
                or (stream.kind == "alarms" and isinstance(event, AlarmChange))
            ):
                stream.push(event)
        for callback in list(self._event_callbacks):
            self._call(callback, event)

    def _call(self, callback: Callable[[Any], object], argument: object) -> None:
        try:
            result = callback(argument)
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._callback_tasks.add(task)
                task.add_done_callback(self._callback_done)
        except Exception:
            log.exception("hvac-push: a mirror callback failed")

    def _callback_done(self, task: asyncio.Future[Any]) -> None:
        self._callback_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("hvac-push: a mirror callback failed", exc_info=task.exception())

    def _end_streams(self) -> None:
        for stream in list(self._streams):
            stream.end()


def _register(callbacks: list[T], callback: T) -> Callable[[], None]:
    callbacks.append(callback)

    def remove() -> None:
        if callback in callbacks:
            callbacks.remove(callback)

    return remove


def _chunks(items: list[str]) -> list[list[str]]:
    return [items[i : i + PATTERNS_PER_MESSAGE] for i in range(0, len(items), PATTERNS_PER_MESSAGE)]


def _decode(raw: str | bytes) -> dict[str, Any] | None:
    try:
        message = json.loads(raw)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


def _with_query(url: str, ours: dict[str, str]) -> str:
    """C{url} with the mirror's query keys set; C{+} stays a wildcard, C{#} becomes C{%23}."""
    parts = urlsplit(url)
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in _OWN_QUERY_KEYS]
    query = "&".join(p for p in (urlencode(kept), "&".join(f"{k}={quote(v, safe='/+,')}" for k, v in ours.items())) if p)
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", query, ""))


def _refusal(error: InvalidStatus, had_token: bool) -> HandshakeError:
    response = error.response
    status = response.status_code
    reason = response.reason_phrase
    if status == 401:
        return AuthenticationError(status, reason, had_token)
    retry_after = response.headers.get("Retry-After")
    seconds = float(retry_after) if retry_after and retry_after.isdigit() else None
    return HandshakeError(status, reason, seconds)
