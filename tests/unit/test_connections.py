"""The connection guard registers itself as uvicorn's default HTTP protocol."""

from __future__ import annotations

from uvicorn import config
from uvicorn.importer import import_from_string

from service import connections


def test_guard_registers_a_subclass_of_uvicorns_httptools_protocol(monkeypatch):
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    monkeypatch.setitem(config.HTTP_PROTOCOLS, "auto", config.HTTP_PROTOCOLS["auto"])
    connections.guard_connections()
    protocol = import_from_string(config.HTTP_PROTOCOLS["auto"])
    assert issubclass(protocol, HttpToolsProtocol) and protocol is not HttpToolsProtocol
