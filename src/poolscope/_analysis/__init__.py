"""From figures to verdicts: ``diagnose()``, reading windows from a metrics
endpoint or a Prometheus server, and the PromQL the alerts and dashboard share.

Pure computation and HTTP reads; the recording core never imports it. May
import only the leaves.
"""
