"""hvac_push.ops.plant_file (and how hvac_push.ops.plant_sources and the tap use it): the example loads, bad
files give one exact line each."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage

from hvac_push.ops.plant_file import ConfigError, PlantConfig, load_config, main, parse_config
from hvac_push.core.points import AlarmLimits, PointMeta
from hvac_push.ops.tap import Options, makeService
from hvac_push.sources.simulator import SimulatorProducer
from tests.helpers import point_of

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "plant.example.toml"
TWISTD = str(Path(sys.executable).with_name("twistd"))

GOOD = """
[mqtt.main]
host = "127.0.0.1"
port = 18830

[modbus.plc]
host = "127.0.0.1"
port = 15020
poll_interval = 0.5

[units.chiller-1]
source = "modbus.plc"

[units.chiller-1.points.supply_temp]
unit = "°C"
register = 100
type = "float32"
"""


def parse(text: str) -> PlantConfig:
    return parse_config(textwrap.dedent(text), "plant.toml")


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as e:
        parse(text)
    return e.value.errors[0]


def test_the_shipped_example_loads():
    plant = load_config(str(EXAMPLE))
    assert plant.source_keys() == ["mqtt.main", "modbus.chiller-1-plc"]
    by_id = {p.point_id: p for p in plant.points}
    assert set(by_id) == {
        "plant/chiller-1/supply_temp", "plant/chiller-1/return_temp", "plant/chiller-1/compressor",
        "plant/ahu-1/supply_temp", "plant/ahu-1/fan_speed",
    }
    supply = by_id["plant/chiller-1/supply_temp"]
    assert supply.source == "modbus.chiller-1-plc" and supply.unit == "°C"
    assert supply.meta == PointMeta(
        "Chilled water supply", 5.0, AlarmLimits(high=9.0, low=4.0, deadband=0.3, delay=30.0, severity="major")
    )
    assert supply.register is not None and (supply.register.address, supply.register.type) == (100, "float32")
    returned, compressor = by_id["plant/chiller-1/return_temp"].register, by_id["plant/chiller-1/compressor"].register
    assert returned is not None and returned.scale == 0.1
    assert compressor is not None and compressor.table == "coil"
    assert by_id["plant/ahu-1/fan_speed"].topic == "bms/ahu1/fan/speed"
    assert plant.brokers[0].topic_template == "hvac/{site}/{unit}/{point}"
    assert plant.simulator is None


@pytest.mark.parametrize(
    "text, message",
    [
        (
            GOOD.replace("register = 100", 'register = "100"'),
            "plant.toml: units.chiller-1.points.supply_temp.register: expected an integer",
        ),
        (
            GOOD.replace("register = 100", "regster = 100"),
            "plant.toml: units.chiller-1.points.supply_temp.regster: unknown key (did you mean 'register'?)",
        ),
        (
            GOOD.replace("register = 100", "register = 70000"),
            "plant.toml: units.chiller-1.points.supply_temp.register: must be between 0 and 65535, got 70000",
        ),
        (
            GOOD.replace('type = "float32"', 'type = "float"'),
            "plant.toml: units.chiller-1.points.supply_temp.type: "
            "expected one of int16, uint16, int32, uint32, int64, uint64, float32, float64, string, got 'float'",
        ),
        (
            GOOD.replace('source = "modbus.plc"', 'source = "modbus.plc2"'),
            "plant.toml: units.chiller-1.source: unknown source 'modbus.plc2'; declared: modbus.plc, mqtt.main",
        ),
        (
            GOOD.replace('host = "127.0.0.1"\nport = 18830', "port = 18830"),
            "plant.toml: mqtt.main.host: required",
        ),
        (
            GOOD.replace("port = 15020", "port = 0"),
            "plant.toml: modbus.plc.port: must be between 1 and 65535, got 0",
        ),
        (
            GOOD.replace("poll_interval = 0.5", "poll_interval = true"),
            "plant.toml: modbus.plc.poll_interval: expected a number",
        ),
        (
            GOOD + 'topic = "a/b"\n',
            "plant.toml: units.chiller-1.points.supply_temp.topic: only for MQTT points (this one's source is modbus.plc)",
        ),
        (
            GOOD + "[units.chiller-1.points.supply_temp.alarm]\nhigh = 5\nlow = 9\n",
            "plant.toml: units.chiller-1.points.supply_temp.alarm.low: must be below high (5), got 9",
        ),
        (
            GOOD + '[units.chiller-1.points.supply_temp.alarm]\nseverity = "bad"\n',
            "plant.toml: units.chiller-1.points.supply_temp.alarm.severity: "
            "expected one of critical, major, minor, warning, got 'bad'",
        ),
        (
            GOOD + "[units.chiller-1.points.flow]\nregister = 3\ntable = \"coil\"\nscale = 2\n",
            "plant.toml: units.chiller-1.points.flow.scale: not used for a coil (it is read as true/false)",
        ),
        (
            GOOD + '[units.ahu-1.points.fan]\nsource = "mqtt.main"\ntopic = "bms/+/fan"\n',
            "plant.toml: units.ahu-1.points.fan.topic: must be an exact topic, without '+' or '#'",
        ),
        (
            GOOD.replace("port = 18830", 'port = 18830\ntopic_template = "hvac/{site}/{point}"'),
            "plant.toml: mqtt.main.topic_template: missing {unit}",
        ),
        (
            GOOD + '[units."bad unit".points.p]\nsource = "mqtt.main"\n',
            'plant.toml: units."bad unit": bad name: use letters, digits, \'_\', \'.\' or \'-\' '
            "(at most 64, not starting with '.' or '-')",
        ),
        (
            GOOD + "[units.ahu-1.points.fan]\nunit = \"%\"\n",
            "plant.toml: units.ahu-1.points.fan.source: required (here or on the unit)",
        ),
        (GOOD + "[extra]\n", "plant.toml: extra: unknown key"),
        (GOOD + "[modbus.plc]\n", "plant.toml: TOML syntax error: Cannot declare ('modbus', 'plc') twice (at line 18, column 12)"),
        (
            GOOD.replace("port = 18830", 'port = 18830\npassword = "x"'),
            "plant.toml: mqtt.main.username: required when a password is given",
        ),
        (
            GOOD.replace("port = 18830", 'port = 18830\n[mqtt.main.tls]\nca = "missing-ca.pem"'),
            "plant.toml: mqtt.main.tls.ca: cannot read file 'missing-ca.pem'",
        ),
        (
            "[sites.a]\n[sites.b]\n" + GOOD,
            "plant.toml: units.chiller-1.site: required when more than one site is declared",
        ),
    ],
)
def test_bad_configs_give_one_exact_line(text, message):
    assert error_of(text) == message


def test_a_typo_is_reported_with_what_it_leaves_missing():
    with pytest.raises(ConfigError) as e:
        parse(GOOD.replace("register = 100", "regster = 100"))
    assert e.value.errors == [
        "plant.toml: units.chiller-1.points.supply_temp.regster: unknown key (did you mean 'register'?)",
        "plant.toml: units.chiller-1.points.supply_temp.register: required",
    ]


def test_every_problem_is_collected():
    text = GOOD.replace("register = 100", 'register = "x"').replace("port = 0", "") + "[simulator]\nunits = 0\nrat = 1\n"
    with pytest.raises(ConfigError) as e:
        parse(text)
    assert e.value.errors == [
        "plant.toml: simulator.rat: unknown key (did you mean 'rate'?)",
        "plant.toml: simulator.units: must be between 1 and 1000, got 0",
        "plant.toml: units.chiller-1.points.supply_temp.register: expected an integer",
    ]
    assert str(e.value) == "plant.toml: simulator.rat: unknown key (did you mean 'rate'?) (and 2 more)"


def test_files_are_read_relative_to_the_config(tmp_path):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "mqtt.pw").write_text("hunter2\n")
    config = tmp_path / "plant.toml"
    config.write_text(GOOD.replace("port = 18830", 'port = 18830\nusername = "hvac"\npassword_file = "secrets/mqtt.pw"'))
    plant = load_config(str(config))
    assert plant.brokers[0].broker.password == "hunter2"
    assert "hunter2" not in repr(plant)
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as e:
        load_config(str(missing))
    assert str(e.value) == f"{missing}: cannot read: No such file or directory"


def test_the_check_command_lists_every_problem(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[units.a.points.b]\nsource = 5\nunit = 7\n")
    lines: list[str] = []
    assert main([str(EXAMPLE), str(bad)], out=lines.append) == 1
    assert lines[0].endswith("ok: 5 points, sources: mqtt.main, modbus.chiller-1-plc")
    assert lines[1:] == [
        f"{bad}: units.a.points.b.source: expected a string",
        f"{bad}: units.a.points.b.unit: expected a string",
    ]


# -- twistd ----------------------------------------------------------------------


def test_config_option_builds_the_sources_instead_of_the_simulator(tmp_path):
    path = tmp_path / "plant.toml"
    path.write_text(GOOD + "[units.chiller-1.points.supply_temp.alarm]\nhigh = 9\n")
    options = Options()
    options.parseOptions(["--config", str(path)])
    service = makeService(options, reactor=MemoryReactorClock())
    assert sorted(p.producer.name for p in service.producers) == ["modbus.plc", "mqtt.main"]
    meta = service.hub.meta["plant/chiller-1/supply_temp"]
    assert meta.limits == AlarmLimits(high=9.0)


def test_a_simulator_table_keeps_the_simulator(tmp_path):
    path = tmp_path / "plant.toml"
    path.write_text("[simulator]\nunits = 2\nrate = 5\n")
    options = Options()
    options.parseOptions(["--config", str(path)])
    service = makeService(options, reactor=MemoryReactorClock())
    assert [p.producer.name for p in service.producers] == ["simulator"]
    simulator = service.producers[0].producer
    assert isinstance(simulator, SimulatorProducer) and simulator.model.unit_names == ["chiller-1", "crac-1"]


def test_a_bad_config_is_a_usage_error(tmp_path):
    path = tmp_path / "plant.toml"
    path.write_text(GOOD.replace("register = 100", 'register = "100"'))
    with pytest.raises(usage.UsageError) as e:
        Options().parseOptions(["--config", str(path)])
    assert str(e.value) == f"{path}: units.chiller-1.points.supply_temp.register: expected an integer"


@pytest.mark.slow
def test_twistd_with_a_bad_config_ends_with_the_one_line(tmp_path):
    (tmp_path / "plant.toml").write_text(GOOD.replace("register = 100", 'register = "100"'))
    result = subprocess.run(
        [TWISTD, "-n", "--pidfile=", "hvacpush", "--config", "plant.toml", "--listen", "tcp:0:interface=127.0.0.1"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    (line,) = output.strip().splitlines()
    assert line.endswith("plant.toml: units.chiller-1.points.supply_temp.register: expected an integer"
                         " (see: twistd hvacpush --help)")


# -- [derived] ---------------------------------------------------------------------

DERIVED = GOOD + """
[units.chiller-1.points.power]
unit = "kW"
register = 110

