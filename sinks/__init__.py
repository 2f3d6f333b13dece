"""Sinks: destinations for normalized records.

``sinks.base`` is the contract (the protocol, its errors, what a sink may use from the
forwarder, and ``load_sinks``, which checks each plugin against it); ``sinks.http`` is the HTTP
machinery the HTTP sinks share. Every other module or folder is one built-in sink, registered
in the ``workos_forwarder.sinks`` entry-point group like any third-party one.
"""
