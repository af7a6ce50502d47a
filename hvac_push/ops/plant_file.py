"""The plant config file: sites, units, points and the sources that feed them.

A TOML file (read with C{tomllib}) is checked against a small, explicit schema
written out below. Every problem is reported as one line naming the file, the
key path and what is wrong::

    plant.toml: units.chiller-1.points.supply_temp.register: expected an integer

Unknown keys are errors, so a typo never passes silently. All problems are
collected (L{ConfigError.errors}); C{str(error)} is the first one.

The result is a tree of frozen dataclasses (L{PlantConfig}), the only input
from which L{hvac_push.ops.plant_sources} builds producers. Where a table maps
onto a type of its own (L{MqttBroker}, L{DerivedSettings}, L{AlarmLimits}...),
that type's field defaults are the file's defaults: a key that is absent is not
passed. This module does no I/O beyond reading the config file and the files it
names (password, TLS), and imports neither paho-mqtt nor pymodbus.

Run C{python -m hvac_push.ops.plant_file plant.toml} to list every problem in a file.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import sys
import tomllib
from dataclasses import Field, dataclass, fields
from typing import Any, Callable, Iterable, Sequence, TypeVar

from hvac_push.analytics.alarms import PRIORITIES
from hvac_push.analytics.derived import (
    CONFIGURABLE,
    DerivedSettings,
    Schedule,
    Zone,
    parse_clock,
    parse_days,
    simulator_schedules,
)
from hvac_push.analytics.equipment import KINDS as EQUIPMENT_KINDS
from hvac_push.analytics.rules import KINDS as RULE_UNIT_KINDS
from hvac_push.analytics.rules import ROLES as RULE_ROLES
from hvac_push.analytics.rules import Thresholds, UnitRules
from hvac_push.analytics.units import INPUT_QUANTITIES, check as check_unit
from hvac_push.core.points import SEVERITIES, AlarmLimits, PointMeta, is_name
from hvac_push.sources.mqtt import DEFAULT_TEMPLATE, check_topic, check_topic_template
from hvac_push.sources.modbus_codec import MAX_STRING as MODBUS_MAX_STRING
from hvac_push.sources.modbus_codec import registers_of as modbus_registers
from hvac_push.sources.mqtt_client import MqttBroker, MqttTls, default_port, parse_addresses
from hvac_push.sources.ha_discovery import DEFAULT_PREFIX as HA_PREFIX, HaDiscovery
from hvac_push.sources.sparkplug_settings import SparkplugSettings
from hvac_push.sources.mqtt_payload import BUILTIN_MAPS, PayloadMap, check_path, make_value_map

_BARE_KEY = re.compile(r"^[A-Za-z0-9_\-]+$")

DEFAULT_SITE = "plant"
MODBUS_TABLES = ("holding", "input", "coil", "discrete")
MODBUS_TYPES = ("int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string")
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
class MqttBrokerConfig:
    """An C{[mqtt.NAME]} source: the broker (TLS paths absolute, resolved against the file) and its topics."""

    name: str
    broker: MqttBroker
    client_id: str = ""
    keepalive: int = 30
    topic_template: str = DEFAULT_TEMPLATE
    #: Accept every topic that matches the template, not only declared points.
    discover: bool = True
    reconnect_min: float = 1.0
    reconnect_max: float = 30.0
    #: How the source's points read their payloads unless a point says otherwise (C{json_path} ...).
    payload: PayloadMap = PayloadMap()
    #: C{[mqtt.NAME.homeassistant]}: points from Home Assistant discovery messages.
    homeassistant: HaDiscovery | None = None
    #: C{[mqtt.NAME.sparkplug]}: points from Sparkplug B edge nodes.
    sparkplug: SparkplugSettings | None = None

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
    #: Tries again after a transient exception (busy, gateway path or target), within one poll.
    retries: int = 2

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
    #: One bit of an integer register, read as a bool (a status word).
    bit: int | None = None
    byte_order: str = "big"
    #: C{string} only: its length in characters (two per register).
    length: int = 0
    #: Seconds between reads (the point's C{interval}); None: the device's C{poll_interval}.
    interval: float | None = None


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
    #: What the unit is (C{hvac_push.analytics.equipment.KINDS}); None: read from its name.
    kind: str | None = None


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
    #: MQTT only: how to read the point out of its messages (C{json_path}, C{value_map} ...); None: the source's.
    payload: PayloadMap | None = None


@dataclass(frozen=True, slots=True)
class PlantConfig:
    path: str
    sites: tuple[SiteConfig, ...] = ()
    units: tuple[UnitConfig, ...] = ()
    points: tuple[PointConfig, ...] = ()
    brokers: tuple[MqttBrokerConfig, ...] = ()
    devices: tuple[ModbusDeviceConfig, ...] = ()
    simulator: SimulatorConfig | None = None
    #: The settings of the C{[derived]} table; None without one, or with C{enabled = false}.
    derived: DerivedSettings | None = None
    #: C{store = "..."}: where trends and the alarm journal are kept (as C{--store}); None: not set.
    store: str | None = None
    #: The C{[rules.UNIT]} tables: fault detection rules per unit (docs/alarms.md).
    rules: tuple[UnitRules, ...] = ()
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
        if is_name(key):
            return True
        self.error(path, "bad name: use letters, digits, '_', '.' or '-' (at most 64, not starting with '.' or '-')")
        return False

    # Scalars. Each returns the value, or the default (None unless given) when the key is
    # absent or after recording an error: pass None and leave defaults to the result type.

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
        self, table: dict[str, Any], key: str, path: str, default: float | None = None,
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

    def boolean(self, table: dict[str, Any], key: str, path: str, default: bool | None = None) -> bool | None:
        where = _join(path, key)
        if key not in table:
            return default
        value = table[key]
        if not isinstance(value, bool):
            self.error(where, f"expected true or false")
            return default
        return value

    def choice(
        self, table: dict[str, Any], key: str, path: str, default: _Choice | None, choices: Sequence[_Choice],
    ) -> _Choice | None:
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


def _default(cls: type, name: str) -> Any:
    """The default of one field of a result type: the file's default for that key."""
    return next(f.default for f in fields(cls) if f.name == name)


