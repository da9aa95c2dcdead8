"""The SLAM service: ``slam serve`` publishes poses and the map over ZeroMQ.

``server.protocol`` (the wire format) imports only the standard library, numpy
and msgpack so that clients can use it without the SLAM package; the other
modules (service, publisher, commands, ingest, security, cli) run the server.
``docs/protocol.md`` describes every message.
"""
