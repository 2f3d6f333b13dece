"""Detections as code: Sigma rules (monitors/sigma) evaluated on the journal, firings as records.

``rules`` loads and checks the Sigma files with pySigma; ``matching`` tests one record
against a base rule; ``windows`` and ``geo`` hold the per-group state of the correlations
and of the two built-in location rules; ``engine`` runs them over journal entries with
bounded state; ``firing`` makes a firing a record; ``consumer`` is the loop that reads the
journal behind the webhooks, under a lease, with checkpoints; ``settings`` reads the
variables. docs/detections.md describes each rule.
"""
