"""Prometheus metrics of this process: ingest, FHIR API, delivery.

    from gateway.metrics import metrics
    metrics().ingest_records.labels(source="cht", outcome="stored").inc()
    with metrics().mapping_seconds.labels(source="cht").time(): ...

Counters and histograms are recorded where things happen (``metrics()``); queue depth,
lag, circuit state and live workers are read from the queue when ``/metrics`` is
scraped (``queue_families``), since the queue, not one process, knows them.

Labels name sources, destinations, interactions, outcomes and reason codes: bounded
sets fixed by the configuration and the code (reason codes that carry a destination's own
code, ``dhis2_E1082``, are kept to a safe shape and a few hundred per process:
``gateway.delivery.worker.reason_label``). Never a patient, a resource id or a value.

Several processes (uvicorn workers, ``gateway worker``): ``configure(multiprocess_dir)``
(from ``metrics.multiprocess_dir``, the settings' name for prometheus-client's
``PROMETHEUS_MULTIPROC_DIR``) makes every process write its samples there, and
``/metrics`` adds them up. The directory must be emptied when the processes start.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = ["CONTENT_TYPE", "GatewayMetrics", "QueueFigures", "configure", "metrics", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CIRCUIT_VALUES = {"closed": 0, "half_open": 1, "open": 2}


class GatewayMetrics:
    """The metric objects of one process, in one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.ingest_records = Counter(
            "gateway_ingest_records", "Source records received, by source and outcome (stored, unchanged,"
            " quarantined)", ["source", "outcome"], registry=registry,
        )  # fmt: skip
        self.mapping_seconds = Histogram(
            "gateway_mapping_seconds", "Time to map one source record to a FHIR Bundle", ["source"],
            buckets=_LATENCY, registry=registry,
        )  # fmt: skip
        self.validation_seconds = Histogram(
            "gateway_validation_seconds", "Time to validate one record's resources and prepare their writes",
            ["source"], buckets=_LATENCY, registry=registry,
        )  # fmt: skip
        self.store_seconds = Histogram(
            "gateway_store_write_seconds", "Time of one store transaction of ingested records",
            buckets=_LATENCY, registry=registry,
        )  # fmt: skip
        self.fhir_request_seconds = Histogram(
            "gateway_fhir_request_seconds", "FHIR API requests by interaction and status class (2xx, 4xx, 5xx)",
            ["interaction", "status"], buckets=_LATENCY, registry=registry,
        )  # fmt: skip
        self.delivery_attempts = Counter(
            "gateway_delivery_attempts", "Delivery attempts by destination, outcome (delivered, retry, dead,"
            " partial) and class (the reason code, e.g. http_503, timeout)",
            ["destination", "outcome", "class"], registry=registry,
        )  # fmt: skip
        self.delivery_seconds = Histogram(
            "gateway_delivery_seconds", "Time of one connector call (a job or a batch) by destination",
            ["destination"], buckets=_LATENCY, registry=registry,
        )  # fmt: skip
        self.circuit_transitions = Counter(
            "gateway_circuit_transitions", "Circuit breaker transitions by destination and new state",
            ["destination", "state"], registry=registry,
        )  # fmt: skip


_state: dict[str, Any] = {"metrics": None, "multiprocess_dir": None}


def configure(multiprocess_dir: Path | None) -> GatewayMetrics:
    """Set up this process's metrics (once, before any is recorded); see the module docstring."""
    if multiprocess_dir is not None:
        multiprocess_dir.mkdir(parents=True, exist_ok=True)
        # prometheus-client finds the directory through its environment variable only.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(multiprocess_dir)
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    _state["multiprocess_dir"] = multiprocess_dir
    _state["metrics"] = GatewayMetrics(CollectorRegistry(auto_describe=True))
    return _state["metrics"]  # type: ignore[no-any-return]


def metrics() -> GatewayMetrics:
    """This process's metrics (single-process ones unless ``configure`` said otherwise)."""
    current = _state["metrics"]
    if current is None:
        current = configure(None)
    return current  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class QueueFigures:
    """One destination as the queue reports it at scrape time."""

    destination: str
    depth: int
    oldest_age: float | None
    in_flight: int
    retrying: int
    dead: int
    circuit: str
    paused: bool
    lag_changes: int | None
    lag_seconds: float | None
    workers_alive: int


def queue_families(rows: Sequence[QueueFigures]) -> list[Metric]:
    """Gauges of the queue's state, one sample per destination."""

    def family(name: str, doc: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=["destination"])

    depth = family("gateway_queue_depth", "Live jobs (pending, in flight, retrying)")
    age = family("gateway_queue_oldest_age_seconds", "Age of the oldest live job")
    in_flight = family("gateway_queue_in_flight", "Jobs being delivered")
    retrying = family("gateway_queue_retrying", "Jobs waiting to be tried again")
    dead = family("gateway_queue_dead", "Dead letters")
    circuit = family("gateway_circuit_state", "Circuit breaker: 0 closed, 1 half-open, 2 open")
    paused = family("gateway_destination_paused", "1 while delivery is paused by an operator")
    lag_changes = family("gateway_delivery_lag_changes", "Changes committed but not yet delivered")
    lag_seconds = family("gateway_delivery_lag_seconds", "Age of the oldest change not yet delivered")
    workers = family("gateway_workers_alive", "Live delivery workers serving the destination")
    for row in rows:
        label = [row.destination]
        depth.add_metric(label, row.depth)
        age.add_metric(label, row.oldest_age or 0.0)
        in_flight.add_metric(label, row.in_flight)
        retrying.add_metric(label, row.retrying)
        dead.add_metric(label, row.dead)
        circuit.add_metric(label, CIRCUIT_VALUES.get(row.circuit, 0))
        paused.add_metric(label, int(row.paused))
        if row.lag_changes is not None:
            lag_changes.add_metric(label, row.lag_changes)
        if row.lag_seconds is not None:
            lag_seconds.add_metric(label, row.lag_seconds)
        workers.add_metric(label, row.workers_alive)
    return [depth, age, in_flight, retrying, dead, circuit, paused, lag_changes, lag_seconds, workers]


class _Families:
    """A collector that yields families computed beforehand (the queue is read asynchronously)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        """The families."""
        yield from self.families


def render(queue_rows: Sequence[QueueFigures] = ()) -> bytes:
    """The text exposition of this process's metrics (all processes' in multi-process mode) and the queue's."""
    current = metrics()
    registry: CollectorRegistry
    if _state["multiprocess_dir"] is not None:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(_state["multiprocess_dir"]))  # type: ignore[no-untyped-call]
    else:
        registry = CollectorRegistry()
        registry.register(_Families(current.registry.collect()))
    registry.register(_Families(queue_families(queue_rows)))
    return generate_latest(registry)
