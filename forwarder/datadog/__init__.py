"""Datadog logs pipelines, monitors, dashboards, log-based metrics and Cloud SIEM rules kept as
code: offline checks, generation from the Sigma rules, and apply.

The JSON files under ``monitors/datadog/pipelines/`` (logs pipelines), ``monitors/datadog/``
(monitors), ``monitors/datadog/log_metrics/`` (log-based metrics, one per file, named after the
metric), ``monitors/datadog/security_rules/`` (Cloud SIEM rules) and ``dashboards/datadog/``
(dashboards) are the source of truth; the detection monitors and rules are generated from
``monitors/sigma/``.
``workos-forwarder datadog validate`` checks them offline and ``workos-forwarder datadog apply``
makes Datadog match them.

One job per module: ``assets`` (the files, loading, model checks), ``queries`` (log-search and
monitor-query parsing), ``pipelines`` (what a pipeline's processors read and write), ``validate``
(the rules), ``apply`` (plan, diff, execute), ``sigma`` (the Sigma rules and their log searches),
``detections`` (the generated monitors and Cloud SIEM rules) and ``cli`` (the ``datadog`` click group).
"""
