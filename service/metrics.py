"""Prometheus metrics of the service (prometheus-client), one registry per application."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
TOKEN_BUCKETS = (64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


class ServiceMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("dnabert_requests", "Prediction requests", ["endpoint", "model", "status"], registry=r)
        self.sequences = Counter("dnabert_sequences", "Sequences predicted", ["endpoint", "model", "status"], registry=r)
        self.request_latency = Histogram("dnabert_request_seconds", "Total request latency",
                                         ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_latency = Histogram("dnabert_queue_seconds", "Time a sequence waited in the batch queue",
                                       ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.inference_latency = Histogram("dnabert_inference_seconds", "ONNX Runtime time per batch",
                                           ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("dnabert_batch_size", "Sequences per batch", ["model"],
                                    buckets=SIZE_BUCKETS, registry=r)
        self.padded_tokens = Histogram("dnabert_batch_padded_tokens", "Padded tokens per batch", ["model"],
                                       buckets=TOKEN_BUCKETS, registry=r)
        self.real_tokens = Counter("dnabert_real_tokens", "Non-padding tokens run", ["model"], registry=r)
        self.all_tokens = Counter("dnabert_padded_tokens", "Tokens run including padding", ["model"], registry=r)
        self.padding_efficiency = Gauge("dnabert_padding_efficiency",
                                        "Real / padded tokens of the last batch", ["model"], registry=r)
        self.queue_depth = Gauge("dnabert_queue_depth", "Sequences waiting", ["model"], registry=r)
        self.batch_failures = Counter("dnabert_batch_failures", "Failed batches", ["model"], registry=r)
        self.dropped = Counter("dnabert_dropped_sequences", "Queued sequences dropped before running",
                               ["model", "reason"], registry=r)
        self.rejected = Counter("dnabert_rejected_requests", "Requests refused", ["endpoint", "reason"], registry=r)
        # reason: no_informative_bases (answered without a score) or mostly_ambiguous (scored, flagged)
        self.uninformative = Counter("dnabert_uninformative_records",
                                     "Records answered without a score (no A/C/G/T) or scored but mostly ambiguous",
                                     ["endpoint", "reason"], registry=r)

    def observer(self, model: str) -> BatchMetrics:
        """The batcher's observer for one model; the queue-depth gauge is set only from it."""
        self.queue_depth.labels(model).set(0)
        return BatchMetrics(self, model)


class BatchMetrics:
    """The batcher's observer for one model."""

    def __init__(self, metrics: ServiceMetrics, model: str):
        self.m = metrics
        self.model = model

    def batch_done(self, *, size: int, padded_tokens: int, real_tokens: int, queue_seconds: list[float],
                   run_seconds: float, failed: bool) -> None:
        m, name = self.m, self.model
        m.batch_size.labels(name).observe(size)
        m.padded_tokens.labels(name).observe(padded_tokens)
        m.real_tokens.labels(name).inc(real_tokens)
        m.all_tokens.labels(name).inc(padded_tokens)
        if padded_tokens:
            m.padding_efficiency.labels(name).set(real_tokens / padded_tokens)
        m.inference_latency.labels(name).observe(run_seconds)
        hist = m.queue_latency.labels(name)
        for q in queue_seconds:
            hist.observe(q)
        if failed:
            m.batch_failures.labels(name).inc()

    def queue_depth(self, depth: int) -> None:
        self.m.queue_depth.labels(self.model).set(depth)

    def dropped(self, n: int, reason: str) -> None:
        self.m.dropped.labels(self.model, reason).inc(n)
