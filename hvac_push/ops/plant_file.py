"""The plant config file: sites, units, points and the sources that feed them.

A TOML file (read with C{tomllib}) is checked against a small, explicit schema
written out below. Every problem is reported as one line naming the file, the
key path and what is wrong::

    plant.toml: units.chiller-1.points.supply_temp.register: expected an integer

Unknown keys are errors, so a typo never passes silently. All problems are
collected (L{ConfigError.errors}); C{str(error)} is the first one.

The result is a tree of frozen dataclasses (L{PlantConfig}), the only input
from which L{hvac_push.ops.plant_sources} builds producers. This module does no I/O beyond
reading the config file and the files it names (password, TLS), and imports
neither paho-mqtt nor pymodbus.

Run C{python -m hvac_push.ops.plant_file plant.toml} to list every problem in a file.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import sys
import tomllib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence, TypeVar

from hvac_push.analytics.derived import Schedule, Zone
from hvac_push.core.points import SEVERITIES, AlarmLimits, PointMeta

#: A site, unit, point or source name: the same rule as one level of a point id.
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_\-]+$")

DEFAULT_SITE = "plant"
DEFAULT_TOPIC_TEMPLATE = "hvac/{site}/{unit}/{point}"
MODBUS_TABLES = ("holding", "input", "coil", "discrete")
MODBUS_TYPES = ("int16", "uint16", "int32", "uint32", "float32")
WORD_ORDERS = ("big", "little")
SIMULATOR = "simulator"


_Choice = TypeVar("_Choice", bound=str)


class ConfigError(ValueError):
    """A config file that does not pass validation; C{errors} lists every problem."""

    def __init__(self, errors: Sequence[str]):
        self.errors = list(errors)
        super().__init__(self.errors[0] if self.errors else "invalid config")

    def __str__(self) -> str:
        first = self.errors[0] if self.errors else "invalid config"
        more = len(self.errors) - 1
        return first if more <= 0 else f"{first} (and {more} more)"


# -- the result: frozen, comparable, hashable ---------------------------------


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """TLS towards an MQTT broker. Paths are absolute (resolved against the config file)."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    #: Skip the broker host name check (the chain is still verified against C{ca}).
    insecure: bool = False


@dataclass(frozen=True, slots=True)
class MqttBrokerConfig:
    name: str
    host: str
    port: int = 1883
    client_id: str = ""
    keepalive: int = 30
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TlsConfig | None = None
    topic_template: str = DEFAULT_TOPIC_TEMPLATE
    #: Accept every topic that matches the template, not only declared points.
    discover: bool = True
    reconnect_min: float = 1.0
    reconnect_max: float = 30.0

    @property
    def key(self) -> str:
        return f"mqtt.{self.name}"


@dataclass(frozen=True, slots=True)
class ModbusDeviceConfig:
    name: str
    host: str
    port: int = 502
    unit_id: int = 1
    poll_interval: float = 1.0
    timeout: float = 2.0

    @property
    def key(self) -> str:
        return f"modbus.{self.name}"


@dataclass(frozen=True, slots=True)
class RegisterConfig:
    """Where a Modbus point lives and how to decode it."""

    address: int
    table: str = "holding"
    type: str = "uint16"
    word_order: str = "big"
    scale: float = 1.0
    offset: float = 0.0


@dataclass(frozen=True, slots=True)
class BacnetConfig:
    """A C{[bacnet.NAME]} table: the local BACnet/IP interface and the device hvac-push is on it."""

    name: str
    #: Local interface C{A.B.C.D[/PREFIX]:PORT} (the prefix enables broadcast Who-Is).
    address: str
    device_instance: int = 4194302
    device_name: str = "hvac-push"
    apdu_timeout: float = 3.0
    retries: int = 3
    #: Seconds between polls of each device (points that refuse COV), and between liveness checks.
    interval: float = 10.0
    cov_lifetime: int = 300

    @property
    def key(self) -> str:
        return f"bacnet.{self.name}"


@dataclass(frozen=True, slots=True)
class BacnetObjectConfig:
    """Where a BACnet point lives: a property of an object in a remote device."""

    object: str
    device: int | None = None
    address: str | None = None
    property: str = "present-value"
    cov_increment: float | None = None


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    units: int = 6
    rate: float = 50.0
    seed: int | None = None
    site: str = DEFAULT_SITE


@dataclass(frozen=True, slots=True)
class DerivedConfig:
    """The C{[derived]} table: what L{hvac_push.ops.plant_sources.derived_settings} turns into C{DerivedSettings}.

    Defaults are C{DerivedSettings}' own (docs/derived.md), except
    C{max_starts_per_hour}: 90 when the file has a C{[simulator]} table.
    """

    enabled: bool = True
    forecast_minutes: tuple[int, ...] = (5, 15, 30)
    tariff: float = 0.15
    currency: str = "EUR"
    energy_max_gap: float = 300.0
    max_starts_per_hour: float = 6.0
    cop_window: float = 900.0
    cop_min_power: float = 0.5
    running_kw: float = 1.0
    predict_within_min: float = 15.0
    severity: str = "warning"
    timezone: str | None = None
    #: C{("site/unit", Schedule)} pairs, in file order; they win over the simulator's defaults.
    schedules: tuple[tuple[str, Schedule], ...] = ()
    zones: tuple[Zone, ...] = ()


