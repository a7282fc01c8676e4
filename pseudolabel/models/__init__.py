"""Model builders and the checkpoint registry (``weights``)."""
