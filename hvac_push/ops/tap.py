"""twistd integration: C{Options} parses and validates; C{makeService} assembles.

Every bad value is caught here and reported as a one-line usage error, so
twistd never starts half-configured or dies with a traceback.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, cast

from twisted.logger import Logger
from twisted.python import usage

from hvac_push.transport.tls import MODERN_CIPHERS
from hvac_push.transport.wsoptions import parse_ws_option

if TYPE_CHECKING:  # imported when called, to keep twistd's plugin scan light
    from hvac_push.ops.service import PushService
    from hvac_push.sources.simulator import SimulatorProducer

#: With authentication configured and no --listen: every interface, as before.
DEFAULT_LISTEN = "tcp:8080"
#: With no --listen and no authentication: this machine only (as mosquitto 2 does).
LOOPBACK_LISTEN = "tcp:8080:interface=127.0.0.1"
LOOPBACK_NOTE = (
    "No --listen and no authentication: listening on 127.0.0.1:8080, this machine only. "
    "To serve the network, give --listen tcp:8080 together with a token option "
    "(--auth-token-file, --auth-jwt-secret-file or --auth-jwt-public-key-file; docs/security.md)"
)


def _number(kind: type, name: str, low: float, high: float) -> Any:
    def coerce(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise usage.UsageError(f"--{name}: expected a number, got {text!r}") from None
        if not low <= value <= high:
            raise usage.UsageError(f"--{name}: must be between {low:g} and {high:g}, got {text}")
        return value

    coerce.coerceDoc = f"Between {_plain(low)} and {_plain(high)}."  # type: ignore[attr-defined]
    return coerce


def _plain(number: float) -> str:
    """C{4294967296}, not C{4.29497e+09}: bounds as people type them."""
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


def _choice(name: str, choices: tuple[str, ...]) -> Any:
    def coerce(text: str) -> str:
        if text not in choices:
            raise usage.UsageError(f"--{name}: expected one of {', '.join(choices)}, got {text!r}")
        return text

    coerce.coerceDoc = f"One of: {', '.join(choices)}."  # type: ignore[attr-defined]
    return coerce


def _broker_url(option: str, text: str) -> Any:
    """A C{--publish} or C{--subscribe} URL; its errors repeat it with the password hidden."""
    from hvac_push.ops.cluster import parse_broker_url

    try:
        return parse_broker_url(text)
    except ValueError as e:
        raise usage.UsageError(f"--{option}: {e}") from None


def _retention(text: str) -> Any:
    from hvac_push.store.url import parse_retention

    try:
        return parse_retention(text)
    except ValueError as e:
        raise usage.UsageError(f"--store-retention: {e}") from None


_retention.coerceDoc = "For example 7d,90d,5y."  # type: ignore[attr-defined]


def _select_json_logs(options: usage.Options) -> None:
    """Under twistd, make twistd's own C{--logger} the JSON observer (see L{hvac_push.ops.logs})."""
    from hvac_push.ops.logs import JSON_OBSERVER

    twistd = getattr(options, "parent", None)
    if twistd is None:
        return  # embedded: the host program owns logging
    if twistd.get("logger") not in (None, JSON_OBSERVER):
        raise usage.UsageError("--log-format json: twistd --logger already chooses the log observer; use one")
    if not twistd.get("nodaemon"):
        raise usage.UsageError("--log-format json writes to standard output: run twistd with -n")
    twistd["logger"] = JSON_OBSERVER


def _tls_ciphers(text: str) -> str:
    """An OpenSSL cipher string that selects at least one suite, or C{twisted} for Twisted's defaults."""
    if text != "twisted":
        from OpenSSL import SSL

        try:
            SSL.Context(SSL.TLS_METHOD).set_cipher_list(text.encode("ascii"))
        except (SSL.Error, UnicodeError):
            raise usage.UsageError(f"--tls-ciphers: OpenSSL selects no cipher from {text!r}") from None
    return text


_tls_ciphers.coerceDoc = "An OpenSSL cipher list, or 'twisted'."  # type: ignore[attr-defined]