[units.chiller-1.points.compressor]
register = 1
table = "coil"

[units.ahu-1.points.reheat_valve]
source = "mqtt.main"
unit = "%"

[derived]
"""


def test_derived_defaults_are_those_of_derived_settings():
    from hvac_push.analytics.derived import DerivedSettings

    plant = parse(DERIVED)
    assert plant.derived == DerivedSettings()  # no simulator: exactly the library defaults
    assert parse(GOOD).derived is None
    assert parse(DERIVED + "enabled = false\n").derived is None


def test_derived_keys_are_the_configurable_settings():
    """A [derived] key is a DerivedSettings field: adding a setting there adds it to the file."""
    from dataclasses import fields

    from hvac_push.analytics.derived import CONFIGURABLE, DerivedSettings

    configurable = {f.name for f in fields(DerivedSettings) if CONFIGURABLE in f.metadata}
    assert configurable == {
        "forecast_minutes", "tariff", "currency", "energy_max_gap", "max_starts_per_hour", "cop_window",
        "cop_min_power", "running_kw", "predict_within_min", "severity", "timezone", "schedules", "zones",
        "forecast_gate", "forecast_cycle",
    }
    assert error_of(DERIVED + "limit_lookahead_min = 60\n") == "plant.toml: derived.limit_lookahead_min: unknown key"


def test_derived_table_maps_onto_derived_settings():
    from hvac_push.analytics.derived import Schedule, Zone

    plant = parse(DERIVED + """
