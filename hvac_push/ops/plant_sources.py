"""From a validated L{PlantConfig} to running producers, and reloading it on SIGHUP.

L{producer_specs} reduces a config to one hashable spec per source (what that
source's producer needs, and nothing else: display names and alarm limits are
not in it). L{ConfigReloader} owns the producers built from those specs; on
reload it compares old and new specs and restarts only the producers whose spec
changed, so clients stay connected and unchanged sources keep running.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from dataclasses import replace
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.logger import Logger

from hvac_push.ops.plant_file import (
    SIMULATOR,
    BacnetConfig,
    ConfigError,
    ModbusDeviceConfig,
    MqttBrokerConfig,
    PlantConfig,
    PointConfig,
    SimulatorConfig,
    load_config,
)
from hvac_push.core.points import PointMeta
from hvac_push.core.publisher import Producer
from hvac_push.sources.supervisor import ProducerService

from hvac_push.analytics.derived import DerivedPoints
from hvac_push.analytics.rules import FaultRules
from hvac_push.ops.service import PushService
from hvac_push.sources.simulator import SimulatorProducer

#: A source config with the producer-facing part of its points: equal specs, same producer.
Spec = tuple[object, tuple[PointConfig, ...]]
Factory = Callable[[Spec], Producer]


def _point_address(point: PointConfig) -> PointConfig:
    """The point without what only the hub needs (name, interval, alarm limits)."""
    return replace(point, meta=PointMeta())


def producer_specs(config: PlantConfig) -> dict[str, Spec]:
    """Source key -> spec, for every source that has something to do."""
    specs: dict[str, Spec] = {}
    for broker in config.brokers:
        points = tuple(_point_address(p) for p in config.points_of(broker.key))
        if points or broker.discover or broker.homeassistant is not None or broker.sparkplug is not None:
            specs[broker.key] = (broker, points)
    for device in config.devices:
        points = tuple(_point_address(p) for p in config.points_of(device.key))
        if points:  # a device nobody reads from is not polled
            specs[device.key] = (device, points)
    for interface in config.bacnet:
        points = tuple(_point_address(p) for p in config.points_of(interface.key))
        if points:  # an interface nobody reads from opens no socket
            specs[interface.key] = (interface, points)
    if config.simulator is not None:
        specs[SIMULATOR] = (config.simulator, ())
    return specs


def build_producer(spec: Spec) -> Producer:
    """The producer for one spec (imports paho / pymodbus / bacpypes3 only when they are used)."""
    source, points = spec
    if isinstance(source, MqttBrokerConfig):
        from hvac_push.sources.mqtt import MqttPoint, MqttProducer, PayloadMap

        return MqttProducer(
            source.key,
            source.broker,
            points=[MqttPoint(p.point_id, p.topic, p.unit, p.payload or PayloadMap()) for p in points],
            topic_template=source.topic_template,
            discover=source.discover,
            payload=source.payload,
            homeassistant=source.homeassistant,
            sparkplug=source.sparkplug,
            client_id=source.client_id,
            keepalive=source.keepalive,
            reconnect_min=source.reconnect_min,
            reconnect_max=source.reconnect_max,
        )
    if isinstance(source, ModbusDeviceConfig):
        from hvac_push.sources.modbus import ModbusPoint, ModbusProducer

        modbus_points = []
        for p in points:
            r = p.register
            if r is None:
                raise ValueError(f"{p.point_id}: a Modbus point without a register")
            modbus_points.append(
                ModbusPoint(
                    p.point_id, r.address, r.table, r.type, r.word_order, r.scale, r.offset, p.unit,
                    bit=r.bit, byte_order=r.byte_order, length=r.length, interval=r.interval,
                )
            )
        return ModbusProducer(
            source.key,
            source.host,
            modbus_points,
            port=source.port,
            unit_id=source.unit_id,
            poll_interval=source.poll_interval,
            timeout=source.timeout,
            retries=source.retries,
        )
    if isinstance(source, BacnetConfig):
        from hvac_push.sources.bacnet import BacnetPoint, BacnetProducer

        bacnet_points = []
        for p in points:
            b = p.bacnet
            if b is None:
                raise ValueError(f"{p.point_id}: a BACnet point without an object")
            bacnet_points.append(BacnetPoint(
                p.point_id, b.object, device=b.device, address=b.address, property_name=b.property,
                cov_increment=b.cov_increment, unit=p.unit,
            ))
        return BacnetProducer(
            source.key,
            source.address,
            bacnet_points,
            device_instance=source.device_instance,
            device_name=source.device_name,
            apdu_timeout=source.apdu_timeout,
            retries=source.retries,
            interval=source.interval,
            cov_lifetime=source.cov_lifetime,
        )
    if isinstance(source, SimulatorConfig):
        from hvac_push.sources.simulator import SimulatorProducer

        return SimulatorProducer(units=source.units, rate=source.rate, seed=source.seed, site=source.site)
    raise TypeError(f"no producer for {source!r}")


class ConfigReloader(Service):
    """Applies a plant config to a L{PushService}, and reloads it (SIGHUP or L{reload}).

    Creating it configures the hub's point metadata and adds one producer per
    source to C{push}; it then becomes a child of C{push}. With C{sighup=True}
    it installs a SIGHUP handler while running (main thread only; L{makeService}
    asks for it, embedders and tests normally do not).
    """

    log = Logger()

    def __init__(
        self,
        push: PushService,
        config: PlantConfig,
        *,
        path: str | None = None,
        sighup: bool = False,
        factory: Factory = build_producer,
        loader: Callable[[str], PlantConfig] = load_config,
        on_simulator: Callable[[PushService, SimulatorProducer], None] | None = None,
    ):
        self.push = push
        self.config = config
        # Absolute, so a reload finds the file whatever the working folder is by then.
        self.path = os.path.abspath(path or config.path)
        self.sighup = sighup
        self._factory = factory
        self._loader = loader
        self._on_simulator = on_simulator
        self._specs: dict[str, Spec] = {}
        #: Source key -> the service running its producer.
        self.sources: dict[str, ProducerService] = {}
        self._previous_handler: Any = None
        self._reloading: Deferred[bool] | None = None
        self._again = False
        self.reloads = 0
        self.last_error: str | None = None
        #: The derived points of the config's C{[derived]} table, while it has one (docs/derived.md).
        self.derived: DerivedPoints | None = None
        #: The fault detection rules of the config's C{[rules]} tables (docs/alarms.md).
        self.rules: FaultRules | None = None
        #: Called with every producer this reloader builds, at start and on each reload
        #: (L{hvac_push.ops.cluster.install_links} wires MQTT sources to take names and intervals).
        self.on_producer: list[Callable[[Producer], None]] = []
        self.setName("config-reloader")
        for key, spec in producer_specs(config).items():
            self._start(key, spec)
        self._configure(config, removed=())  # after _start: the config's metadata wins
        self._apply_derived(config)
        self._apply_rules(config)
        self._apply_kinds(config)
        self.setServiceParent(push)

    # -- applying --------------------------------------------------------------

    def _configure(self, config: PlantConfig, removed: Any) -> None:
        hub = self.push.hub
        for point_id in removed:
            hub.meta.pop(point_id, None)
        for point in config.points:
            hub.configure(point.point_id, point.meta)
        # Every configured point exists from the start (no value, status waiting),
        # so a device that never answers shows as its points, not as nothing.
        hub.declare((point.point_id, point.unit) for point in config.points)

    def _apply_kinds(self, config: PlantConfig) -> None:
        """The units' declared kinds, for the dashboard's overview (C{/plant.json})."""
        self.push.factory.unit_kinds = {f"{unit.site}/{unit.id}": unit.kind for unit in config.units if unit.kind}

    def _apply_derived(self, config: PlantConfig) -> None:
        """Start, replace or stop the derived points to match C{config}; unchanged settings keep them running.

        A replacement continues the energy totals from the hub (L{DerivedPoints} seeds them);
        forecasts and the compressor start history begin again. Derived points nothing
        computes any more keep their last value, marked C{stale}.
        """
        settings = config.derived
        old = self.derived
        if old is not None and settings == old.settings:
            return
        if old is None and settings is None:
            return
        if old is not None:
            old.close()
        self.derived = None
        if settings is not None:
            from hvac_push.analytics.derived import DerivedPoints

            self.derived = DerivedPoints(self.push.hub, self.push.reactor, settings, alarms=self.push.alarms)
        if old is not None:
            old.release_alarms(self.derived)
            gone = old.own
            if self.derived is not None:
                # The new object has re-derived from every current input, except the energy totals,
                # which it continues from the hub with the next power sample.
                kept = self.derived.own
                gone = {i for i in old.own if i not in kept and not i.endswith(("/energy_kwh", "/energy_cost"))}
            if gone:
                self.push.hub.set_status(sorted(gone), "stale")

    def _apply_rules(self, config: PlantConfig) -> None:
        """Replace the fault rules when their tables changed; the old ones clear what they raised."""
        if self.rules is not None and list(self.rules.rules.values()) == list(config.rules):
            return
        if self.rules is not None:
            self.rules.close()
        self.rules = FaultRules(self.push.hub, self.push.alarms, list(config.rules)) if config.rules else None

    def _start(self, key: str, spec: Spec) -> None:
        producer = self._factory(spec)
        if isinstance(producer, SimulatorProducer) and self._on_simulator is not None:
            self._on_simulator(self.push, producer)
        for hook in self.on_producer:
            hook(producer)
        self.sources[key] = self.push.add_producer(producer)
        self._specs[key] = spec

    async def _stop(self, key: str) -> None:
        service = self.sources.pop(key)
        self._specs.pop(key, None)
        if service in self.push.producers:
            self.push.producers.remove(service)
        await service.disownServiceParent()

    async def apply(self, config: PlantConfig) -> dict[str, list[str]]:
        """Switch to C{config}: restart changed sources only; return what happened by key."""
        new_specs = producer_specs(config)
        changed = [k for k, spec in self._specs.items() if new_specs.get(k) != spec]
        # Stop first, so a restarted source never runs twice at the same time.
        results = await DeferredList(
            [ensureDeferred(self._stop(key)) for key in changed], consumeErrors=True
        )
        for (ok, result), key in zip(results, changed):
            if not ok:
                self.log.failure("stopping source {key} failed", result, key=key)
        started = [k for k in new_specs if k not in self._specs]
        for key in started:
            self._start(key, new_specs[key])
        old_ids = {p.point_id for p in self.config.points}
        new_ids = {p.point_id for p in config.points}
        removed = sorted(old_ids - new_ids)
        self._configure(config, removed)
        if removed:
            # No source feeds them any more: keep the last value, flagged as not live.
            self.push.hub.set_status(removed, "stale")
        self._apply_derived(config)  # after _configure: new alarm limits are in place
        self._apply_kinds(config)
        self._apply_rules(config)
        self.config = config
        return {
            "stopped": sorted(set(changed) - set(new_specs)),
            "restarted": sorted(set(changed) & set(new_specs)),
            "started": sorted(set(started) - set(changed)),
            "kept": sorted(k for k in new_specs if k not in changed and k not in started),
        }

    def reload(self) -> Deferred[bool]:
        """Re-read the config file; fires True if the new config is in force.

        An invalid file is rejected with its one-line error logged, and the old
        config stays in force. A reload requested while one runs is done once
        more after it.
        """
        if self._reloading is not None:
            self._again = True
            return self._reloading
        self._reloading = ensureDeferred(self._reload_loop())

        def done(result: bool) -> bool:
            self._reloading = None
            return result

        return self._reloading.addBoth(done)

    async def _reload_loop(self) -> bool:
        ok = False
        for _ in range(10):  # bounded: at most this many back-to-back requests are merged
            self._again = False
            ok = await self._reload_once()
            if not self._again:
                break
        return ok

    async def _reload_once(self) -> bool:
        try:
            config = self._loader(self.path)
        except ConfigError as e:
            self.last_error = str(e)
            self.log.error("config reload rejected, keeping the running config: {error}", error=str(e))
            return False
        try:
            summary = await self.apply(config)
        except Exception:
            self.last_error = "applying the new config failed"
            self.log.failure("config reload: applying {path} failed", path=self.path)
            return False
        self.reloads += 1
        self.last_error = None
        self.log.info(
            "config reloaded from {path}: {points} points; started {started}, restarted {restarted}, "
            "stopped {stopped}, kept {kept}",
            path=self.path, points=len(config.points),
            **{k: ", ".join(v) or "none" for k, v in summary.items()},
        )
        return True

    # -- SIGHUP --------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.log.info(
            "plant config {path}: {points} points, sources: {sources}",
            path=self.path, points=len(self.config.points), sources=", ".join(self.sources) or "none",
        )
        if not self.sighup:
            return
        if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGHUP"):
            self.log.warn("not installing the SIGHUP handler: not in the main thread")
            return
        self._previous_handler = signal.signal(signal.SIGHUP, self._on_sighup)

    def stopService(self) -> None:
        super().stopService()
        if self._previous_handler is not None:
            signal.signal(signal.SIGHUP, self._previous_handler)
            self._previous_handler = None

    def _on_sighup(self, signum: int, frame: FrameType | None) -> None:
        # In a signal handler: do nothing but hand over to the reactor.
        self.push.reactor.callFromThread(self._reload_from_signal)

    def _reload_from_signal(self) -> None:
        self.log.info("SIGHUP: reloading {path}", path=self.path)
        self.reload()


def install_plant(
    push: PushService, config: PlantConfig, *, sighup: bool = False, on_simulator: Callable[[PushService, SimulatorProducer], None] | None = None
) -> ConfigReloader:
    """Configure C{push} from C{config}: point metadata, one producer per source, reload.

    C{on_simulator(push, producer)} is called before a simulator source starts
    (twistd uses it to give simulated points their expected intervals).
    """
    return ConfigReloader(push, config, sighup=sighup, on_simulator=on_simulator)


__all__ = ["ConfigReloader", "build_producer", "install_plant", "producer_specs"]
