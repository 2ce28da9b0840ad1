"""fenlei: shared infrastructure (CLI, run directories, packaged models, reports) for the Lightning code in
``lightning_modules/``, ``datamodules/`` and ``losses/``."""

__version__ = "0.1.0"