@dataclass(frozen=True, slots=True)
class SiteConfig:
    id: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class UnitConfig:
    #: The key in the file (C{[units.KEY]}).
    key: str
    site: str
    #: The unit level of the point ids (defaults to C{key}).
    id: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class PointConfig:
    point_id: str
    #: The source key: C{mqtt.NAME}, C{modbus.NAME} or C{simulator}.
    source: str
    #: Unit of measure, e.g. C{°C}.
    unit: str = ""
    meta: PointMeta = PointMeta()
    #: MQTT only: an explicit topic (else the broker's template applies).
    topic: str | None = None
    #: Modbus only: the register map.
    register: RegisterConfig | None = None
    #: BACnet only: the object and property.
    bacnet: BacnetObjectConfig | None = None


@dataclass(frozen=True, slots=True)
class PlantConfig:
    path: str
    sites: tuple[SiteConfig, ...] = ()
    units: tuple[UnitConfig, ...] = ()
    points: tuple[PointConfig, ...] = ()
    brokers: tuple[MqttBrokerConfig, ...] = ()
    devices: tuple[ModbusDeviceConfig, ...] = ()
    simulator: SimulatorConfig | None = None
    #: The C{[derived]} table, or None without one.
    derived: DerivedConfig | None = None
    bacnet: tuple[BacnetConfig, ...] = ()

    def points_of(self, source: str) -> tuple[PointConfig, ...]:
        """The points fed by one source key, in file order."""
        return tuple(p for p in self.points if p.source == source)

    def source_keys(self) -> list[str]:
        keys = [b.key for b in self.brokers] + [d.key for d in self.devices] + [b.key for b in self.bacnet]
        if self.simulator is not None:
            keys.append(SIMULATOR)
        return keys


# -- the checker --------------------------------------------------------------


def _join(path: str, key: str) -> str:
    shown = key if _BARE_KEY.match(key) else '"' + key.replace('"', '\\"') + '"'
    return f"{path}.{shown}" if path else shown


class _Checker:
    """Collects errors as C{FILE: PATH: MESSAGE} lines while reading tables."""

    def __init__(self, filename: str, base_dir: str):
        self.filename = filename
        self.base_dir = base_dir
        self.errors: list[str] = []

    def error(self, path: str, message: str) -> None:
        self.errors.append(f"{self.filename}: {path}: {message}" if path else f"{self.filename}: {message}")

    def table(self, value: object, path: str) -> dict[str, Any] | None:
        if isinstance(value, dict):
            return value
        self.error(path, f"expected a table")
        return None

    def keys(self, table: dict[str, Any], path: str, allowed: Iterable[str]) -> None:
        allowed = list(allowed)
        for key in table:
            if key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1)
                suffix = f" (did you mean '{hint[0]}'?)" if hint else ""
                self.error(_join(path, key), f"unknown key{suffix}")

    def name(self, key: str, path: str) -> bool:
        if _NAME.match(key):
            return True
        self.error(path, "bad name: use letters, digits, '_', '.' or '-' (at most 64, not starting with '.' or '-')")
        return False

    # Scalars. Each returns the default (or None) after recording an error.

    def string(
        self, table: dict[str, Any], key: str, path: str, default: str | None = None,
        *, required: bool = False, max_len: int = 256, allow_empty: bool = True,
    ) -> str | None:
        where = _join(path, key)
        if key not in table:
            if required:
                self.error(where, "required")
            return default
        value = table[key]
        if not isinstance(value, str):
            self.error(where, f"expected a string")
            return default
        if len(value) > max_len:
            self.error(where, f"longer than {max_len} characters")
            return default
        if not allow_empty and not value:
            self.error(where, "must not be empty")
            return default
        return value

    def integer(
        self, table: dict[str, Any], key: str, path: str, default: int | None,
        low: int, high: int, *, required: bool = False,
    ) -> int | None:
        where = _join(path, key)
        if key not in table:
            if required:
                self.error(where, "required")
            return default
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(where, f"expected an integer")
            return default
        if not low <= value <= high:
            self.error(where, f"must be between {low} and {high}, got {value}")
            return default
        return value

    def number(
        self, table: dict[str, Any], key: str, path: str, default: float | None,
        low: float = -math.inf, high: float = math.inf, *, positive: bool = False,
    ) -> float | None:
        where = _join(path, key)
        if key not in table:
            return default
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.error(where, f"expected a number")
            return default
        number = float(value)
        if not math.isfinite(number):
            self.error(where, "must be a finite number")
            return default
        if positive and number <= 0:
            self.error(where, f"must be greater than 0, got {value}")
            return default
        if not low <= number <= high:
            self.error(where, f"must be between {low:g} and {high:g}, got {value}")
            return default
        return number

    def boolean(self, table: dict[str, Any], key: str, path: str, default: bool) -> bool:
        where = _join(path, key)
        if key not in table:
            return default
        value = table[key]
        if not isinstance(value, bool):
            self.error(where, f"expected true or false")
            return default
        return value

    def choice(self, table: dict[str, Any], key: str, path: str, default: _Choice, choices: Sequence[_Choice]) -> _Choice:
        value = self.string(table, key, path, default)
        if value is None:
            return default
        for choice in choices:
            if value == choice:
                return choice
        self.error(_join(path, key), f"expected one of {', '.join(choices)}, got {value!r}")
        return default

    def file(self, table: dict[str, Any], key: str, path: str) -> str | None:
        """A path to a readable file, resolved against the config file's folder."""
        text = self.string(table, key, path, None, allow_empty=False, max_len=4096)
        if text is None:
            return None
        resolved = os.path.normpath(os.path.join(self.base_dir, os.path.expanduser(text)))
        if not os.path.isfile(resolved) or not os.access(resolved, os.R_OK):
            self.error(_join(path, key), f"cannot read file {text!r}")
            return None
        return resolved


