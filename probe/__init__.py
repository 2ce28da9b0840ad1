"""Linear probes on frozen LMs: cached hidden-state features (``probe.features``), heads (``probe.heads``) and the
``python cli.py probe`` command (``probe.run``)."""
