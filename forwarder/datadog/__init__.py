"""Datadog logs pipelines, monitors, dashboards and log-based metrics kept as code: offline
checks and apply.

The JSON files under ``monitors/datadog/pipelines/`` (logs pipelines), ``monitors/datadog/``
(monitors), ``monitors/datadog/log_metrics/`` (log-based metrics, one per file, named after the
metric) and ``dashboards/datadog/`` (dashboards) are the source of truth.
``workos-forwarder datadog validate`` checks them offline and ``workos-forwarder datadog apply``
makes Datadog match them.

One job per module: ``assets`` (the files, loading, model checks), ``queries`` (log-search and
monitor-query parsing), ``pipelines`` (what a pipeline's processors read and write), ``validate``
(the rules), ``apply`` (plan, diff, execute) and ``cli`` (the ``datadog`` click group).
"""