# -- the schema ---------------------------------------------------------------

_TOP_KEYS = ("sites", "units", "mqtt", "modbus", "simulator", "derived", "bacnet")
_SITE_KEYS = ("name",)
_UNIT_KEYS = ("site", "id", "name", "source", "points")
_ALARM_KEYS = ("high", "low", "deadband", "delay", "severity")
_MQTT_POINT_KEYS = ("topic",)
_MODBUS_POINT_KEYS = ("register", "table", "type", "word_order", "scale", "offset")
_COMMON_POINT_KEYS = ("name", "unit", "interval", "alarm", "source")
_BACNET_POINT_KEYS = ("device", "address", "object", "property", "cov_increment")
_POINT_KEYS = _COMMON_POINT_KEYS + _MQTT_POINT_KEYS + _MODBUS_POINT_KEYS + _BACNET_POINT_KEYS
_BACNET_KEYS = ("address", "device_instance", "device_name", "apdu_timeout", "retries", "interval", "cov_lifetime")
_MQTT_KEYS = (
    "host", "port", "client_id", "keepalive", "username", "password", "password_file",
    "tls", "topic_template", "discover", "reconnect_min", "reconnect_max",
)
_TLS_KEYS = ("ca", "cert", "key", "insecure")
_MODBUS_KEYS = ("host", "port", "unit_id", "poll_interval", "timeout")
_SIMULATOR_KEYS = ("units", "rate", "seed", "site")
_DERIVED_KEYS = (
    "enabled", "forecast_minutes", "tariff", "currency", "energy_max_gap", "max_starts_per_hour",
    "cop_window", "cop_min_power", "running_kw", "predict_within_min", "severity", "timezone",
    "schedules", "zones",
)
_PERIOD_KEYS = ("days", "start", "end")
_ZONE_KEYS = ("heating", "cooling", "heating_threshold", "cooling_threshold", "site")
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_RANGE = re.compile(r"^([a-z]{3})(?:-([a-z]{3}))?$")
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})$")


def check_topic_template(template: str) -> str | None:
    """Return what is wrong with an MQTT topic template, or L{None} if it is fine.

    Each of C{{site}}, C{{unit}} and C{{point}} must fill one whole topic level,
    exactly once; other levels are literal names or the C{+} wildcard.
    """
    if not template:
        return None  # no template: only points with an explicit topic
    levels = template.split("/")
    seen: list[str] = []
    for level in levels:
        if level in ("{site}", "{unit}", "{point}"):
            if level in seen:
                return f"{level} appears twice"
            seen.append(level)
        elif level == "#":
            return "'#' is not allowed (each level must map to something)"
        elif "{" in level or "}" in level:
            return f"level {level!r}: placeholders must fill a whole level: {{site}}, {{unit}} or {{point}}"
        elif level != "+" and ("+" in level or "\0" in level):
            return f"level {level!r}: '+' must fill a whole level"
    missing = [p for p in ("{site}", "{unit}", "{point}") if p not in seen]
    if missing:
        return f"missing {', '.join(missing)}"
    return None


def _check_topic(topic: str) -> str | None:
    if not topic:
        return "must not be empty"
    if "+" in topic or "#" in topic:
        return "must be an exact topic, without '+' or '#'"
    if "\0" in topic or len(topic.encode("utf-8")) > 65535:
        return "not a valid MQTT topic"
    return None


