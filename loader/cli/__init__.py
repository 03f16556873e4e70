"""The ``bqspool`` command: a thin layer over the library, one module per area.

- :mod:`.writer`: ``append``, ``status``, ``dead-letters``;
- :mod:`.schemas`: ``schemas``, ``config``;
- :mod:`.loader`: ``setup``, ``drain``, ``run``, ``local``;
- :mod:`.quarantine`: ``quarantine``;
- :mod:`.operate`: ``verify``, ``restore``, ``cost``, ``query``;
- :mod:`.watch`: ``monitor``.

Exceptions become exit codes in one place, :func:`.base.exit_code` (the
table: :mod:`bqspool.loader.exit_codes`). Every command takes the global
options ``--config``, ``--buffer`` and ``--schemas``, before or after its
name, and reads its settings through :func:`.base.settings`. A new command
goes in the module of its area (or a new one imported below).
"""

from . import doctor, loader, operate, quarantine, schemas, watch, writer  # noqa: F401  (each registers its commands)
from .base import add_global_options, main

add_global_options(main)

__all__ = ["main"]
