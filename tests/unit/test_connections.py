"""The connection guard applies only to the uvicorn it was written for, and registers itself."""

from __future__ import annotations

import uvicorn
from uvicorn import config
from uvicorn.importer import import_from_string

from service import connections


def test_guard_registers_a_subclass_of_uvicorns_httptools_protocol(monkeypatch):
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    monkeypatch.setitem(config.HTTP_PROTOCOLS, "auto", config.HTTP_PROTOCOLS["auto"])
    connections.guard_connections()
    protocol = import_from_string(config.HTTP_PROTOCOLS["auto"])
    assert issubclass(protocol, HttpToolsProtocol) and protocol is not HttpToolsProtocol


def test_another_uvicorn_version_is_left_alone(monkeypatch, caplog):
    monkeypatch.setattr(uvicorn, "__version__", "0.99.0")
    assert connections.guarded_protocol() is None
    assert "written for uvicorn 0.55.0, found 0.99.0" in caplog.text