def _sources(c: _Checker, doc: dict[str, Any]) -> tuple[list[MqttBrokerConfig], list[ModbusDeviceConfig], SimulatorConfig | None]:
    brokers: list[MqttBrokerConfig] = []
    devices: list[ModbusDeviceConfig] = []
    mqtt = c.table(doc["mqtt"], "mqtt") if "mqtt" in doc else None
    for name, raw in (mqtt or {}).items():
        path = _join("mqtt", name)
        if not c.name(name, path):
            continue
        t = c.table(raw, path)
        if t is None:
            continue
        c.keys(t, path, _MQTT_KEYS)
        host = c.string(t, "host", path, required=True, allow_empty=False)
        tls: TlsConfig | None = None
        if "tls" in t:
            tt = c.table(t["tls"], _join(path, "tls"))
            if tt is not None:
                tpath = _join(path, "tls")
                c.keys(tt, tpath, _TLS_KEYS)
                cert, key = c.file(tt, "cert", tpath), c.file(tt, "key", tpath)
                if "key" in tt and "cert" not in tt:
                    c.error(_join(tpath, "key"), "needs cert as well")
                tls = TlsConfig(c.file(tt, "ca", tpath), cert, key, c.boolean(tt, "insecure", tpath, False))
        port = c.integer(t, "port", path, 8883 if tls else 1883, 1, 65535)
        password = c.string(t, "password", path, None, max_len=1024)
        if "password_file" in t:
            if "password" in t:
                c.error(_join(path, "password_file"), "give password or password_file, not both")
            pw_path = c.file(t, "password_file", path)
            if pw_path is not None:
                try:
                    with open(pw_path, encoding="utf-8") as f:
                        password = f.read(4096).rstrip("\r\n")
                except (OSError, UnicodeDecodeError) as e:
                    c.error(_join(path, "password_file"), f"cannot read: {e}")
        username = c.string(t, "username", path, None, max_len=1024)
        if password is not None and username is None:
            c.error(_join(path, "username"), "required when a password is given")
        template = c.string(t, "topic_template", path, DEFAULT_TOPIC_TEMPLATE, max_len=1024)
        if template is not None and (problem := check_topic_template(template)):
            c.error(_join(path, "topic_template"), problem)
            template = DEFAULT_TOPIC_TEMPLATE
        rmin = c.number(t, "reconnect_min", path, 1.0, 0.01, 3600)
        rmax = c.number(t, "reconnect_max", path, 30.0, 0.01, 3600)
        if rmin is not None and rmax is not None and rmax < rmin:
            c.error(_join(path, "reconnect_max"), f"must be at least reconnect_min ({rmin:g})")
        brokers.append(
            MqttBrokerConfig(
                name=name,
                host=host or "",
                port=port or 1883,
                client_id=c.string(t, "client_id", path, "", max_len=128) or "",
                keepalive=c.integer(t, "keepalive", path, 30, 5, 3600) or 30,
                username=username,
                password=password,
                tls=tls,
                topic_template=template if template is not None else DEFAULT_TOPIC_TEMPLATE,
                discover=c.boolean(t, "discover", path, True),
                reconnect_min=rmin or 1.0,
                reconnect_max=rmax or 30.0,
            )
        )
    modbus = c.table(doc["modbus"], "modbus") if "modbus" in doc else None
    for name, raw in (modbus or {}).items():
        path = _join("modbus", name)
        if not c.name(name, path):
            continue
        t = c.table(raw, path)
        if t is None:
            continue
        c.keys(t, path, _MODBUS_KEYS)
        unit_id = c.integer(t, "unit_id", path, 1, 0, 255)
        devices.append(
            ModbusDeviceConfig(
                name=name,
                host=c.string(t, "host", path, required=True, allow_empty=False) or "",
                port=c.integer(t, "port", path, 502, 1, 65535) or 502,
                unit_id=1 if unit_id is None else unit_id,
                poll_interval=c.number(t, "poll_interval", path, 1.0, 0.01, 3600) or 1.0,
                timeout=c.number(t, "timeout", path, 2.0, 0.01, 60) or 2.0,
            )
        )
    simulator: SimulatorConfig | None = None
    if "simulator" in doc:
        t = c.table(doc["simulator"], "simulator")
        if t is not None:
            c.keys(t, "simulator", _SIMULATOR_KEYS)
            site = c.string(t, "site", "simulator", DEFAULT_SITE) or DEFAULT_SITE
            if "site" in t:
                c.name(site, "simulator.site")
            simulator = SimulatorConfig(
                units=c.integer(t, "units", "simulator", 6, 1, 1000) or 6,
                rate=c.number(t, "rate", "simulator", 50.0, 0.01, 1_000_000) or 50.0,
                seed=c.integer(t, "seed", "simulator", None, 0, 2**32),
                site=site,
            )
    return brokers, devices, simulator


def _bacnet_sources(c: _Checker, doc: dict[str, Any]) -> list[BacnetConfig]:
    """The C{[bacnet.NAME]} tables (docs/sources.md)."""
    from hvac_push.sources.bacnet_maps import MAX_INSTANCE, parse_ip_address

    interfaces: list[BacnetConfig] = []
    raw_tables = c.table(doc["bacnet"], "bacnet") if "bacnet" in doc else None
    seen_ports: dict[int, str] = {}
    for name, raw in (raw_tables or {}).items():
        path = _join("bacnet", name)
        if not c.name(name, path):
            continue
        t = c.table(raw, path)
        if t is None:
            continue
        c.keys(t, path, _BACNET_KEYS)
        address = c.string(t, "address", path, required=True, allow_empty=False) or ""
        if address:
            try:
                _, _, port = parse_ip_address(address)
            except ValueError as e:
                c.error(_join(path, "address"), str(e))
            else:
                if port in seen_ports:
                    c.error(_join(path, "address"), f"UDP port {port} is also used by {seen_ports[port]}")
                seen_ports[port] = path
        defaults = BacnetConfig(name, address)
        retries = c.integer(t, "retries", path, defaults.retries, 0, 10)
        interfaces.append(BacnetConfig(
            name=name,
            address=address,
            device_instance=_or_int(c.integer(t, "device_instance", path, defaults.device_instance, 0, MAX_INSTANCE),
                                    defaults.device_instance),
            device_name=c.string(t, "device_name", path, defaults.device_name, max_len=64, allow_empty=False)
            or defaults.device_name,
            apdu_timeout=_or(c.number(t, "apdu_timeout", path, defaults.apdu_timeout, 0.05, 60), defaults.apdu_timeout),
            retries=defaults.retries if retries is None else retries,
            interval=_or(c.number(t, "interval", path, defaults.interval, 0.01, 86400), defaults.interval),
            cov_lifetime=_or_int(c.integer(t, "cov_lifetime", path, defaults.cov_lifetime, 2, 86400),
                                 defaults.cov_lifetime),
        ))
    return interfaces


def _check_bacnet_lookups(
    c: _Checker, interfaces: Sequence[BacnetConfig], points: Sequence[PointConfig], where: dict[str, str],
) -> None:
    """A point found by device instance alone needs Who-Is, hence a broadcast address: a /PREFIX."""
    from hvac_push.sources.bacnet_maps import has_broadcast

    no_broadcast = set()
    for interface in interfaces:
        try:
            if not has_broadcast(interface.address):
                no_broadcast.add(interface.key)
        except ValueError:
            pass  # reported with the table
    for point in points:
        if point.bacnet is not None and point.bacnet.address is None and point.source in no_broadcast:
            c.error(_join(where[point.point_id], "address"),
                    f"required: {point.source}'s address has no /PREFIX (below 31), so Who-Is cannot find "
                    f"device {point.bacnet.device} (give the device's address, or a /PREFIX)")


