"""The SLAM service: ``slam serve`` publishes poses and the map over ZeroMQ.

The wire format is the ``slam_protocol`` package, shared with ``clients`` (it imports
only the standard library, numpy and msgpack); the modules here (service, publisher,
commands, ingest, security, cli) run the server. ``docs/protocol.md`` describes every
message.
"""
