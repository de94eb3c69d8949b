"""Alert severities, lowest first: the one list the alert builder, the metrics and `seqsentry alerts`
share (a module light enough for `--help`: no numpy)."""

SEVERITIES: tuple[str, ...] = ("low", "medium", "high", "critical")