def _or_int(value: int | None, default: int) -> int:
    return default if value is None else value


def _bacnet_object(c: _Checker, p: dict[str, Any], path: str) -> BacnetObjectConfig | None:
    """A BACnet point's C{object}, C{property}, C{device} / C{address} and C{cov_increment}."""
    from hvac_push.sources.bacnet_maps import MAX_INSTANCE, check_property, parse_ip_address, parse_object

    before = len(c.errors)
    text = c.string(p, "object", path, None, required=True)
    if text is not None:
        try:
            kind, instance = parse_object(text)
            text = f"{kind},{instance}"
        except ValueError as e:
            c.error(_join(path, "object"), str(e))
    prop = c.string(p, "property", path, "present-value") or "present-value"
    try:
        check_property(prop)
    except ValueError as e:
        c.error(_join(path, "property"), str(e))
    device = c.integer(p, "device", path, None, 0, MAX_INSTANCE)
    address = c.string(p, "address", path, None, allow_empty=False)
    if address is not None:
        try:
            host, _, port = parse_ip_address(address, prefix=False)
            address = f"{host}:{port}"
        except ValueError as e:
            c.error(_join(path, "address"), str(e))
    if "device" not in p and "address" not in p:
        c.error(_join(path, "device"), "required: the device instance (or give its address)")
    increment = c.number(p, "cov_increment", path, None, 0, math.inf)
    if len(c.errors) > before or text is None:
        return None
    return BacnetObjectConfig(text, device, address, prop, increment)


def _alarm(c: _Checker, raw: object, path: str) -> AlarmLimits | None:
    t = c.table(raw, path)
    if t is None:
        return None
    c.keys(t, path, _ALARM_KEYS)
    high = c.number(t, "high", path, None)
    low = c.number(t, "low", path, None)
    if high is not None and low is not None and low >= high:
        c.error(_join(path, "low"), f"must be below high ({high:g}), got {low:g}")
    return AlarmLimits(
        high=high,
        low=low,
        deadband=c.number(t, "deadband", path, 0.0, 0.0) or 0.0,
        delay=c.number(t, "delay", path, 0.0, 0.0, 86400) or 0.0,
        severity=c.choice(t, "severity", path, "major", SEVERITIES),
    )


def _register(c: _Checker, t: dict[str, Any], path: str) -> RegisterConfig:
    table = c.choice(t, "table", path, "holding", MODBUS_TABLES)
    address = c.integer(t, "register", path, 0, 0, 65535, required=True) or 0
    if table in ("coil", "discrete"):
        for key in ("type", "word_order", "scale", "offset"):
            if key in t:
                c.error(_join(path, key), f"not used for a {table} (it is read as true/false)")
        return RegisterConfig(address, table, "bool")
    kind = c.choice(t, "type", path, "uint16", MODBUS_TYPES)
    if kind.endswith("16") and "word_order" in t:
        c.error(_join(path, "word_order"), f"not used for {kind} (one register)")
    if kind.endswith("32") and address > 65534:
        c.error(_join(path, "register"), f"a {kind} needs two registers, {address} is the last one")
    scale = c.number(t, "scale", path, 1.0)
    if scale == 0:
        c.error(_join(path, "scale"), "must not be 0")
    return RegisterConfig(
        address=address,
        table=table,
        type=kind,
        word_order=c.choice(t, "word_order", path, "big", WORD_ORDERS),
        scale=scale if scale else 1.0,
        offset=c.number(t, "offset", path, 0.0) or 0.0,
    )


def _simulated(simulator: SimulatorConfig | None) -> tuple[list[str], set[str]]:
    """The simulator's C{site/unit} ids and point ids (nothing without a simulator)."""
    if simulator is None:
        return [], set()
    from hvac_push.sources.simulator import PlantModel

    model = PlantModel(units=simulator.units, seed=0, site=simulator.site)
    return [f"{simulator.site}/{name}" for name in model.unit_names], set(model.point_ids())


def _clock(c: _Checker, t: dict[str, Any], key: str, path: str) -> float | None:
    """C{"HH:MM"}, 00:00 to 24:00, as hours."""
    text = c.string(t, key, path, None, required=True)
    if text is None:
        return None
    match = _CLOCK.match(text)
    if match is None or int(match.group(2)) > 59 or int(match.group(1)) * 60 + int(match.group(2)) > 24 * 60:
        c.error(_join(path, key), f"expected a time from '00:00' to '24:00', got {text!r}")
        return None
    return int(match.group(1)) + int(match.group(2)) / 60.0


def _period(c: _Checker, raw: object, path: str) -> list[tuple[int, float, float]]:
    """One C{{ days = "mon-fri", start = "06:00", end = "20:00" }} table."""
    t = c.table(raw, path)
    if t is None:
        return []
    c.keys(t, path, _PERIOD_KEYS)
    days = c.string(t, "days", path, None, required=True)
    first = last = -1
    if days is not None:
        match = _DAY_RANGE.match(days.lower())
        if days.lower() == "daily":
            first, last = 0, 6
        elif match is None or match.group(1) not in _WEEKDAYS or (match.group(2) or "mon") not in _WEEKDAYS:
            c.error(_join(path, "days"), f"expected a day or a range of days like 'mon-fri', or 'daily', got {days!r}")
        else:
            first = _WEEKDAYS.index(match.group(1))
            last = _WEEKDAYS.index(match.group(2)) if match.group(2) else first
            if last < first:
                c.error(_join(path, "days"), f"the range must run from Monday towards Sunday, got {days!r}")
    start, end = _clock(c, t, "start", path), _clock(c, t, "end", path)
    if start is not None and end is not None and end <= start:
        c.error(_join(path, "end"), f"must be after start ({t['start']}), got {t['end']!r}")
        return []
    if start is None or end is None or first < 0 or last < first:
        return []
    return [(day, start, end) for day in range(first, last + 1)]


