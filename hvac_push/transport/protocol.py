"""The Autobahn protocol: the handshake hook, client commands, and per-client delivery state.

Subclass L{PushServerProtocol} to extend the server: override
L{PushServerProtocol.acceptHandshake} for custom admission, or add names to
C{customMessageTypes} and override L{PushServerProtocol.onCustomMessage} for
messages of your own.
"""

from __future__ import annotations

import socket
import time
from typing import Any, ClassVar, Sequence, cast

from autobahn.twisted.websocket import WebSocketServerProtocol
from autobahn.websocket.compress import PerMessageCompress
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet import tcp
from twisted.internet.error import AlreadyCalled, AlreadyCancelled
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.logger import Logger

from hvac_push.analytics.alarms import NotShelvable, UnknownAlarm, UnknownPoint
from hvac_push.transport import wire
from hvac_push.transport.auth import ALL, AuthError, Permissions
from hvac_push.transport.cov_filter import CovFilter
from hvac_push.transport.interface import ClientHost
from hvac_push.transport.lean import defer_autobahn_debug_formatting, release_handshake_state
from hvac_push.transport.store_answers import HistoryQueries, answer_after_journal
from hvac_push.transport.limits import ABUSIVE, ACCEPT, POLICY_VIOLATION, TOKEN_EXPIRED, TRY_AGAIN_LATER, MessageGate
from hvac_push.transport.sockets import bound_send_buffer
from hvac_push.transport.streaming import STREAM_THRESHOLD, FragmentWriter, LazyFragments, SharedMessage
from hvac_push.core.points import EVERYTHING, CovRule, Pattern, Subscription


defer_autobahn_debug_formatting()


