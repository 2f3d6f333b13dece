"""Sinks: destinations for normalized records.

``sinks.base`` is the contract (the protocol, its errors, what a sink may use from the
forwarder, and ``load_sinks``); each other module is one built-in sink, registered in the
``workos_forwarder.sinks`` entry-point group like any third-party one.
"""
