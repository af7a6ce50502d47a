"""The store's counters as Prometheus families, read at scrape time (registered by L{hvac_push.ops.service})."""

from __future__ import annotations

from typing import Any, Iterator

from hvac_push.store.writer import StoreWriter


class StoreCollector:
    """Reads one L{StoreWriter}'s counters when C{/metrics} is scraped."""

    def __init__(self, writer: StoreWriter):
        self.writer = writer

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        stats = self.writer.stats
        yield CounterMetricFamily("hvacpush_store_samples_written", "Samples written to the store", value=stats.samples_written)
        yield CounterMetricFamily("hvacpush_store_journal_written", "Alarm journal entries written to the store",
                                  value=stats.journal_written)
        yield CounterMetricFamily("hvacpush_store_transactions", "Store write transactions committed",
                                  value=stats.transactions)
        yield CounterMetricFamily("hvacpush_store_samples_dropped",
                                  "Samples never written: more were waiting than the bound", value=stats.samples_dropped)
        yield CounterMetricFamily("hvacpush_store_journal_dropped", "Alarm journal entries never written",
                                  value=stats.journal_dropped)
        yield CounterMetricFamily("hvacpush_store_write_failures",
                                  "Store write transactions that failed (disk full, database away)", value=stats.failures)
        yield GaugeMetricFamily("hvacpush_store_writing", "1 while store writes succeed, 0 while they fail",
                                value=1 if stats.healthy else 0)
        yield GaugeMetricFamily("hvacpush_store_pending", "Samples and journal entries waiting for the writer",
                                value=self.writer.pending)
        yield GaugeMetricFamily("hvacpush_store_last_write_seconds", "Duration of the newest write transaction",
                                value=stats.last_write_seconds)
