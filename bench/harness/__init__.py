"""What every benchmark run stands on, apart from what it measures.

``processes``: pinning a process to a core, waiting for it to listen, sampling its RSS and CPU.
``service``: the forwarder's environment for a run and what its metrics say about commits.
``loopback``: the doubles the bench starts on the load core (Datadog intake, Events API).
``load``: the two load generators (wrk, closed loop; ``bench/loadgen.py``, open loop).
``postgres``: a scratch schema for a run on the PostgreSQL engine.
``session``: one run of ``python -m bench.run``: its work dir, request files and intake.
"""