#: Authentication and per-client limits (docs/security.md); 0 turns a limit off.
_SECURITY_PARAMETERS = [
    ["auth-jwt-secret-file", None, None, "Require a JWT signed with the HS256 secret in this file "
     "(at least 32 bytes)."],
    ["auth-jwt-public-key-file", None, None, "Require a JWT signed with the private half of this PEM "
     "public key (RSA: RS256, P-256: ES256)."],
    ["auth-jwt-algorithm", None, None, "The one JWT algorithm accepted (default: HS256 for a secret, "
     "the key's own for a public key).", _choice("auth-jwt-algorithm", ("HS256", "RS256", "ES256"))],
    ["auth-audience", None, None, "JWTs must carry this 'aud'."],
    ["auth-issuer", None, None, "JWTs must carry this 'iss'."],
    ["auth-token-file", None, None, "Require a static token listed (SHA-256 only) in this TOML file; "
     "make entries with python -m hvac_push.transport.auth hash."],
    ["max-message-size", None, 65536, "Largest client message in bytes; larger ones close the connection (1009).",
     _number(int, "max-message-size", 125, 16 * 1024 * 1024)],
    ["client-rate", None, 20.0, "Client messages per second per connection; over it they get "
     "'rate_limited' errors.", _number(float, "client-rate", 0, 100_000)],
    ["client-burst", None, 40, "Messages a client may send at once; more than this many refused "
     "messages close the connection (1008).", _number(int, "client-burst", 1, 1_000_000)],
    ["max-connections-per-ip", None, 100, "WebSocket connections from one IP beyond this get HTTP 429 "
     "(0: no limit; use 0 behind a reverse proxy).", _number(int, "max-connections-per-ip", 0, 1_000_000)],
    ["handshake-timeout", None, 10.0, "Seconds a new connection has to send its whole request "
     "before it is dropped.", _number(float, "handshake-timeout", 0.1, 300)],
    ["max-subscriptions", None, 256, "Patterns one connection may subscribe to.",
     _number(int, "max-subscriptions", 1, 100_000)],
    ["send-buffer", None, 65536, "SO_SNDBUF of client sockets in bytes, so slow readers are found "
     "early (0: kernel default).", _number(int, "send-buffer", 0, 64 * 1024 * 1024)],
    ["tls-ciphers", None, MODERN_CIPHERS, "Cipher suites for TLS 1.2 on ssl: listeners, as an OpenSSL list "
     "(TLS 1.3 is always allowed, TLS 1.0 and 1.1 never); 'twisted' keeps Twisted's defaults.", _tls_ciphers],
    ["slow-client-timeout", None, 30.0, "Seconds a client may stop reading before it is closed (1013); "
     "0: never.", _number(float, "slow-client-timeout", 0, 86_400)],
]


def _security(options: usage.Options) -> tuple[Any, Any]:
    """The authenticator and limits the options describe; a bad file is a one-line usage error.

    L{build_authenticator} assembles the authenticator; here the options are only
    checked for combinations that make no sense, and its errors are put on the
    option that caused them.
    """
    from hvac_push.transport.auth import build_authenticator
    from hvac_push.transport.limits import Limits

    token_file = options["auth-token-file"]
    secret, public = options["auth-jwt-secret-file"], options["auth-jwt-public-key-file"]
    if secret is not None and public is not None:
        raise usage.UsageError("--auth-jwt-secret-file and --auth-jwt-public-key-file: give one, not both")
    if secret is None and public is None:
        for name in ("auth-jwt-algorithm", "auth-audience", "auth-issuer"):
            if options[name] is not None:
                raise usage.UsageError(f"--{name}: needs --auth-jwt-secret-file or --auth-jwt-public-key-file")
    try:
        authenticator = build_authenticator(
            jwt_secret_file=secret, jwt_public_key_file=public, jwt_algorithm=options["auth-jwt-algorithm"],
            token_file=token_file, audience=options["auth-audience"], issuer=options["auth-issuer"],
        )
    except ValueError as e:
        # The token file's errors start with its path; every other one is about the JWT key.
        jwt_option = "--auth-jwt-secret-file" if secret is not None else "--auth-jwt-public-key-file"
        jwt_given = secret is not None or public is not None
        token_error = token_file is not None and (not jwt_given or str(e).startswith(f"{token_file}: "))
        raise usage.UsageError(f"{'--auth-token-file' if token_error else jwt_option}: {e}") from None
    try:
        limits = Limits(
            max_message_size=options["max-message-size"],
            client_rate=options["client-rate"],
            client_burst=options["client-burst"],
            max_connections_per_ip=options["max-connections-per-ip"],
            handshake_timeout=options["handshake-timeout"],
            max_subscriptions=options["max-subscriptions"],
            send_buffer=options["send-buffer"],
            slow_client_timeout=options["slow-client-timeout"],
        )
    except ValueError as e:
        raise usage.UsageError(f"limits: {e}") from None
    return authenticator, limits


