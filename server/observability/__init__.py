"""Operations: logging configured at start (``logging``), the request id (``request_id``), Prometheus metrics
(``metrics``, ``http_metrics``, ``audit_meter``). docs/operations.md describes them."""