def _schedule(c: _Checker, raw: object, path: str) -> Schedule | None:
    """A schedule: C{"always"}, C{"mon-fri 06:00-20:00; sat 08:00-12:00"}, a period table, or an array of them."""

    if isinstance(raw, str):
        if not raw.strip():
            c.error(path, "must not be empty (write 'always', or periods like 'mon-fri 06:00-20:00')")
            return None
        try:
            return Schedule.parse(raw)
        except ValueError as e:
            c.error(path, str(e))
            return None
    if isinstance(raw, list):
        if not raw:
            c.error(path, "must not be empty")
            return None
        before = len(c.errors)
        periods = [p for index, item in enumerate(raw) for p in _period(c, item, f"{path}[{index}]")]
        return Schedule(tuple(periods)) if len(c.errors) == before else None
    if isinstance(raw, dict):
        before = len(c.errors)
        periods = _period(c, raw, path)
        return Schedule(tuple(periods)) if len(c.errors) == before else None
    c.error(path, "expected 'always', a string like 'mon-fri 06:00-20:00', a table "
                  "{ days = \"mon-fri\", start = \"06:00\", end = \"20:00\" } or an array of such tables")
    return None


def _derived(
    c: _Checker, raw: object, simulator: SimulatorConfig | None, units: Sequence[UnitConfig], point_ids: set[str],
) -> DerivedConfig | None:
    """The C{[derived]} table (docs/sources.md); unit and point references are checked against the file."""

    path = "derived"
    t = c.table(raw, path)
    if t is None:
        return None
    c.keys(t, path, _DERIVED_KEYS)
    defaults = DerivedConfig()
    minutes: list[int] = []
    if "forecast_minutes" in t:
        fpath = _join(path, "forecast_minutes")
        values = t["forecast_minutes"]
        if not isinstance(values, list):
            c.error(fpath, "expected an array of whole minutes, e.g. [5, 15, 30]")
        elif not values:
            c.error(fpath, "must not be empty")
        for index, value in enumerate(values if isinstance(values, list) else []):
            where = f"{fpath}[{index}]"
            if isinstance(value, bool) or not isinstance(value, int):
                c.error(where, "expected an integer")
            elif not 1 <= value <= 1440:
                c.error(where, f"must be between 1 and 1440, got {value}")
            elif value in minutes:
                c.error(where, f"{value} appears twice")
            else:
                minutes.append(value)
    timezone = c.string(t, "timezone", path, None, allow_empty=False)
    if timezone is not None:
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(timezone)
        except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError; bad paths: ValueError
            c.error(_join(path, "timezone"), f"unknown time zone {timezone!r} (an IANA name, e.g. 'Europe/Paris')")
            timezone = None

    # Schedules, by unit: a [units.KEY] key, a simulated unit's name, or "site/unit".
    unit_ids: dict[str, list[str]] = {}
    simulated_units, simulated_points = _simulated(simulator)
    for unit in units:
        unit_ids.setdefault(unit.key, []).append(f"{unit.site}/{unit.id}")
        unit_ids.setdefault(f"{unit.site}/{unit.id}", []).append(f"{unit.site}/{unit.id}")
    for unit_id in simulated_units:
        unit_ids.setdefault(unit_id.split("/", 1)[1], []).append(unit_id)
        unit_ids.setdefault(unit_id, []).append(unit_id)
    schedules: dict[str, Schedule] = {}
    raw_schedules = c.table(t["schedules"], _join(path, "schedules")) if "schedules" in t else None
    for key, value in (raw_schedules or {}).items():
        spath = _join(_join(path, "schedules"), key)
        targets = list(dict.fromkeys(unit_ids.get(key, [])))
        schedule = _schedule(c, value, spath)
        if not targets:
            names = sorted(k for k in unit_ids if "/" not in k)
            known = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
            c.error(spath, f"unknown unit {key!r}; units: {known or 'none are declared'}")
        elif schedule is not None:
            for target in targets:
                schedules[target] = schedule

    zones: list[Zone] = []
    known_points = point_ids | simulated_points
    raw_zones = c.table(t["zones"], _join(path, "zones")) if "zones" in t else None
    for name, value in (raw_zones or {}).items():
        zpath = _join(_join(path, "zones"), name)
        z = c.table(value, zpath)
        if z is None or not c.name(name, zpath):
            continue
        c.keys(z, zpath, _ZONE_KEYS)
        before = len(c.errors)
        inputs: list[str] = []
        for key in ("heating", "cooling"):
            point_id = c.string(z, key, zpath, None, required=True)
            if point_id is not None and point_id not in known_points:
                c.error(_join(zpath, key), f"unknown point {point_id!r}: give the id of a declared or simulated point, "
                                           "e.g. 'plant/vav-3/reheat_valve'")
            inputs.append(point_id or "")
        site = c.string(z, "site", zpath, None)
        if site is not None:
            c.name(site, _join(zpath, "site"))
        heating_threshold = c.number(z, "heating_threshold", zpath, 0.0)
        cooling_threshold = c.number(z, "cooling_threshold", zpath, 0.0)
        if len(c.errors) > before:
            continue
        zones.append(Zone(
            name, inputs[0], inputs[1], site=site or inputs[0].split("/")[0],
            heating_threshold=heating_threshold or 0.0, cooling_threshold=cooling_threshold or 0.0,
        ))

    starts_default = 90.0 if simulator is not None else defaults.max_starts_per_hour
    max_starts = c.number(t, "max_starts_per_hour", path, starts_default, 0, 3600)
    return DerivedConfig(
        enabled=c.boolean(t, "enabled", path, True),
        forecast_minutes=tuple(minutes) or defaults.forecast_minutes,
        tariff=_or(c.number(t, "tariff", path, defaults.tariff, 0, 1000), defaults.tariff),
        currency=c.string(t, "currency", path, defaults.currency, max_len=16, allow_empty=False) or defaults.currency,
        energy_max_gap=_or(
            c.number(t, "energy_max_gap", path, defaults.energy_max_gap, 0, 86400, positive=True),
            defaults.energy_max_gap,
        ),
        max_starts_per_hour=_or(max_starts, starts_default),
        cop_window=_or(c.number(t, "cop_window", path, defaults.cop_window, 0, 86400, positive=True), defaults.cop_window),
        cop_min_power=_or(c.number(t, "cop_min_power", path, defaults.cop_min_power, 0, 100000), defaults.cop_min_power),
        running_kw=_or(c.number(t, "running_kw", path, defaults.running_kw, 0, 100000), defaults.running_kw),
        predict_within_min=_or(
            c.number(t, "predict_within_min", path, defaults.predict_within_min, 0, 1440), defaults.predict_within_min,
        ),
        severity=c.choice(t, "severity", path, defaults.severity, SEVERITIES),
        timezone=timezone,
        schedules=tuple(schedules.items()),
        zones=tuple(zones),
    )