class Options(usage.Options):
    synopsis = "[options]"
    #: Argument names for the generated reference (docs/configuration.md); others show VALUE.
    metavars = {
        "interval": "MS", "sim-units": "N", "sim-rate": "PER_S", "sim-seed": "SEED", "max-connections": "N",
        "drain-timeout": "SECONDS", "port-file": "PATH", "log-format": "FORMAT", "listen": "ENDPOINT", "allow-origin": "ORIGIN",
        "ws-option": "KEY=VALUE", "config": "PATH", "publish": "URL", "subscribe": "URL",
        "auth-jwt-secret-file": "PATH", "auth-jwt-public-key-file": "PATH", "auth-jwt-algorithm": "ALG",
        "auth-token-file": "PATH", "auth-audience": "AUD", "auth-issuer": "ISS", "max-message-size": "BYTES",
        "client-rate": "PER_S", "client-burst": "N", "max-connections-per-ip": "N", "handshake-timeout": "SECONDS",
        "max-subscriptions": "N", "send-buffer": "BYTES", "slow-client-timeout": "SECONDS", "tls-ciphers": "CIPHERS",
        "store": "URL", "store-retention": "RAW,MINUTE,HOUR[,JOURNAL]", "sim-faults": "WHEN", "max-shelve": "MINUTES",
        "coalesce-ms": "MS",
    }
    longdesc = (
        "Push live HVAC telemetry to WebSocket clients at /ws. With no data "
        "source configured, a built-in plant simulator feeds the server."
    )

    optFlags = [
        ["derived", None, "With the simulator, also publish derived points: temperature forecasts, energy and "
         "cost, delta-T, COP, compressor short-cycling, schedules (docs/derived.md)."],
        ["private-status", None, "Serve /metrics and the details of /healthz only to requests with a valid token "
         "(the same auth as /ws); /healthz still answers 200/503 with {\"ready\": ...} to anyone."],
    ]

    optParameters = [
        ["interval", None, 100.0, "Delivery poll period in milliseconds (data is also flushed as soon as it arrives).",
         _number(float, "interval", 1, 60_000)],
        ["coalesce-ms", None, 0.0, "Hold a flush this many milliseconds after the first change, so the "
         "changes of that window reach each client in one frame (fewer sends, that much more latency; "
         "0: flush on the next reactor turn; docs/performance.md).", _number(float, "coalesce-ms", 0, 1000)],
        ["sim-units", None, 6, "Number of simulated units (chillers, CRAC units, AHUs in turn).",
         _number(int, "sim-units", 1, 10_000)],
        ["sim-rate", None, 50.0, "Simulated point updates per second, across the plant.",
         _number(float, "sim-rate", 0.01, 1_000_000)],
        ["sim-seed", None, None, "Seed for a repeatable simulation.", _number(int, "sim-seed", 0, 2**32)],
        ["max-shelve", None, 480.0, "Longest an operator may shelve an alarm, in minutes (ISA-18.2: shelving is "
         "always time-limited; docs/alarms.md).", _number(float, "max-shelve", 1, 7 * 24 * 60)],
        ["sim-faults", None, "auto", "Demo faults: the first chiller loses capacity for 3 minutes every 10, from "
         "30 s after start (docs/alarms.md). auto: on unless --sim-seed is given.",
         _choice("sim-faults", ("auto", "on", "off"))],
        ["max-connections", None, 10_000, "WebSocket clients beyond this are refused with HTTP 503.",
         _number(int, "max-connections", 1, 1_000_000)],
        ["drain-timeout", None, 5.0, "Seconds to wait for clients to close on shutdown.",
         _number(float, "drain-timeout", 0, 300)],
        ["port-file", None, None, "Once listening, write the ports really bound to this file, one per --listen "
         "in order (with --listen tcp:0 the kernel picks a free one; see docs/operations.md)."],
        ["history-window", None, 900.0, "Seconds of samples kept per point for trend charts.",
         _number(float, "history-window", 0, 86_400)],
        ["default-interval", None, 60.0,
         "Expected seconds between updates for points whose source or config says nothing; "
         "silence for 3x this marks a point stale.",
         _number(float, "default-interval", 0.1, 86_400)],
        ["log-format", None, "text", "Log lines as text, or as json (one object per line on stdout; needs -n).",
         _choice("log-format", ("text", "json"))],
        ["config", None, None, "Plant config file (TOML): sites, units, points and their MQTT, Modbus TCP and BACnet/IP "
         "sources, instead of the simulator (see docs/sources.md). SIGHUP reloads it."],
        ["store", None, None, "Where trends, the alarm journal and last values are kept: sqlite:PATH (default "
         "sqlite:hvac-push.db), postgresql://user@host/db, or memory (nothing kept across restarts). "
         "Overrides the plant file's 'store'."],
        ["store-retention", None, None, "How long the store keeps raw samples, minute and hour rollups and the "
         "alarm journal: RAW,MINUTE,HOUR[,JOURNAL] durations with s, m, h, d, w or y (default 7d,365d,5y,5y).",
         _retention],
    ] + _SECURITY_PARAMETERS

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["allow-origin"] = []
        self["ws-option"] = {}
        self["publish"] = []
        self["subscribe"] = []

    def opt_publish(self, url: str) -> None:
        """Collector: publish every point to mqtt://[user:pass@]host[:port][/prefix] or mqtts://...[?ca=PATH] (repeatable)."""
        self["publish"].append(_broker_url("publish", url))

    def opt_subscribe(self, url: str) -> None:
        """Edge: serve every point under the prefix of an MQTT broker URL (as --publish), not the simulator (repeatable)."""
        self["subscribe"].append(_broker_url("subscribe", url))

    def opt_listen(self, description: str) -> None:
        """Listen on a strports endpoint, e.g. tcp:8080, ssl:8443:privateKey=key.pem, reuseport:8080 (repeatable; default: tcp:8080:interface=127.0.0.1, this machine only, or tcp:8080 with a token option)."""
        from twisted.internet.endpoints import serverFromString

        try:
            # Parsing builds an endpoint object but nothing that listens; an endpoint only
            # keeps its reactor for listen(), so none is needed (makeService passes the real one).
            serverFromString(None, description)
        except Exception as e:
            raise usage.UsageError(f"--listen {description!r}: {e}") from None
        self["listen"].append(description)

    def opt_allow_origin(self, origin: str) -> None:
        """Accept browsers only from this Origin, e.g. https://scada.example (repeatable; default: any)."""
        if origin != "null" and "://" not in origin:
            raise usage.UsageError(f"--allow-origin {origin!r}: expected scheme://host[:port] or null")
        self["allow-origin"].append(origin)

    def opt_ws_option(self, text: str) -> None:
        """KEY=VALUE passed to Autobahn's setProtocolOptions, e.g. autoPingInterval=10 (repeatable)."""
        try:
            key, value = parse_ws_option(text)
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        self["ws-option"][key] = value

    def parseOptions(self, options: Any = None) -> None:
        """Under twistd, a bad option is one line and a pointer to C{--help}, exit status 2.

        (twistd itself would print the whole usage text, then the error, and
        exit 0.) Parsed outside twistd, the L{usage.UsageError} is raised as usual.
        """
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            if getattr(self, "parent", None) is None:
                raise
            sys.stderr.write(f"twistd hvacpush: {e} (see: twistd hvacpush --help)\n")
            raise SystemExit(2) from None

    def postOptions(self) -> None:
        if self["log-format"] == "json":
            _select_json_logs(self)
        self["plant"] = None
        if self["config"] is not None:
            from hvac_push.ops.plant_file import ConfigError, load_config

            if self["derived"]:
                raise usage.UsageError("--derived: with --config, add a [derived] table to the config file instead")

            try:
                self["plant"] = load_config(self["config"])
            except ConfigError as e:
                raise usage.UsageError(str(e)) from None
        # Catch bad Autobahn option values now, not at start-up, on Autobahn's protocol-level
        # factory: the base of the Twisted one, with the same setProtocolOptions, and no reactor.
        # (apply_protocol_options is annotated with the Twisted subclass, hence the cast.)
        from autobahn.twisted.websocket import WebSocketServerFactory
        from autobahn.websocket.protocol import WebSocketServerFactory as ProtocolLevelFactory

        from hvac_push.transport.wsoptions import apply_protocol_options

        try:
            apply_protocol_options(cast(WebSocketServerFactory, ProtocolLevelFactory()), self["ws-option"])
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        self["authenticator"], self["limits"] = _security(self)
        #: Safe by default: without a token option, no --listen means this machine only.
        self["listen-default"] = not self["listen"]
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN if self["authenticator"] is not None else LOOPBACK_LISTEN]
        if self["private-status"] and self["authenticator"] is None:
            raise usage.UsageError("--private-status: needs a token option (--auth-jwt-secret-file, "
                                   "--auth-jwt-public-key-file or --auth-token-file)")
        self["store-backend"] = _store(self)