def _given(**values: Any) -> dict[str, Any]:
    """The keyword arguments that have a value: the rest keep the result type's defaults."""
    return {key: value for key, value in values.items() if value is not None}


# -- the schema ---------------------------------------------------------------

_TOP_KEYS = ("sites", "units", "mqtt", "modbus", "simulator", "derived", "store", "rules", "bacnet")
_SITE_KEYS = ("name",)
_UNIT_KEYS = ("site", "id", "name", "source", "points", "kind")
_ALARM_KEYS = (
    "high", "low", "deadband", "delay", "severity", "priority", "delay_normal", "ack_required", "latch",
    "group", "notification_class",
)
_MQTT_POINT_KEYS = ("topic", "json_path", "unit_path", "ts_path", "value_map")
_MODBUS_POINT_KEYS = ("register", "table", "type", "word_order", "scale", "offset", "bit", "byte_order", "length")
_COMMON_POINT_KEYS = ("name", "unit", "interval", "alarm", "source")
_BACNET_POINT_KEYS = ("device", "address", "object", "property", "cov_increment")
_POINT_KEYS = _COMMON_POINT_KEYS + _MQTT_POINT_KEYS + _MODBUS_POINT_KEYS + _BACNET_POINT_KEYS
_BACNET_KEYS = ("address", "device_instance", "device_name", "apdu_timeout", "retries", "interval", "cov_lifetime")
_MQTT_KEYS = (
    "host", "port", "client_id", "keepalive", "username", "password", "password_file",
    "tls", "topic_template", "discover", "reconnect_min", "reconnect_max",
    "json_path", "unit_path", "ts_path", "value_map", "homeassistant", "sparkplug",
)
_TLS_KEYS = ("ca", "cert", "key", "insecure")
_MODBUS_KEYS = ("host", "port", "unit_id", "poll_interval", "timeout", "retries")
_SIMULATOR_KEYS = ("units", "rate", "seed", "site")
#: The C{[derived]} settings: the L{DerivedSettings} fields a file may set, by key.
_DERIVED_SETTINGS = {f.name: f for f in fields(DerivedSettings) if CONFIGURABLE in f.metadata}
#: ...the ones that need more than a type and bounds (L{_derived} checks them itself)...
_DERIVED_CHECKED_ABOVE = ("forecast_minutes", "timezone", "schedules", "zones")
#: ...and the key the table has besides them.
_DERIVED_SWITCH = "enabled"
_PERIOD_KEYS = ("days", "start", "end")
_ZONE_KEYS = ("heating", "cooling", "heating_threshold", "cooling_threshold", "site")


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
        tls: MqttTls | None = None
        if "tls" in t:
            tt = c.table(t["tls"], _join(path, "tls"))
            if tt is not None:
                tpath = _join(path, "tls")
                c.keys(tt, tpath, _TLS_KEYS)
                cert, key = c.file(tt, "cert", tpath), c.file(tt, "key", tpath)
                if "key" in tt and "cert" not in tt:
                    c.error(_join(tpath, "key"), "needs cert as well")
                ca = c.file(tt, "ca", tpath)
                tls = MqttTls(ca, cert, key, **_given(insecure=c.boolean(tt, "insecure", tpath)))
        port = c.integer(t, "port", path, None, 1, 65535)
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
        template = c.string(t, "topic_template", path, None, max_len=1024)
        if template is not None and (problem := check_topic_template(template)):
            c.error(_join(path, "topic_template"), problem)
            template = None
        rmin = c.number(t, "reconnect_min", path, _default(MqttBrokerConfig, "reconnect_min"), 0.01, 3600)
        rmax = c.number(t, "reconnect_max", path, _default(MqttBrokerConfig, "reconnect_max"), 0.01, 3600)
        if rmin is not None and rmax is not None and rmax < rmin:
            c.error(_join(path, "reconnect_max"), f"must be at least reconnect_min ({rmin:g})")
        # host may list the nodes of a clustered broker: "h1:1883,h2:1883,h3" (port: the default for all).
        addresses: tuple[tuple[str, int], ...] = (("", 0),)
        try:
            if host:
                addresses = parse_addresses(host, default_port(tls is not None) if port is None else port)
        except ValueError as e:
            c.error(_join(path, "host"), str(e))
        brokers.append(
            MqttBrokerConfig(
                name=name,
                broker=MqttBroker(
                    addresses[0][0], addresses[0][1], username, password, tls, fallbacks=addresses[1:],
                ),
                **_given(
                    client_id=c.string(t, "client_id", path, None, max_len=128),
                    keepalive=c.integer(t, "keepalive", path, None, 5, 3600),
                    topic_template=template,
                    discover=c.boolean(t, "discover", path),
                    reconnect_min=rmin,
                    reconnect_max=rmax,
                    payload=_payload_map(c, t, path),
                    homeassistant=_homeassistant(c, t, path),
                    sparkplug=_sparkplug(c, t, path),
                ),
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
        unit_id = c.integer(t, "unit_id", path, None, 0, 255)
        devices.append(
            ModbusDeviceConfig(
                name=name,
                host=c.string(t, "host", path, required=True, allow_empty=False) or "",
                **_given(
                    port=c.integer(t, "port", path, None, 1, 65535),
                    unit_id=unit_id,
                    poll_interval=c.number(t, "poll_interval", path, None, 0.01, 3600),
                    timeout=c.number(t, "timeout", path, None, 0.01, 60),
                    retries=c.integer(t, "retries", path, None, 0, 10),
                ),
            )
        )
    simulator: SimulatorConfig | None = None
    if "simulator" in doc:
        t = c.table(doc["simulator"], "simulator")
        if t is not None:
            c.keys(t, "simulator", _SIMULATOR_KEYS)
            site = c.string(t, "site", "simulator") or None  # an empty site is the default one
            if site is not None:
                c.name(site, "simulator.site")
            simulator = SimulatorConfig(
                **_given(
                    units=c.integer(t, "units", "simulator", None, 1, 1000),
                    rate=c.number(t, "rate", "simulator", None, 0.01, 1_000_000),
                    seed=c.integer(t, "seed", "simulator", None, 0, 2**32),
                    site=site,
                )
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
        interfaces.append(BacnetConfig(
            name=name,
            address=address,
            **_given(
                device_instance=c.integer(t, "device_instance", path, None, 0, MAX_INSTANCE),
                device_name=c.string(t, "device_name", path, None, max_len=64, allow_empty=False),
                apdu_timeout=c.number(t, "apdu_timeout", path, None, 0.05, 60),
                retries=c.integer(t, "retries", path, None, 0, 10),
                interval=c.number(t, "interval", path, None, 0.01, 86400),
                cov_lifetime=c.integer(t, "cov_lifetime", path, None, 2, 86400),
            ),
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
    # ISA-18.2 priority or the older severity: one name for the same setting (docs/alarms.md).
    severity = c.choice(t, "severity", path, None, SEVERITIES)
    priority = c.choice(t, "priority", path, None, tuple(PRIORITIES))
    if priority is not None:
        if severity is not None and PRIORITIES[priority] != severity:
            c.error(_join(path, "priority"), f"priority {priority} is severity {PRIORITIES[priority]}, "
                    f"not {severity}: give one of the two")
        severity = PRIORITIES[priority]
    group = c.string(t, "group", path, None, max_len=64, allow_empty=False)
    if group is not None:
        c.name(group, _join(path, "group"))
    return AlarmLimits(
        high=high,
        low=low,
        **_given(
            severity=severity,
            group=group,
            deadband=c.number(t, "deadband", path, None, 0.0),
            delay=c.number(t, "delay", path, None, 0.0, 86400),
            delay_normal=c.number(t, "delay_normal", path, None, 0.0, 86400),
            ack_required=c.boolean(t, "ack_required", path),
            latch=c.boolean(t, "latch", path),
            # BACnet notification classes are 0 to 4194303 (22 bits).
            notification_class=c.integer(t, "notification_class", path, None, 0, 4194303),
        ),
    )


def _register(c: _Checker, t: dict[str, Any], path: str, interval: float | None = None) -> RegisterConfig | None:
    """The register map of a Modbus point; None (with errors recorded) when it has none.

    The point's C{interval} (how often it promises an update) is also how often it is read.
    """
    table = c.choice(t, "table", path, None, MODBUS_TABLES)
    address = c.integer(t, "register", path, None, 0, 65535, required=True)
    if table in ("coil", "discrete"):
        for key in ("type", "word_order", "byte_order", "scale", "offset", "bit", "length"):
            if key in t:
                c.error(_join(path, key), f"not used for a {table} (it is read as true/false)")
        return None if address is None else RegisterConfig(address, table, "bool", **_given(interval=interval))
    kind = c.choice(t, "type", path, None, MODBUS_TYPES) or _default(RegisterConfig, "type")
    if kind.endswith("16") and "word_order" in t:
        c.error(_join(path, "word_order"), f"not used for {kind} (one register)")
    length: int | None = None
    if kind == "string":
        length = c.integer(t, "length", path, None, 1, MODBUS_MAX_STRING, required=True)
        for key in ("word_order", "scale", "offset", "bit"):
            if key in t:
                c.error(_join(path, key), "not used for a string")
    elif "length" in t:
        c.error(_join(path, "length"), f"only for type = \"string\" (this one is {kind})")
    registers = modbus_registers(kind, length or 0)
    if registers > 1 and address is not None and address > 65536 - registers:
        c.error(_join(path, "register"), f"a {kind} needs {registers} registers, {address} is too near the end")
    bit: int | None = None
    if "bit" in t and kind != "string":
        if kind.startswith("float"):
            c.error(_join(path, "bit"), f"needs an integer type, not {kind}")
        else:
            bit = c.integer(t, "bit", path, None, 0, 16 * registers - 1)
            for key in ("scale", "offset"):
                if key in t:
                    c.error(_join(path, key), "not used with bit (the value is true/false)")
    scale = c.number(t, "scale", path)
    if scale == 0:
        c.error(_join(path, "scale"), "must not be 0")
    word_order = c.choice(t, "word_order", path, None, WORD_ORDERS)
    byte_order = c.choice(t, "byte_order", path, None, WORD_ORDERS)
    offset = c.number(t, "offset", path)
    if address is None:
        return None
    return RegisterConfig(
        address,
        **_given(
            table=table, type=kind, word_order=word_order, scale=scale, offset=offset, bit=bit,
            byte_order=byte_order, length=length, interval=interval,
        ),
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
    hours = parse_clock(text)
    if hours is None:
        c.error(_join(path, key), f"expected a time from '00:00' to '24:00', got {text!r}")
    return hours


def _period(c: _Checker, raw: object, path: str) -> list[tuple[int, float, float]]:
    """One C{{ days = "mon-fri", start = "06:00", end = "20:00" }} table."""
    t = c.table(raw, path)
    if t is None:
        return []
    c.keys(t, path, _PERIOD_KEYS)
    days = c.string(t, "days", path, None, required=True)
    first = last = -1
    if days is not None:
        found = parse_days(days.lower())
        if found is None:
            c.error(_join(path, "days"), f"expected a day or a range of days like 'mon-fri', or 'daily', got {days!r}")
        else:
            first, last = found
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
) -> DerivedSettings | None:
    """The C{[derived]} table (docs/sources.md) as L{DerivedSettings}; None with C{enabled = false}.

    Its keys, checks and defaults are the configurable fields of L{DerivedSettings}, except that
    with a C{[simulator]} table the simulator's schedules for simulated units are the defaults (a
    schedule in the file wins). Units' C{kind} keys become C{kinds}. Unit and point references are
    checked against the file.
    """

    path = "derived"
    t = c.table(raw, path)
    if t is None:
        return None
    c.keys(t, path, (_DERIVED_SWITCH, *_DERIVED_SETTINGS))
    before = len(c.errors)
    enabled = c.boolean(t, _DERIVED_SWITCH, path)
    values: dict[str, Any] = {}
    kinds = {f"{unit.site}/{unit.id}": unit.kind for unit in units if unit.kind}
    if kinds:
        values["kinds"] = kinds
    minutes: list[int] = []
    if "forecast_minutes" in t:
        fpath = _join(path, "forecast_minutes")
        raw_minutes = t["forecast_minutes"]
        if not isinstance(raw_minutes, list):
            c.error(fpath, "expected an array of whole minutes, e.g. [5, 15, 30]")
        elif not raw_minutes:
            c.error(fpath, "must not be empty")
        for index, value in enumerate(raw_minutes if isinstance(raw_minutes, list) else []):
            where = f"{fpath}[{index}]"
            if isinstance(value, bool) or not isinstance(value, int):
                c.error(where, "expected an integer")
            elif not 1 <= value <= 1440:
                c.error(where, f"must be between 1 and 1440, got {value}")
            elif value in minutes:
                c.error(where, f"{value} appears twice")
            else:
                minutes.append(value)
        values["forecast_minutes"] = tuple(minutes)
    timezone = c.string(t, "timezone", path, None, allow_empty=False)
    if timezone is not None:
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(timezone)
        except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError; bad paths: ValueError
            c.error(_join(path, "timezone"), f"unknown time zone {timezone!r} (an IANA name, e.g. 'Europe/Paris')")
        values["timezone"] = timezone

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
    if simulator is not None:
        names = [unit_id.split("/", 1)[1] for unit_id in simulated_units]
        schedules.update(simulator_schedules(names, site=simulator.site))
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
    values["schedules"] = schedules

    zones: list[Zone] = []
    known_points = point_ids | simulated_points
    raw_zones = c.table(t["zones"], _join(path, "zones")) if "zones" in t else None
    for name, value in (raw_zones or {}).items():
        zpath = _join(_join(path, "zones"), name)
        z = c.table(value, zpath)
        if z is None or not c.name(name, zpath):
            continue
        c.keys(z, zpath, _ZONE_KEYS)
        zone_before = len(c.errors)
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
        thresholds = _given(
            heating_threshold=c.number(z, "heating_threshold", zpath),
            cooling_threshold=c.number(z, "cooling_threshold", zpath),
        )
        if len(c.errors) > zone_before:
            continue
        zones.append(Zone(name, inputs[0], inputs[1], site=site or inputs[0].split("/")[0], **thresholds))
    values["zones"] = tuple(zones)

    for key, setting in _DERIVED_SETTINGS.items():
        if key not in _DERIVED_CHECKED_ABOVE:
            value = _derived_setting(c, t, path, setting)
            if value is not None:
                values[key] = value
    if len(c.errors) > before or enabled is False:
        return None
    try:
        return DerivedSettings(**values)
    except ValueError as e:  # the checks above should leave nothing for it to refuse
        c.error(path, str(e))
        return None


def _derived_setting(c: _Checker, t: dict[str, Any], path: str, setting: Field[Any]) -> Any:
    """One plain C{[derived]} setting (a number, a text or a choice), checked as its field says; None when absent."""
    accepts = setting.metadata[CONFIGURABLE]
    if isinstance(setting.default, bool):
        return c.boolean(t, setting.name, path)
    if "choices" in accepts:
        return c.choice(t, setting.name, path, None, accepts["choices"])
    if isinstance(setting.default, float):
        return c.number(t, setting.name, path, None, **accepts)
    if isinstance(setting.default, str):
        return c.string(t, setting.name, path, None, **accepts)
    raise TypeError(f"DerivedSettings.{setting.name}: the plant file has no check for it")


def _check_input_unit(c: _Checker, point: PointConfig, path: str) -> None:
    """A point the derivations read (C{power}, C{load}, C{supply_temp}, C{return_temp}) must declare a unit of its quantity."""
    name = point.point_id.rsplit("/", 1)[1]
    quantity = INPUT_QUANTITIES.get(name)
    if quantity is None or not point.unit:
        return
    problem = check_unit(point.unit, quantity)
    if problem is not None:
        c.error(_join(path, "unit"), f"{problem}: {point.point_id} is an input of [derived]")


def _plant(c: _Checker, doc: dict[str, Any]) -> PlantConfig | None:
    c.keys(doc, "", _TOP_KEYS)
    brokers, devices, simulator = _sources(c, doc)
    bacnet = _bacnet_sources(c, doc)
    source_keys = {b.key: "mqtt" for b in brokers} | {d.key: "modbus" for d in devices}
    source_keys |= {b.key: "bacnet" for b in bacnet}
    templates = {b.key: b.topic_template for b in brokers}
    payload_defaults = {b.key: b.payload for b in brokers}
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
        sites.append(SiteConfig(site_id, **_given(name=c.string(t, "name", path))))
    site_ids = [s.id for s in sites]
    brokers = _ha_sites(c, brokers, site_ids)

    raw_derived = doc.get("derived")
    derives = raw_derived is not None and not (isinstance(raw_derived, dict) and raw_derived.get("enabled") is False)
    units: list[UnitConfig] = []
    points: list[PointConfig] = []
    seen_ids: dict[str, str] = {}
    seen_topics: dict[tuple[str, str, str | None], str] = {}
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
        kind = c.choice(u, "kind", upath, None, EQUIPMENT_KINDS)
        units.append(UnitConfig(unit_key, site, unit_id, **_given(name=c.string(u, "name", upath), kind=kind)))
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
            if derives:
                _check_input_unit(c, point, ppath)
            if point.topic is None and templates.get(point.source) == "":
                c.error(_join(ppath, "topic"), f"required: {point.source} has no topic_template")
                continue
            _check_shared_topic(c, point, ppath, payload_defaults, seen_topics)
            points.append(point)
    _check_bacnet_lookups(c, bacnet, points, seen_ids)
    derived = _derived(c, doc["derived"], simulator, units, set(seen_ids)) if "derived" in doc else None
    rules = _rules(c, doc["rules"], simulator, units, set(seen_ids)) if "rules" in doc else ()
    store = _store(c, doc)
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
        store=store,
        rules=rules,
    )


_THRESHOLD_KEYS = tuple(Thresholds.__dataclass_fields__)


def _rules(
    c: _Checker, raw: object, simulator: SimulatorConfig | None, units: Sequence[UnitConfig], point_ids: set[str],
) -> tuple[UnitRules, ...]:
    """The C{[rules.UNIT]} tables (docs/alarms.md): UNIT is a C{[units.KEY]} key, a simulated unit or C{site/unit}."""
    t = c.table(raw, "rules")
    if t is None:
        return ()
    unit_ids = {u.key: f"{u.site}/{u.id}" for u in units} | {f"{u.site}/{u.id}": f"{u.site}/{u.id}" for u in units}
    simulated_units, simulated_points = _simulated(simulator)
    unit_ids |= {unit_id.split("/", 1)[1]: unit_id for unit_id in simulated_units}
    unit_ids |= {unit_id: unit_id for unit_id in simulated_units}
    known_points = point_ids | simulated_points
    found: list[UnitRules] = []
    for key, body in t.items():
        path = _join("rules", key)
        r = c.table(body, path)
        if r is None:
            continue
        unit = unit_ids.get(key)
        if unit is None:
            c.error(path, "unknown unit: use a [units.KEY] key, a simulated unit's name or site/unit")
            continue
        c.keys(r, path, ("kind", "points", "ranges", "stuck") + _THRESHOLD_KEYS)
        errors_before = len(c.errors)

        def point_name(value: object, where: str) -> str | None:
            if not isinstance(value, str) or f"{unit}/{value}" not in known_points:
                c.error(where, f"expected the name of a point of {unit}, got {value!r}")
                return None
            return value

        roles: dict[str, str] = {}
        table = c.table(r["points"], _join(path, "points")) if "points" in r else {}
        for role, name in (table or {}).items():
            where = _join(_join(path, "points"), role)
            if role not in RULE_ROLES:
                c.error(where, f"unknown role (roles: {', '.join(RULE_ROLES)})")
            elif point_name(name, where) is not None:
                roles[role] = name
        ranges: dict[str, tuple[float, float]] = {}
        table = c.table(r["ranges"], _join(path, "ranges")) if "ranges" in r else {}
        for name, bounds in (table or {}).items():
            where = _join(_join(path, "ranges"), name)
            if point_name(name, where) is None:
                continue
            if (not isinstance(bounds, list) or len(bounds) != 2
                    or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
                    or not bounds[0] < bounds[1]):
                c.error(where, "expected [low, high] with low below high")
                continue
            ranges[name] = (float(bounds[0]), float(bounds[1]))
        stuck: list[str] = []
        listed = r.get("stuck", [])
        if not isinstance(listed, list):
            c.error(_join(path, "stuck"), "expected an array of point names")
            listed = []
        for index, name in enumerate(listed):
            if point_name(name, f"{_join(path, 'stuck')}[{index}]") is not None:
                stuck.append(name)
        thresholds = Thresholds(**_given(**{name: c.number(r, name, path, None, 0.0, 1e6) for name in _THRESHOLD_KEYS}))
        kind = c.choice(r, "kind", path, None, RULE_UNIT_KINDS) or "any"
        if len(c.errors) == errors_before:
            found.append(UnitRules(unit, kind, roles, thresholds, ranges, tuple(stuck)))
    return tuple(found)


def _store(c: _Checker, doc: dict[str, Any]) -> str | None:
    from hvac_push.store.url import check_store_url

    store = c.string(doc, "store", "", None, max_len=4096)
    if store is not None and (problem := check_store_url(store)):
        c.error("store", problem)
    return store


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
    unit = c.string(p, "unit", path, max_len=32)
    limits = _alarm(c, p["alarm"], _join(path, "alarm")) if "alarm" in p else None
    meta = PointMeta(
        **_given(
            name=c.string(p, "name", path),
            expected_interval=c.number(p, "interval", path, None, 0, 86400, positive=True),
            limits=limits,
        )
    )
    topic: str | None = None
    register: RegisterConfig | None = None
    if kind == "mqtt" and "topic" in p:
        topic = c.string(p, "topic", path, None, max_len=1024)
        if topic is not None and (problem := check_topic(topic)):
            c.error(_join(path, "topic"), problem)
    payload = _payload_map(c, p, path) if kind == "mqtt" else None
    if kind == "modbus":
        register = _register(c, p, path, meta.expected_interval)
    bacnet = _bacnet_object(c, p, path) if kind == "bacnet" else None
    if len(c.errors) > before or source is None or kind is None:
        return None
    return PointConfig(
        point_id, source, meta=meta, topic=topic, register=register,
        **_given(unit=unit, bacnet=bacnet, payload=None if payload is None or payload.plain else payload),
    )


# -- MQTT payload mapping (docs/sources.md, "Payload mapping") ------------------


def _payload_map(c: _Checker, t: dict[str, Any], path: str) -> PayloadMap:
    """C{json_path}, C{unit_path}, C{ts_path} and C{value_map} of an C{[mqtt.NAME]} table or an MQTT point."""
    paths: dict[str, str | None] = {}
    for key in ("json_path", "unit_path", "ts_path"):
        text = c.string(t, key, path, None, max_len=256)
        if text and (problem := check_path(text)):  # "" on a point: not the source's default
            c.error(_join(path, key), problem)
            text = None
        paths[key] = text
    value_map = None
    if "value_map" in t:
        where = _join(path, "value_map")
        raw = t["value_map"]
        if isinstance(raw, str):
            if raw not in BUILTIN_MAPS:
                c.error(where, f"unknown value map {raw!r}: give a table or one of {', '.join(BUILTIN_MAPS)}")
            else:
                value_map = make_value_map(BUILTIN_MAPS[raw])
        elif isinstance(raw, dict):
            if not raw or len(raw) > 256:
                c.error(where, "expected 1 to 256 entries")
            elif bad := [k for k, v in raw.items() if not isinstance(v, (bool, int, float, str))
                         or (isinstance(v, float) and not math.isfinite(v)) or (isinstance(v, str) and len(v) > 256)]:
                c.error(_join(where, bad[0]), "expected a number, true/false or a text of at most 256 characters")
            else:
                try:
                    value_map = make_value_map(raw)
                except ValueError as e:
                    c.error(where, str(e))
        else:
            c.error(where, f"expected a table like {{ ON = true, OFF = false }} or one of {', '.join(BUILTIN_MAPS)}")
    return PayloadMap(paths["json_path"], paths["unit_path"], paths["ts_path"], value_map)


_HA_KEYS = ("prefix", "site")


def _homeassistant(c: _Checker, t: dict[str, Any], path: str) -> HaDiscovery | None:
    """C{[mqtt.NAME.homeassistant]}: discovery on, with its topic prefix and the site of the points it creates."""
    if "homeassistant" not in t:
        return None
    hpath = _join(path, "homeassistant")
    h = c.table(t["homeassistant"], hpath)
    if h is None:
        return None
    c.keys(h, hpath, _HA_KEYS)
    prefix = c.string(h, "prefix", hpath, HA_PREFIX, max_len=256, allow_empty=False) or HA_PREFIX
    if problem := check_topic(prefix):
        c.error(_join(hpath, "prefix"), problem)
    elif prefix.startswith("/") or prefix.endswith("/"):
        c.error(_join(hpath, "prefix"), "must not start or end with '/'")
    site = c.string(h, "site", hpath, None, max_len=64, allow_empty=False)
    if site is not None:
        c.name(site, _join(hpath, "site"))
    return HaDiscovery(prefix, site or "")  # "": the plant's site, filled in by _ha_sites


def _ha_sites(c: _Checker, brokers: list[MqttBrokerConfig], site_ids: list[str]) -> list[MqttBrokerConfig]:
    """Discovered points without a C{site} go to the only declared site (or C{plant}), as units do."""
    from dataclasses import replace

    found = []
    for broker in brokers:
        ha = broker.homeassistant
        if ha is not None and not ha.site:
            if len(site_ids) > 1:
                c.error(_join(_join(_join("mqtt", broker.name), "homeassistant"), "site"),
                        "required when more than one site is declared")
            broker = replace(broker, homeassistant=replace(ha, site=site_ids[0] if site_ids else DEFAULT_SITE))
        found.append(broker)
    return found


_SPARKPLUG_KEYS = ("group", "site")


def _sparkplug(c: _Checker, t: dict[str, Any], path: str) -> SparkplugSettings | None:
    """C{[mqtt.NAME.sparkplug]}: follow Sparkplug B edge nodes of one group (or all), as points of a site."""
    if "sparkplug" not in t:
        return None
    spath = _join(path, "sparkplug")
    table = c.table(t["sparkplug"], spath)
    if table is None:
        return None
    c.keys(table, spath, _SPARKPLUG_KEYS)
    group = c.string(table, "group", spath, "+", max_len=256, allow_empty=False) or "+"
    if group != "+" and any(ch in group for ch in "/+#"):
        c.error(_join(spath, "group"), "must be one group id (no '/', '+' or '#'), or \"+\" for every group")
    site = c.string(table, "site", spath, None, max_len=64, allow_empty=False)
    if site is not None:
        c.name(site, _join(spath, "site"))
    return SparkplugSettings(group, site)


def _check_shared_topic(
    c: _Checker, point: PointConfig, path: str, defaults: dict[str, PayloadMap],
    seen: dict[tuple[str, str, str | None], str],
) -> None:
    """Several points may share a topic when each reads its own C{json_path} from it."""
    if point.topic is None:
        return
    payload = (point.payload or PayloadMap()).merged(defaults.get(point.source, PayloadMap()))
    where = (point.source, point.topic, payload.json_path or None)
    if where in seen:
        also = f"topic {point.topic!r} is also used at {seen[where]}"
        c.error(_join(path, "topic"), also if not payload.json_path else f"{also} with the same json_path")
    seen[where] = path


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
            derived = "; derived points on" if plant.derived is not None else ""
            out(f"{path}: ok: {len(plant.points)} points, sources: {', '.join(plant.source_keys()) or 'none'}{derived}")
    return status


__all__ = [
    "ConfigError",
    "MqttBrokerConfig",
    "ModbusDeviceConfig",
    "BacnetConfig",
    "BacnetObjectConfig",
    "PlantConfig",
    "PointConfig",
    "RegisterConfig",
    "SimulatorConfig",
    "SiteConfig",
    "UnitConfig",
    "load_config",
    "parse_config",
]

if __name__ == "__main__":
    sys.exit(main())