class PushServerProtocol(WebSocketServerProtocol):
    """One WebSocket client: its subscription, the version it last got, and its pause flag."""

    _log = Logger()
    factory: ClientHost
    #: Set per connection by Autobahn from the factory's options (C{--max-message-size}).
    maxMessagePayloadSize: int

    #: Message types a subclass handles in L{onCustomMessage}.
    customMessageTypes: ClassVar[frozenset[str]] = frozenset()

    # Per-client state. What most clients never change is a class attribute until it is set (shared,
    # immutable values), which keeps each client's attribute dictionary in a smaller size (lean.py).
    #: The hub version this client's view is complete up to.
    last_version = 0
    #: Whether the fan-out skips this client: the transport paused it (it stopped
    #: reading), or a fragmented message is being written (L{hvac_push.transport.streaming}).
    paused: bool
    #: Set by the transport (producer API) while the client is not reading.
    reading_paused = False
    #: The fragmented message being written, and the replies waiting behind it.
    _fragments: FragmentWriter | None = None
    streaming = False
    #: The resume point the client asked for in its handshake query.
    resume_from: wire.Resume | None = None
    #: Change-of-value filters, only for clients that asked for them.
    cov: CovFilter | None
    #: The socket under a plain-TCP transport, written directly by L{write_frame}; else L{None}.
    direct_socket: socket.socket | None
    #: What this client may read and do (L{hvac_push.transport.auth}); everything when auth is off.
    permissions: Permissions = ALL
    _forbidden_query: tuple[Pattern, ...] = ()
    _gate: MessageGate | None = None
    _expiry: IDelayedCall | None = None
    _abort_call: IDelayedCall | None = None
    _deny_headers: list[tuple[str, str]] | None = None
    #: Ranged history requests in flight; made on the first one.
    _history_queries: HistoryQueries | None = None
    #: The C{id} of the client message being handled, echoed by L{reply}.
    request_id: wire.RequestId | None = None

    def __init__(self) -> None:
        super().__init__()
        self.subscription: Subscription = EVERYTHING
        # Read for every client in every delivery round: instance attributes (see lean.HOT_ATTRIBUTES).
        self.paused = False
        self.cov = None
        self.direct_socket = None

    # -- handshake ----------------------------------------------------------

    def onConnect(self, request: ConnectionRequest) -> str | None:
        """Admit or refuse before the upgrade; unexpected errors become HTTP 500, logged."""
        try:
            return self._admit(request)
        except ConnectionDeny as deny:
            self.factory.note_denied(deny.code)
            raise
        except Exception:
            self._log.failure("handshake from {peer} failed", peer=self.peer)
            self.factory.note_denied(ConnectionDeny.INTERNAL_SERVER_ERROR)
            raise ConnectionDeny(ConnectionDeny.INTERNAL_SERVER_ERROR, "internal server error")

    def _admit(self, request: ConnectionRequest) -> str | None:
        factory = self.factory
        if not factory.origin_allowed(request.origin):
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN, "origin not allowed")
        if factory.at_capacity():
            raise ConnectionDeny(ConnectionDeny.SERVICE_UNAVAILABLE, "server is at its connection limit")
        self._admit_address_and_token(request)
        query = wire.parse_query(self.http_request_uri.partition("?")[2])
        try:
            patterns = wire.query_patterns(query)
            self.resume_from = wire.query_resume(query)
        except wire.WireError as e:
            raise ConnectionDeny(ConnectionDeny.BAD_REQUEST, e.detail) from None
        if patterns is not None:
            self.subscription = Subscription.of(patterns)
        self._narrow_to_permissions(patterns)
        self.acceptHandshake(request)
        if wire.SUBPROTOCOL in request.protocols:
            return wire.SUBPROTOCOL
        return None

    def acceptHandshake(self, request: ConnectionRequest) -> None:
        """Hook: raise C{ConnectionDeny(status, reason)} to refuse this client.

        Called after the built-in origin, capacity and query checks. The
        default accepts everyone.
        """

    # -- life cycle ---------------------------------------------------------

    def connectionMade(self) -> None:
        super().connectionMade()
        # Behind twisted.web the HTTP channel is still the transport's producer;
        # take that role so that a full send buffer pauses *this* client.
        transport: Any = self.transport
        if getattr(transport, "producer", None) is not None:
            transport.unregisterProducer()
        # A small, fixed send buffer: a client that stops reading is paused
        # after kilobytes instead of the megabytes Linux autotuning allows.
        bound_send_buffer(transport, self.factory.limits.send_buffer)
        transport.registerProducer(self, True)
        self.factory.connection_made(self)

    def onOpen(self) -> None:
        self.streaming = True
        transport: Any = self.transport
        if (
            type(transport) is tcp.Server
            and self._perMessageCompress is None
            and not getattr(self, "logOctets", False)
            and not getattr(self, "trackTimings", False)
        ):
            self.direct_socket = transport.socket
        self.factory.client_opened(self)
        self.resume(self.resume_from)
        self._start_guards()
        release_handshake_state(self)

    def resume(self, resume: wire.Resume | None) -> None:
        """Bring the client up to date: changes since its version, or a full snapshot.

        With the hub's epoch and a version it knows, the client gets one
        C{update} of exactly what changed (computed from per-point versions,
        so any version works). Anything else gets a C{snapshot}, marked
        C{resync} when a resume was asked for.
        """
        hub = self.factory.hub
        alarms = self.factory.alarms
        usable = resume is not None and resume.epoch == hub.epoch and resume.since <= hub.version
        if resume is not None and usable:
            self.reply(wire.encode_update(hub.epoch, hub.version, hub.changed_since(resume.since, self.subscription)))
            if alarms is not None:
                self.replay_alarms(resume.alarm_seq)
        elif self._shared_opening(resync=resume is not None):
            return
        else:
            points = hub.points(self.subscription)
            self.reply(
                wire.encode_snapshot(
                    hub.epoch,
                    hub.version,
                    points,
                    resync=resume is not None,
                    alarms=None if alarms is None else alarms.current(self.may_see),
                    alarm_seq=None if alarms is None else alarms.seq,
                )
            )
            if self.cov is not None:
                self.cov.record(points, self.factory.now())
        self.last_version = hub.version

    def _shared_opening(self, resync: bool) -> bool:
        """The common first snapshot, encoded and framed once for everyone who opens within a second.

        See L{hvac_push.transport.snapshots}: for full read permission and no
        COV filter only (the opening, which answers no request). C{resync}:
        the client asked to resume from another epoch, as every client does
        after a server restart. Returns whether it was sent.
        """
        cache = getattr(self.factory, "snapshots", None)
        if cache is None or self.cov is not None or not self.permissions.everything:
            return False
        hub = self.factory.hub
        alarms = self.factory.alarms
        seq = None if alarms is None else alarms.seq
        # A resync answers a resume: it must be current, not a second old (those sharing one turn still share it).
        found = cache.get(self.subscription, seq, resync, version=hub.version if resync else None)
        if found is None:
            payload = wire.encode_snapshot(
                hub.epoch,
                hub.version,
                hub.points(self.subscription),
                resync=resync,
                alarms=None if alarms is None else alarms.current(self.may_see),
                alarm_seq=seq,
            )
            found = (hub.version, SharedMessage(payload, self.factory.prepareMessage))
            cache.put(self.subscription, seq, *found, resync=resync)
        shared: SharedMessage = found[1]
        self.last_version = found[0]
        if shared.large and self.fragments_allowed():
            self._start_fragments(shared.frames())
        else:
            self.send_prepared(shared.prepared())
        if found[0] < hub.version:
            self.factory.wake()  # what changed since the shared snapshot, on the next turn
        return True

    def replay_alarms(self, after_seq: int | None) -> None:
        """Send the alarm transitions after C{after_seq}, or the current list if the ring is too short."""
        alarms = self.factory.alarms
        if alarms is None:
            return
        replay = None if after_seq is None else alarms.replay(after_seq)
        if replay is None:
            self.send_bytes(wire.encode_alarm_list(alarms.seq, alarms.current(self.may_see)))
            return
        for seq, alarm in replay:
            if self.may_see(alarm.point):
                self.send_bytes(wire.encode_alarm(seq, alarm))

    def may_see(self, point_id: str) -> bool:
        """Whether alarms and history of C{point_id} concern this client."""
        return self.subscription.matches(point_id) and self.may_read(point_id)

    def may_read(self, point_id: str) -> bool:
        """Authorization hook: may this client read C{point_id} at all? (Its token's grant.)"""
        return self.permissions.allows(point_id)

    def may_ack(self) -> bool:
        """Authorization hook: may this client acknowledge alarms? (Its token's C{ack} claim.)"""
        return self.permissions.may_ack

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.streaming = False
        self.direct_socket = None
        self._drop_fragments()
        self._cancel_timers()
        self.factory.client_closed(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.streaming = False
        self.direct_socket = None
        self._drop_fragments()
        self._cancel_timers()
        self.factory.connection_lost(self)
        super().connectionLost(reason)
        self._cancel_autobahn_timers()

    # -- IPushProducer: the transport tells us when the client stops reading --

    def pauseProducing(self) -> None:
        self.reading_paused = self.paused = True
        self.factory.guard.client_paused(self)

    def resumeProducing(self) -> None:
        if self.reading_paused:
            self.reading_paused = False
            self.factory.guard.client_resumed(self)
            if self._fragments is not None:
                self._write_fragments()
                return
            self.paused = False
            self.factory.wake()

    def stopProducing(self) -> None:
        self.reading_paused = self.paused = True
        self._drop_fragments()

    # -- client messages ----------------------------------------------------

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self._gate is not None and not self._rate_allows():
            return
        if isBinary:
            self.send_error("binary_not_supported", "send JSON text frames")
            return
        try:
            request = wire.parse_request(payload, self.customMessageTypes)
            self.request_id = request.id
            command = request.command
            if isinstance(command, wire.Custom):
                self.onCustomMessage(command.type, command.message)
            else:
                self.handle(command)
        except wire.WireError as e:
            if e.request_id is not None:
                self.request_id = e.request_id
            self.send_error(e.code, e.detail)
        finally:
            self.request_id = None

    def handle(self, command: wire.Command) -> None:
        if isinstance(command, wire.Subscribe):
            self.subscribe(command.patterns, command.rule)
        elif isinstance(command, wire.Unsubscribe):
            self.unsubscribe(command.patterns)
        elif isinstance(command, wire.Ping):
            self.send_bytes(wire.encode_pong(command.id))
        elif isinstance(command, wire.Resume):
            self.resume(command)
        elif isinstance(command, wire.HistoryRequest):
            self.history(command)
        elif isinstance(command, wire.HistoryQuery):
            self.history_range(command)
        elif isinstance(command, wire.Ack):
            self.ack(command.alarm, command.comment)
        elif isinstance(command, wire.Auth):
            self.refresh_token(command.token)
        elif isinstance(command, (wire.Shelve, wire.Unshelve, wire.OutOfService)):
            self.manage_alarms(command)

    def history(self, request: wire.HistoryRequest) -> None:
        history = self.factory.history
        if history is None:
            raise wire.WireError("unavailable", "history is not enabled on this server")
        if not self.may_read(request.point):
            raise wire.WireError("forbidden", f"not allowed to read {request.point}")
        if request.point not in history and self.factory.hub.get(request.point) is None:
            raise wire.WireError("unknown_point", f"no point {request.point}")
        samples = history.samples(request.point, request.since, self.factory.now())
        self.reply(wire.encode_history(request.point, samples))

    def history_range(self, request: wire.HistoryQuery) -> None:
        """C{history} with C{points}: read from the store off the reactor thread (L{store_answers})."""
        if self._history_queries is None:
            self._history_queries = HistoryQueries(self)
        self._history_queries.start(self.factory.store, request, self.factory.now())

    def answer_recorded(self, payload: bytes) -> None:
        """Send an operator's confirmation once its transition is in the alarm journal (L{store_answers})."""
        answer_after_journal(self, self.factory.store, payload)

    def ack(self, alarm_id: str, comment: str = "") -> None:
        alarms = self.factory.alarms
        if alarms is None:
            raise wire.WireError("unavailable", "alarms are not enabled on this server")
        if not self.may_ack():
            raise wire.WireError("forbidden", "not allowed to acknowledge alarms")
        alarm = alarms.alarms.get(alarm_id)
        if alarm is None or not self.may_read(alarm.point):
            raise wire.WireError("unknown_alarm", f"no listed alarm {alarm_id}")
        alarms.ack(alarm_id, by=self.permissions.subject or "anonymous", comment=comment)
        self.answer_recorded(wire.encode_acked(alarm_id))

    def may_shelve(self) -> bool:
        """Authorization hook: may this client shelve alarms and take points out of service? (The C{shelve} claim.)"""
        return self.permissions.may_shelve

    def manage_alarms(self, command: wire.Shelve | wire.Unshelve | wire.OutOfService) -> None:
        """C{shelve}, C{unshelve}, C{out_of_service} (docs/alarms.md); every client sees the transition."""
        alarms = self.factory.alarms
        if alarms is None:
            raise wire.WireError("unavailable", "alarms are not enabled on this server")
        if not self.may_shelve():
            raise wire.WireError("forbidden", "not allowed to shelve alarms or take points out of service")
        by = self.permissions.subject or "anonymous"
        try:
            if isinstance(command, wire.OutOfService):
                if not self.may_read(command.point):
                    raise wire.WireError("forbidden", f"not allowed to read {command.point}")
                alarms.set_out_of_service(command.point, command.on, by=by, comment=command.comment)
                self.answer_recorded(wire.encode_out_of_service(command.point, command.on))
                return
            alarm = alarms.alarms.get(command.alarm)
            if alarm is None or not self.may_read(alarm.point):
                raise wire.WireError("unknown_alarm", f"no listed alarm {command.alarm}")
            if isinstance(command, wire.Shelve):
                shelved = alarms.shelve(command.alarm, command.minutes, by=by, comment=command.comment)
                self.answer_recorded(wire.encode_shelved(command.alarm, shelved.shelved_until))
            else:
                alarms.unshelve(command.alarm, by=by, comment=command.comment)
                self.answer_recorded(wire.encode_shelved(command.alarm, None))
        except UnknownPoint:
            raise wire.WireError("unknown_point", f"no point {getattr(command, 'point', '')}") from None
        except UnknownAlarm:
            raise wire.WireError("unknown_alarm", f"no listed alarm {getattr(command, 'alarm', '')}") from None
        except NotShelvable as e:
            raise wire.WireError("wrong_state", str(e)) from None

    def onCustomMessage(self, kind: str, message: dict[str, Any]) -> None:
        """Hook for the types listed in C{customMessageTypes}; raise L{wire.WireError} to reply with an error."""
        raise wire.WireError("unknown_type", f"unknown message type {kind!r}")

    def subscribe(self, patterns: tuple[Pattern, ...], rule: CovRule | None = None) -> None:
        """Add patterns (with an optional COV filter) and answer with a snapshot of newly matched points."""
        self.check_subscribe(patterns)
        before = self.subscription
        after = Subscription.of(before.patterns | set(patterns))
        self.subscription = after
        if rule is not None or (self.cov is not None and any(p in self.cov.rules for p in patterns)):
            if self.cov is None:
                self.cov = CovFilter()
            self.cov.set_rule(patterns, rule)
        hub = self.factory.hub
        added = [p for p in hub.points(after) if not before.matches(p.point_id)]
        if self.cov is not None:
            self.cov.record(added, self.factory.now())
        self.reply(wire.encode_snapshot(hub.epoch, hub.version, added))

    def unsubscribe(self, patterns: tuple[Pattern, ...]) -> None:
        """Drop patterns exactly as they were subscribed; unknown ones are an error."""
        unknown = [p.text for p in patterns if p not in self.subscription.patterns]
        if unknown:
            raise wire.WireError("not_subscribed", f"not subscribed to {', '.join(unknown)}")
        self.subscription = Subscription.of(self.subscription.patterns - set(patterns))
        if self.cov is not None:
            self.cov.set_rule(patterns, None)

    # -- sending ------------------------------------------------------------

    def send_error(self, code: str, detail: str) -> None:
        self.reply(wire.encode_error(code, detail))

    def reply(self, payload: bytes) -> None:
        """Send a direct answer to the client message being handled; it echoes that message's C{id}.

        Outside a message (the opening snapshot, alarm transitions) there is
        no C{id} and the payload goes as it is. Subclasses answer custom
        messages through here too.
        """
        self.send_bytes(wire.with_request_id(payload, self.request_id))

    def send_bytes(self, payload: bytes) -> None:
        """Send one text message built by L{wire} (per-client replies and alarm transitions).

        Behind a fragmented message it waits its turn; above
        L{STREAM_THRESHOLD} it goes in fragments itself (uncompressed
        connections; compressed ones get it whole).
        """
        if not self.streaming:
            return
        writer = self._fragments
        if writer is not None:
            if not writer.hold(payload):
                self.factory.guard_stats.slow_closes += 1
                self.close_with(TRY_AGAIN_LATER, "too many replies waiting: not reading")
            return
        if len(payload) > STREAM_THRESHOLD and self.fragments_allowed():
            self._start_fragments(LazyFragments(payload))
        else:
            self._send_whole(payload)

    def send_alarm_frame(self, seq: int, payload: bytes) -> None:
        """One alarm transition (C{seq}); behind a fragmented message it becomes a replay from the ring."""
        writer = self._fragments
        if writer is not None:
            writer.hold_alarms(seq)
        else:
            self.send_bytes(payload)

    def fragments_allowed(self) -> bool:
        """Whether a large message may go in fragments: yes unless compressed (deflate keeps the whole-message path)."""
        return self._perMessageCompress is None

    @property
    def sending_fragments(self) -> bool:
        """Whether a fragmented message is being written (no other data message may start)."""
        return self._fragments is not None

    def _start_fragments(self, frames: Sequence[bytes]) -> None:
        self._fragments = FragmentWriter(frames)
        self.paused = True  # the fan-out skips us until the last fragment is out
        self._write_fragments()

    def _write_fragments(self) -> None:
        """Write fragments while the transport takes them; after the last, send what waited and rejoin the fan-out."""
        writer = self._fragments
        if writer is None or self.reading_paused:
            return
        transport: Any = self.transport
        if not writer.write_some(transport.write, self._is_reading_paused):
            return
        self._fragments = None
        self.paused = self.reading_paused
        waiting = writer.waiting
        while waiting and self.streaming:
            self.send_bytes(waiting.popleft())
            behind = self._writer()
            if behind is not None:  # that reply went in fragments: the rest waits behind it
                behind.take_over(writer)
                return
        if writer.alarms_after is not None and self.streaming:
            # Replies first (their values are older), then what changed, then the alarms it raised.
            self.factory.catch_up(self)
            self.replay_alarms(writer.alarms_after)
        if self._writer() is None:
            self.factory.wake()  # what changed while the message was written, on the next turn

    def _writer(self) -> FragmentWriter | None:
        return self._fragments

    def _is_reading_paused(self) -> bool:
        return self.reading_paused

    def _drop_fragments(self) -> None:
        """Closing or gone: the rest of the message and what waited behind it are not sent."""
        self._fragments = None

    def _send_whole(self, payload: bytes) -> None:
        """C{sendMessage} without Autobahn's outgoing size check.

        Autobahn holds what it sends to C{maxMessagePayloadSize} too, but that
        limit (C{--max-message-size}) is for what clients send: a snapshot of
        a large plant must still arrive, as one message. The limit is lifted
        for this one synchronous call only; incoming frames are not parsed
        meanwhile.
        """
        limit = self.maxMessagePayloadSize
        if 0 < limit < len(payload):
            own = "maxMessagePayloadSize" in vars(self)  # else the factory's, from the class (lean.LeanProtocols)
            self.maxMessagePayloadSize = 0
            try:
                self.sendMessage(payload, isBinary=False)
            finally:
                if own:
                    self.maxMessagePayloadSize = limit
                else:
                    del self.maxMessagePayloadSize
        else:
            self.sendMessage(payload, isBinary=False)

    def write_frame(self, frame: bytes, prepared: Any) -> None:
        """Write one frame built once for many clients (the fan-out's hot path).

        An idle plain-TCP socket gets it with one non-blocking C{send}, which
        skips Twisted's per-connection write scheduling; whatever the kernel
        does not take goes through the transport, so order is kept and the
        producer API still pauses slow readers. TLS, compression, or data
        already queued go through L{send_prepared}.
        """
        sock = self.direct_socket
        if sock is not None:
            transport: Any = self.transport
            if not transport.dataBuffer and not transport._tempDataLen:
                try:
                    sent = sock.send(frame)
                except OSError:  # EAGAIN, or an error the transport will meet and close on
                    sent = 0
                if sent != len(frame):
                    transport.write(frame[sent:] if sent else frame)
                return
        self.send_prepared(prepared)

    def send_prepared(self, prepared: Any) -> None:
        """Send a message prepared once for many clients through the transport.

        The fan-out (L{hvac_push.transport.rounds.DeliveryRounds}) writes idle plain-TCP
        sockets directly and comes here for the rest: TLS, compression, or
        data already queued, where order requires the transport.
        """
        if not self.streaming:
            return
        if self._fragments is not None:  # not reached by the fan-out (it skips us); kept for order
            self.send_bytes(prepared.payload)
            return
        # Autobahn sets this in unannotated code, so mypy infers "always None".
        compress = cast("PerMessageCompress | None", self._perMessageCompress)
        if compress is None:
            self.transport.write(prepared.payloadHybi)  # type: ignore[union-attr]
        else:
            # What sendPreparedMessage does with compression on, minus the outgoing size check.
            self._send_whole(prepared.payload)

    # -- who may connect and what a client may cost (hvac_push.transport.auth, hvac_push.transport.limits)

    def _admit_address_and_token(self, request: ConnectionRequest) -> None:
        """Before the upgrade: the per-IP cap (HTTP 429), then the bearer token (HTTP 401)."""
        factory = self.factory
        transport: Any = self.transport
        host = getattr(transport.getPeer(), "host", None) if transport is not None else None
        if isinstance(host, str) and not factory.guard.admit(self, host):
            self._deny_headers = [("Retry-After", "10")]
            raise ConnectionDeny(429, "too many connections from this address")
        if factory.authenticator is not None:
            try:
                self.permissions = factory.authenticator.authenticate(
                    request.headers, request.protocols, self.http_request_uri.partition("?")[2]
                )
            except AuthError as e:
                challenge = 'Bearer realm="hvac-push"'
                if e.token_presented:
                    challenge += ', error="invalid_token"'
                self._deny_headers = [("WWW-Authenticate", challenge)]
                raise ConnectionDeny(401, e.reason) from None

    def _narrow_to_permissions(self, requested: tuple[Pattern, ...] | None) -> None:
        """Fit the handshake's subscription to the grant.

        No C{points=} means everything the token may read; requested patterns
        it does not cover are dropped here and reported (C{forbidden}) on open.
        """
        cap = self.factory.limits.max_subscriptions
        if requested is not None and cap and len(set(requested)) > cap:
            raise ConnectionDeny(ConnectionDeny.BAD_REQUEST, f"at most {cap} patterns per connection")
        permissions = self.permissions
        if permissions.everything:
            return
        if requested is None:
            self.subscription = permissions.subscription()
        else:
            allowed, self._forbidden_query = permissions.split(requested)
            self.subscription = Subscription.of(allowed)

    def failHandshake(self, reason: str, code: int = 400, responseHeaders: Any = None) -> None:
        # Adds the headers a refusal calls for (WWW-Authenticate on 401, Retry-After on 429).
        headers, self._deny_headers = self._deny_headers, None
        super().failHandshake(reason, code, responseHeaders or headers)

    def _start_guards(self) -> None:
        """On open: the message-rate gate, the close at token expiry, and the report of forbidden query patterns."""
        factory = self.factory
        limits = factory.limits
        if limits.client_rate:
            self._gate = MessageGate(limits.client_rate, limits.client_burst, factory.reactor.seconds())
        self._schedule_expiry()
        if self._forbidden_query:
            forbidden, self._forbidden_query = self._forbidden_query, ()
            factory.guard_stats.forbidden += 1
            self.send_error("forbidden", "not allowed to read " + ", ".join(p.text for p in forbidden))

    def _schedule_expiry(self) -> None:
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = None
        expires = self.permissions.expires
        if expires is not None:
            # exp is wall-clock time; the delay runs on the factory's reactor.
            delay = max(0.0, expires - time.time())
            self._expiry = self.factory.reactor.callLater(delay, self._token_expired)

    def _token_expired(self) -> None:
        self._expiry = None
        self.factory.guard_stats.expired_closes += 1
        self.close_with(TOKEN_EXPIRED, "token expired")

    def refresh_token(self, token: str) -> None:
        """C{{"type":"auth","token":...}}: replace this connection's grant and expiry.

        Subscribed patterns the new grant no longer covers are dropped and
        reported (C{forbidden}); a token that does not verify changes nothing.
        """
        authenticator = self.factory.authenticator
        if authenticator is None:
            raise wire.WireError("bad_message", "authentication is not enabled on this server")
        try:
            permissions = authenticator.verify(token)
        except AuthError as e:
            raise wire.WireError("unauthorized", e.reason) from None
        self.permissions = permissions
        current = sorted(self.subscription.patterns, key=lambda p: p.text)
        kept, dropped = permissions.split(current)
        if dropped:
            self.subscription = Subscription.of(kept)
            if self.cov is not None:
                self.cov.set_rule(dropped, None)
        self._schedule_expiry()
        self.reply(
            wire.encode_authenticated(permissions.expires, [p.text for p in permissions.patterns], permissions.may_ack)
        )
        if dropped:
            self.send_error("forbidden", "no longer allowed to read " + ", ".join(p.text for p in dropped))

    def check_subscribe(self, patterns: tuple[Pattern, ...]) -> None:
        """Refuse a subscription outside the grant (C{forbidden}) or over the cap (C{too_many_subscriptions})."""
        forbidden = [p.text for p in patterns if not self.permissions.covers(p)]
        if forbidden:
            self.factory.guard_stats.forbidden += 1
            raise wire.WireError("forbidden", "not allowed to read " + ", ".join(forbidden))
        cap = self.factory.limits.max_subscriptions
        if cap:
            total = len(self.subscription.patterns | set(patterns))
            if total > cap:
                raise wire.WireError(
                    "too_many_subscriptions", f"at most {cap} patterns per connection (this would make {total})"
                )

    def _rate_allows(self) -> bool:
        """One token from the message bucket; refuse (C{rate_limited}) or, on continued abuse, close (1008)."""
        gate = self._gate
        if gate is None:
            return True
        if self._abort_call is not None:
            return False  # closing: read nothing more
        verdict = gate.admit(self.factory.reactor.seconds())
        if verdict == ACCEPT:
            return True
        stats = self.factory.guard_stats
        if verdict == ABUSIVE:
            stats.policy_closes += 1
            self.close_with(POLICY_VIOLATION, "message rate limit exceeded")
        else:
            stats.rate_limited += 1
            limits = self.factory.limits
            self.send_error(
                "rate_limited",
                f"over {limits.client_rate:g} messages per second (burst {limits.client_burst}); message dropped",
            )
        return False

    def onPing(self, payload: bytes) -> None:
        # WebSocket pings cost a pong each: they count against the message rate.
        if self._rate_allows():
            super().onPing(payload)

    def close_with(self, code: int, reason: str) -> None:
        """Close with any code (RFC ones included), then abort if the client is not gone within a grace period.

        The grace is Autobahn's C{closeHandshakeTimeout} (or 5 s), timed on
        the factory's reactor, so a client that stopped reading cannot hold
        the connection open.
        """
        if self._abort_call is not None:
            return
        if self.state == self.STATE_OPEN:
            self.send_close(code, reason)
        grace = getattr(self, "closeHandshakeTimeout", 0) or 5.0
        self._abort_call = self.factory.reactor.callLater(grace, self._abort)

    def _abort(self) -> None:
        self._abort_call = None
        transport: Any = self.transport
        if transport is not None and not getattr(transport, "disconnected", False):
            self.factory.guard_stats.aborted += 1
            transport.abortConnection()

    def sendCloseFrame(self, code: int | None = None, reasonUtf8: bytes | None = None, isReply: bool = False) -> None:
        """Every close frame goes through here (ours, the reply to a client's, protocol errors).

        RFC 6455 5.5.1: no data frame may follow a close frame, so this client
        stops receiving first: it leaves the fan-out, and L{write_frame} and
        L{send_bytes} see it as gone (no check is added per frame).
        """
        self._stop_sending()
        super().sendCloseFrame(code=code, reasonUtf8=reasonUtf8, isReply=isReply)

    def dropConnection(self, abort: bool = False) -> None:
        """Dropping the connection without a close frame ends sending just the same."""
        self._stop_sending()
        super().dropConnection(abort)

    def _stop_sending(self) -> None:
        self.streaming = False
        self.direct_socket = None
        self._drop_fragments()
        self.factory.client_closed(self)

    def send_close(self, code: int, reason: str) -> None:
        """Start the close handshake with any code, RFC ones included (Autobahn's C{sendClose} refuses those)."""
        self.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8")[:123], isReply=False)

    def abort(self) -> None:
        """Drop the connection now, without a close handshake (shutdown past its drain timeout)."""
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()

    #: Autobahn's timers that its own connectionLost leaves pending: above all the close-handshake
    #: timeout when a client drops TCP instead of answering our close frame. Left alone, they fire
    #: seconds after the connection is gone and keep the protocol alive until then.
    _AUTOBAHN_TIMERS = ("openHandshakeTimeoutCall", "closeHandshakeTimeoutCall", "serverConnectionDropTimeoutCall")

    def _cancel_autobahn_timers(self) -> None:
        for name in self._AUTOBAHN_TIMERS:
            call = getattr(self, name, None)
            if call is None:
                continue
            setattr(self, name, None)
            try:
                call.cancel()
            except (AlreadyCalled, AlreadyCancelled, ValueError):  # ValueError: a batched call already run
                pass

    def _cancel_timers(self) -> None:
        for call in (self._expiry, self._abort_call):
            if call is not None and call.active():
                call.cancel()
        self._expiry = None

