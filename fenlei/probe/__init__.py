"""Linear probes on frozen LMs: cached hidden-state features (``fenlei.probe.features``), heads (``fenlei.probe.heads``) and the
``python cli.py probe`` command (``fenlei.probe.run``)."""