def _or(value: float | None, default: float) -> float:
    """C{value}, unless a checker returned None (an error is recorded then)."""
    return default if value is None else value


def _plant(c: _Checker, doc: dict[str, Any]) -> PlantConfig | None:
    c.keys(doc, "", _TOP_KEYS)
    brokers, devices, simulator = _sources(c, doc)
    bacnet = _bacnet_sources(c, doc)
    source_keys = {b.key: "mqtt" for b in brokers} | {d.key: "modbus" for d in devices}
    source_keys |= {b.key: "bacnet" for b in bacnet}
    templates = {b.key: b.topic_template for b in brokers}
    if simulator is not None:
        source_keys[SIMULATOR] = SIMULATOR

    sites: list[SiteConfig] = []
    raw_sites = c.table(doc["sites"], "sites") if "sites" in doc else None
    for site_id, raw in (raw_sites or {}).items():
        path = _join("sites", site_id)
        t = c.table(raw, path)
        if not c.name(site_id, path) or t is None:
            continue
        c.keys(t, path, _SITE_KEYS)
        sites.append(SiteConfig(site_id, c.string(t, "name", path, "") or ""))
    site_ids = [s.id for s in sites]

    units: list[UnitConfig] = []
    points: list[PointConfig] = []
    seen_ids: dict[str, str] = {}
    seen_topics: dict[tuple[str, str], str] = {}
    raw_units = c.table(doc["units"], "units") if "units" in doc else None
    for unit_key, raw in (raw_units or {}).items():
        upath = _join("units", unit_key)
        u = c.table(raw, upath)
        if u is None:
            continue
        c.keys(u, upath, _UNIT_KEYS)
        if "site" in u:
            site = c.string(u, "site", upath, DEFAULT_SITE) or DEFAULT_SITE
            if site_ids and site not in site_ids:
                c.error(_join(upath, "site"), f"unknown site {site!r} (declared: {', '.join(site_ids)})")
            elif not site_ids:
                c.name(site, _join(upath, "site"))
        elif len(site_ids) > 1:
            c.error(_join(upath, "site"), "required when more than one site is declared")
            site = site_ids[0]
        else:
            site = site_ids[0] if site_ids else DEFAULT_SITE
        if "id" in u:
            unit_id = c.string(u, "id", upath, unit_key) or unit_key
            c.name(unit_id, _join(upath, "id"))
        else:
            unit_id = unit_key
            if not c.name(unit_key, upath):
                continue
        errors_before = len(c.errors)
        unit_source = c.string(u, "source", upath, None)
        if unit_source is not None and unit_source not in source_keys:
            c.error(_join(upath, "source"), _unknown_source(unit_source, source_keys))
            unit_source = None
        # When the unit's own source is wrong, its points need not say so again.
        unit_source_failed = "source" in u and len(c.errors) > errors_before
        units.append(UnitConfig(unit_key, site, unit_id, c.string(u, "name", upath, "") or ""))
        raw_points = c.table(u["points"], _join(upath, "points")) if "points" in u else None
        for point_key, praw in (raw_points or {}).items():
            ppath = _join(_join(upath, "points"), point_key)
            p = c.table(praw, ppath)
            if p is None or not c.name(point_key, ppath):
                continue
            point = _point(c, p, ppath, f"{site}/{unit_id}/{point_key}", unit_source, source_keys, unit_source_failed)
            if point is None:
                continue
            if point.point_id in seen_ids:
                c.error(ppath, f"point id {point.point_id} is also declared at {seen_ids[point.point_id]}")
                continue
            seen_ids[point.point_id] = ppath
            if point.topic is None and templates.get(point.source) == "":
                c.error(_join(ppath, "topic"), f"required: {point.source} has no topic_template")
                continue
            if point.topic is not None:
                where = (point.source, point.topic)
                if where in seen_topics:
                    c.error(_join(ppath, "topic"), f"topic {point.topic!r} is also used at {seen_topics[where]}")
                seen_topics[where] = ppath
            points.append(point)
    _check_bacnet_lookups(c, bacnet, points, seen_ids)
    derived = _derived(c, doc["derived"], simulator, units, set(seen_ids)) if "derived" in doc else None
    if c.errors:
        return None
    return PlantConfig(
        path=c.filename,
        sites=tuple(sites),
        units=tuple(units),
        points=tuple(points),
        brokers=tuple(brokers),
        devices=tuple(devices),
        bacnet=tuple(bacnet),
        simulator=simulator,
        derived=derived,
    )