def _store(options: usage.Options) -> Any:
    """Open the store now, so that one that cannot be opened is a one-line usage error.

    Under twistd the default is C{sqlite:hvac-push.db} in the working folder;
    options parsed outside twistd (embedding, tests) default to memory, as
    C{PushService} does.
    """
    from hvac_push.store.interface import StoreError
    from hvac_push.store.url import DEFAULT_STORE, MEMORY, open_store

    plant = options["plant"]
    url, origin = options["store"], "--store"
    if url is None and plant is not None and plant.store is not None:
        url, origin = plant.store, f"{plant.path}: store"
    if url is None:
        url = DEFAULT_STORE if getattr(options, "parent", None) is not None else MEMORY
    try:
        return open_store(url)
    except (StoreError, ValueError) as e:
        raise usage.UsageError(f"{origin}: {e}") from None


def configure_simulated_points(service: PushService, simulator: SimulatorProducer) -> None:
    """The hub learns what the simulator promises about its points (interval, demo alarm limits)."""
    for point_id, meta in simulator.point_meta().items():
        service.hub.configure(point_id, meta)


def makeService(config: Options, reactor: Any = None) -> PushService:
    """Build the L{PushService} that C{config} describes."""
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    from hvac_push.sources.simulator import SimulatorProducer
    from hvac_push.transport.limits import DEFAULT_LIMITS
    from hvac_push.ops.service import PushService

    service = PushService(
        reactor,
        interval=config["interval"] / 1000.0,
        coalesce=config.get("coalesce-ms", 0.0) / 1000.0,
        allowed_origins=config["allow-origin"],
        max_connections=config["max-connections"],
        ws_options=config["ws-option"],
        drain_timeout=config["drain-timeout"],
        history_window=config["history-window"],
        default_interval=config["default-interval"],
        authenticator=config.get("authenticator"),
        limits=config.get("limits") or DEFAULT_LIMITS,
        tls_ciphers=None if config["tls-ciphers"] == "twisted" else config["tls-ciphers"],
        private_status=bool(config.get("private-status")),
        store=config.get("store-backend"),
        **({"retention": config["store-retention"]} if config.get("store-retention") else {}),
    )
    service.alarms.max_shelve = config.get("max-shelve", 480.0) * 60.0
    if config.get("plant") is not None:
        from hvac_push.ops.plant_sources import install_plant

        # Config sources instead of the simulator (unless the config has a [simulator] table).
        install_plant(service, config["plant"], sighup=True, on_simulator=configure_simulated_points)
    elif config.get("subscribe"):
        pass  # an edge node: its points come from the broker (see _cluster)
    else:
        faults = config.get("sim-faults", "auto")
        simulator = SimulatorProducer(
            units=config["sim-units"], rate=config["sim-rate"], seed=config["sim-seed"],
            faults=faults == "on" or (faults == "auto" and config["sim-seed"] is None),
        )
        configure_simulated_points(service, simulator)
        if config.get("derived"):
            from hvac_push.analytics.derived import DerivedPoints, simulator_settings

            # Forecasts, energy, efficiency and equipment health as live points (docs/derived.md).
            DerivedPoints(service.hub, reactor, simulator_settings(simulator.model.unit_names), alarms=service.alarms)
        service.add_producer(simulator)
    from hvac_push.ops.cluster import install_links

    install_links(service, reactor, subscribe=config.get("subscribe") or (), publish=config.get("publish") or ())
    # Under twistd -n a port in use is one line and exit status 1 (hvac_push.ops.listeners); a daemonizing
    # twistd reports the error to its parent process itself, through its status pipe.
    twistd = getattr(config, "parent", None)
    service.exit_on_listen_failure = twistd is not None and bool(twistd.get("nodaemon"))
    if config.get("listen-default") and config["listen"] == [LOOPBACK_LISTEN]:
        _log.info("{note}", note=LOOPBACK_NOTE)
    if config.get("port-file"):
        from hvac_push.ops.port_file import PortFile

        service.port_file = PortFile(config["port-file"], len(config["listen"]))
    for description in config["listen"]:
        service.add_listener(description)
    return service


_log = Logger()
