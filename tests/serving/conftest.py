"""A workspace with a published version, and an app serving it in process."""

from __future__ import annotations

import warnings

import pytest

from reloop_cli.data.ingest import ingest
from reloop_cli.operations.deploy import publish_live
from reloop_cli.serving.app import create_app
from reloop_cli.serving.service import Service, ServiceConfig
from reloop_cli.store.registry import Registry
from reloop_cli.store.workspace import Workspace
from reloop_cli.training.train import train_version

with warnings.catch_warnings():  # Starlette prefers httpx2 for its test client; httpx works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


JSON = {"Content-Type": "application/json"}  # what a write must say it is (else 415)


@pytest.fixture()
def published(tmp_path, tiny_logs, sample_spec) -> tuple[Workspace, object]:
    """Three days ingested, v1 trained on the first two and published."""
    ws = Workspace(tmp_path / "ws")
    spec = sample_spec.override("train", epochs=1)
    ingest(ws, spec, tiny_logs[:3])
    with Registry(ws) as registry:
        train_version(ws, registry, spec, "2024-01-02")
        publish_live(ws, registry)
    return ws, spec


def client_for(ws: Workspace, spec, **config) -> TestClient:
    """A test client of an app serving `ws`; `client.service` is the service behind it."""
    service = Service(ServiceConfig(ws.serving, ws.serving_logs, spec, **config))
    client = TestClient(create_app(service))
    client.service = service
    return client
