"""``workos-forwarder doctor``: the set-up checklist and the troubleshooting guide as one command.

Each module holds one group of checks and returns ``report.Check`` results; ``runner`` runs
them in order and ``command`` is the click command. The checks read the same environment
(and ``FORWARDER_CONFIG``) as ``serve`` and reuse its parsers, so a finding here is what
``serve`` would meet. docs/troubleshooting.md maps each symptom to the check that finds it.
"""