def _unknown_source(name: str, source_keys: dict[str, str]) -> str:
    known = ", ".join(sorted(source_keys)) or "none are declared"
    hint = ""
    if "." not in name and name != SIMULATOR:
        hint = " (write mqtt.NAME, modbus.NAME or bacnet.NAME)"
    return f"unknown source {name!r}{hint}; declared: {known}"


def _point(
    c: _Checker, p: dict[str, Any], path: str, point_id: str,
    unit_source: str | None, source_keys: dict[str, str], unit_source_failed: bool = False,
) -> PointConfig | None:
    c.keys(p, path, _POINT_KEYS)
    before = len(c.errors)
    source = c.string(p, "source", path, unit_source)
    kind: str | None = None
    if source is None:
        if "source" not in p and not unit_source_failed:
            c.error(_join(path, "source"), "required (here or on the unit)")
    elif "source" in p and source not in source_keys:
        c.error(_join(path, "source"), _unknown_source(source, source_keys))
    else:
        kind = source_keys[source]
        wrong = {
            "mqtt": _MODBUS_POINT_KEYS + _BACNET_POINT_KEYS,
            "modbus": _MQTT_POINT_KEYS + _BACNET_POINT_KEYS,
            "bacnet": _MQTT_POINT_KEYS + _MODBUS_POINT_KEYS,
            SIMULATOR: _MQTT_POINT_KEYS + _MODBUS_POINT_KEYS + _BACNET_POINT_KEYS,
        }[kind]
        for key in wrong:
            if key in p:
                owner = "Modbus" if key in _MODBUS_POINT_KEYS else "BACnet" if key in _BACNET_POINT_KEYS else "MQTT"
                c.error(_join(path, key), f"only for {owner} points (this one's source is {source})")
    unit = c.string(p, "unit", path, "", max_len=32) or ""
    limits = _alarm(c, p["alarm"], _join(path, "alarm")) if "alarm" in p else None
    meta = PointMeta(
        name=c.string(p, "name", path, "") or "",
        expected_interval=c.number(p, "interval", path, None, 0, 86400, positive=True),
        limits=limits,
    )
    topic: str | None = None
    register: RegisterConfig | None = None
    if kind == "mqtt" and "topic" in p:
        topic = c.string(p, "topic", path, None, max_len=1024)
        if topic is not None and (problem := _check_topic(topic)):
            c.error(_join(path, "topic"), problem)
    if kind == "modbus":
        register = _register(c, p, path)
    bacnet = _bacnet_object(c, p, path) if kind == "bacnet" else None
    if len(c.errors) > before or source is None or kind is None:
        return None
    return PointConfig(point_id, source, unit, meta, topic, register, bacnet)


# -- entry points -------------------------------------------------------------


def parse_config(text: str, filename: str = "plant.toml", base_dir: str = ".") -> PlantConfig:
    """Validate TOML text; raise L{ConfigError} listing every problem."""
    c = _Checker(filename, base_dir)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{filename}: TOML syntax error: {e}"]) from None
    plant = _plant(c, doc)
    if plant is None:
        raise ConfigError(c.errors)
    return plant


def load_config(path: str) -> PlantConfig:
    """Read and validate a config file; raise L{ConfigError} with one-line messages."""
    try:
        with open(path, "rb") as f:
            data = f.read(16 * 1024 * 1024 + 1)
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror or e}"]) from None
    if len(data) > 16 * 1024 * 1024:
        raise ConfigError([f"{path}: larger than 16 MiB"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError([f"{path}: not UTF-8 text ({e.reason} at byte {e.start})"]) from None
    return parse_config(text, path, os.path.dirname(os.path.abspath(path)))


def main(argv: Sequence[str] | None = None, out: Callable[[str], None] = print) -> int:
    """C{python -m hvac_push.ops.plant_file FILE...}: print every problem, or a summary."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        out("usage: python -m hvac_push.ops.plant_file PLANT.toml...")
        return 2
    status = 0
    for path in args:
        try:
            plant = load_config(path)
        except ConfigError as e:
            for line in e.errors:
                out(line)
            status = 1
        else:
            derived = "; derived points on" if plant.derived is not None and plant.derived.enabled else ""
            out(f"{path}: ok: {len(plant.points)} points, sources: {', '.join(plant.source_keys()) or 'none'}{derived}")
    return status


__all__ = [
    "ConfigError",
    "DerivedConfig",
    "MqttBrokerConfig",
    "ModbusDeviceConfig",
    "BacnetConfig",
    "BacnetObjectConfig",
    "PlantConfig",
    "PointConfig",
    "RegisterConfig",
    "SimulatorConfig",
    "SiteConfig",
    "TlsConfig",
    "UnitConfig",
    "check_topic_template",
    "load_config",
    "parse_config",
]

if __name__ == "__main__":
    sys.exit(main())
