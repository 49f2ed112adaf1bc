"""Prometheus metrics, one CollectorRegistry per app so that several apps in one process never clash."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """Every instrument the service records; `render()` gives the Prometheus text format."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "assistant_requests", "HTTP requests by route and status.", ["route", "status"], registry=r
        )
        self.errors = Counter(
            "assistant_errors", "Error responses by status and error code.", ["status", "code"], registry=r
        )
        self.time_to_first_token = Histogram(
            "assistant_time_to_first_token_seconds",
            "From request arrival to the first generated text.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inter_token_latency = Histogram(
            "assistant_inter_token_latency_seconds",
            "Time between consecutive streamed deltas of one answer.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.request_latency = Histogram(
            "assistant_request_seconds", "Whole chat completion time.", buckets=LATENCY_BUCKETS, registry=r
        )
        self.running = Gauge("assistant_requests_running", "Requests being generated now.", registry=r)
        self.waiting = Gauge("assistant_requests_waiting", "Requests queued for the engine.", registry=r)
        self.images = Counter("assistant_images", "Images received in requests.", registry=r)
        self.ocr_seconds = Histogram(
            "assistant_ocr_seconds",
            "OCR time per image (cache hits included).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter("assistant_prompt_tokens", "Prompt tokens processed.", registry=r)
        self.completion_tokens = Counter("assistant_completion_tokens", "Tokens generated.", registry=r)
        self.engine_threads = Gauge(
            "assistant_engine_threads",
            "torch threads of the engine process (0: not a CPU engine).",
            registry=r,
        )
        self.batch_size = Histogram(
            "assistant_batch_size",
            "Requests decoded together in one engine batch.",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64),
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