forecast_minutes = [10, 60]
tariff = 0.21
currency = "CHF"
energy_max_gap = 120
max_starts_per_hour = 4
cop_window = 600
cop_min_power = 2
running_kw = 3
predict_within_min = 20
severity = "minor"
timezone = "Europe/Paris"

[derived.schedules]
chiller-1 = "always"
ahu-1 = [
  { days = "mon-fri", start = "6:00", end = "20:00" },
  { days = "sat", start = "08:00", end = "12:30" },
]

[derived.zones.zone-3]
heating = "plant/ahu-1/reheat_valve"
cooling = "plant/chiller-1/compressor"
heating_threshold = 5
""")
    settings = plant.derived
    assert settings is not None
    assert settings.forecast_minutes == (10, 60)
    assert (settings.tariff, settings.currency, settings.energy_max_gap) == (0.21, "CHF", 120.0)
    assert (settings.max_starts_per_hour, settings.cop_window, settings.cop_min_power) == (4.0, 600.0, 2.0)
    assert (settings.running_kw, settings.predict_within_min, settings.severity) == (3.0, 20.0, "minor")
    assert settings.timezone == "Europe/Paris"
    assert dict(settings.schedules) == {
        "plant/chiller-1": Schedule.parse("always"),
        "plant/ahu-1": Schedule.parse("mon-fri 06:00-20:00; sat 08:00-12:30"),
    }
    assert settings.zones == (
        Zone("zone-3", "plant/ahu-1/reheat_valve", "plant/chiller-1/compressor", site="plant", heating_threshold=5.0),
    )
    hash(plant)  # still frozen and hashable


def test_derived_with_a_simulator_uses_the_simulator_defaults():
    from hvac_push.analytics.derived import Schedule, simulator_settings

    plant = parse('[simulator]\nunits = 3\nsite = "sim"\n\n[derived]\nschedules = { chiller-1 = "mon-fri 07:00-19:00" }\n')
    settings = plant.derived
    expected = simulator_settings(["chiller-1", "crac-1", "ahu-1"])
    # The usual 6 starts per hour: the simulator's compressors no longer short-cycle (issue 19).
    assert settings is not None and settings.max_starts_per_hour == expected.max_starts_per_hour == 6.0
    assert dict(settings.schedules) == {
        "sim/chiller-1": Schedule.parse("mon-fri 07:00-19:00"),  # the file's own wins
        "sim/crac-1": expected.schedules["crac-1"],
        "sim/ahu-1": expected.schedules["ahu-1"],
    }


@pytest.mark.parametrize(
    "extra, message",
    [
        ("enabeld = true\n", "plant.toml: derived.enabeld: unknown key (did you mean 'enabled'?)"),
        ('enabled = "yes"\n', "plant.toml: derived.enabled: expected true or false"),
        ("forecast_minutes = 15\n", "plant.toml: derived.forecast_minutes: expected an array of whole minutes, e.g. [5, 15, 30]"),
        ("forecast_minutes = []\n", "plant.toml: derived.forecast_minutes: must not be empty"),
        ("forecast_minutes = [5, 0]\n", "plant.toml: derived.forecast_minutes[1]: must be between 1 and 1440, got 0"),
        ("forecast_minutes = [5, 7.5]\n", "plant.toml: derived.forecast_minutes[1]: expected an integer"),
        ("forecast_minutes = [15, 15]\n", "plant.toml: derived.forecast_minutes[1]: 15 appears twice"),
        ("tariff = -0.1\n", "plant.toml: derived.tariff: must be between 0 and 1000, got -0.1"),
        ('tariff = "0.2"\n', "plant.toml: derived.tariff: expected a number"),
        ('currency = ""\n', "plant.toml: derived.currency: must not be empty"),
        ("energy_max_gap = 0\n", "plant.toml: derived.energy_max_gap: must be greater than 0, got 0"),
        ("max_starts_per_hour = -1\n", "plant.toml: derived.max_starts_per_hour: must be between 0 and 3600, got -1"),
        ('severity = "high"\n', "plant.toml: derived.severity: expected one of critical, major, minor, warning, got 'high'"),
        (
            'timezone = "Mars/Olympus"\n',
            "plant.toml: derived.timezone: unknown time zone 'Mars/Olympus' (an IANA name, e.g. 'Europe/Paris')",
        ),
        (
            'schedules = { chiller-9 = "always" }\n',
            "plant.toml: derived.schedules.chiller-9: unknown unit 'chiller-9'; units: ahu-1, chiller-1",
        ),
        (
            'schedules = { chiller-1 = "weekdays" }\n',
            "plant.toml: derived.schedules.chiller-1: bad schedule period 'weekdays': expected e.g. 'mon-fri 06:00-20:00'",
        ),
        (
            'schedules = { chiller-1 = "" }\n',
            "plant.toml: derived.schedules.chiller-1: must not be empty (write 'always', or periods like 'mon-fri 06:00-20:00')",
        ),
        (
            'schedules = { chiller-1 = { days = "weekdays", start = "06:00", end = "20:00" } }\n',
            "plant.toml: derived.schedules.chiller-1.days: "
            "expected a day or a range of days like 'mon-fri', or 'daily', got 'weekdays'",
        ),
        (
            'schedules = { chiller-1 = { days = "fri-mon", start = "06:00", end = "20:00" } }\n',
            "plant.toml: derived.schedules.chiller-1.days: the range must run from Monday towards Sunday, got 'fri-mon'",
        ),
        (
            'schedules = { chiller-1 = { days = "daily", start = "6am", end = "20:00" } }\n',
            "plant.toml: derived.schedules.chiller-1.start: expected a time from '00:00' to '24:00', got '6am'",
        ),
        (
            'schedules = { chiller-1 = [{ days = "sat", start = "12:00", end = "08:00" }] }\n',
            "plant.toml: derived.schedules.chiller-1[0].end: must be after start (12:00), got '08:00'",
        ),
        (
            'schedules = { chiller-1 = { days = "sat", start = "08:00" } }\n',
            "plant.toml: derived.schedules.chiller-1.end: required",
        ),
        (
            'schedules = { chiller-1 = { days = "sat", start = "08:00", end = "12:00", tz = "UTC" } }\n',
            "plant.toml: derived.schedules.chiller-1.tz: unknown key",
        ),
        (
            "schedules = { chiller-1 = 24 }\n",
            "plant.toml: derived.schedules.chiller-1: expected 'always', a string like 'mon-fri 06:00-20:00', a table "
            '{ days = "mon-fri", start = "06:00", end = "20:00" } or an array of such tables',
        ),
        (
            '[derived.zones.zone-1]\nheating = "plant/ahu-1/reheat"\ncooling = "plant/chiller-1/supply_temp"\n',
            "plant.toml: derived.zones.zone-1.heating: unknown point 'plant/ahu-1/reheat': "
            "give the id of a declared or simulated point, e.g. 'plant/vav-3/reheat_valve'",
        ),
        (
            '[derived.zones.zone-1]\nheating = "plant/ahu-1/reheat_valve"\n',
            "plant.toml: derived.zones.zone-1.cooling: required",
        ),
        (
            '[derived.zones.zone-1]\nheating = "plant/ahu-1/reheat_valve"\ncooling = "plant/chiller-1/power"\n'
            "cooling_threshold = true\n",
            "plant.toml: derived.zones.zone-1.cooling_threshold: expected a number",
        ),
    ],
)
def test_bad_derived_tables_give_one_exact_line(extra, message):
    assert error_of(DERIVED + extra) == message


def test_a_derived_table_must_be_a_table():
    assert error_of(GOOD.replace("[mqtt.main]", "derived = true\n\n[mqtt.main]")) == "plant.toml: derived: expected a table"


def test_the_commented_derived_example_is_valid():
    """docs/plant.example.toml ships [derived] commented out; uncommented, it must load."""
    text = EXAMPLE.read_text(encoding="utf-8")
    start = text.index("# [derived]")
    block = text[start:].split("\n\n", 1)[0]
    lines = [line[2:] if line.startswith("# ") else line for line in block.splitlines()]
    assert all(not line.startswith("#") for line in lines), block
    plant = parse_config(text.replace(block, "\n".join(lines)), str(EXAMPLE), str(EXAMPLE.parent))
    assert plant.derived is not None and plant.derived.schedules and plant.derived.zones


def test_config_option_with_a_derived_table_computes_derived_points(tmp_path):
    from hvac_push.core.points import Sample

    path = tmp_path / "plant.toml"
    path.write_text(DERIVED + "tariff = 0.5\n")
    options = Options()
    options.parseOptions(["--config", str(path)])
    service = makeService(options, reactor=MemoryReactorClock())
    service.hub.publish(Sample("plant/chiller-1/power", 60.0, "kW", 0.0))
    service.hub.publish(Sample("plant/chiller-1/power", 60.0, "kW", 60.0))
    assert point_of(service.hub, "plant/chiller-1/energy_kwh").value == pytest.approx(1.0)
    assert point_of(service.hub, "plant/chiller-1/energy_cost").value == pytest.approx(0.5)
    path.write_text(GOOD)
    options = Options()
    options.parseOptions(["--config", str(path)])
    service = makeService(options, reactor=MemoryReactorClock())
    service.hub.publish(Sample("plant/chiller-1/power", 60.0, "kW", 0.0))
    service.hub.publish(Sample("plant/chiller-1/power", 60.0, "kW", 60.0))
    assert service.hub.get("plant/chiller-1/energy_kwh") is None  # no [derived], no derived points


def test_derived_flag_with_a_config_is_a_usage_error(tmp_path):
    path = tmp_path / "plant.toml"
    path.write_text(GOOD)
    with pytest.raises(usage.UsageError) as e:
        Options().parseOptions(["--config", str(path), "--derived"])
    assert str(e.value) == "--derived: with --config, add a [derived] table to the config file instead"


def test_the_check_command_says_when_derived_points_are_on(tmp_path):
    path = tmp_path / "plant.toml"
    path.write_text("[simulator]\nunits = 2\n\n[derived]\n")
    lines: list[str] = []
    assert main([str(path)], out=lines.append) == 0
    assert lines == [f"{path}: ok: 0 points, sources: simulator; derived points on"]
