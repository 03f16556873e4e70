"""In-memory fakes of the loader's backends, with fault knobs, for tests.

``MemoryObjectStore`` and ``MemoryWarehouse`` implement
:class:`~bqspool.loader.interfaces.ObjectStore` and
:class:`~bqspool.loader.interfaces.Warehouse` in memory, so the loader's
decisions (budgets, grouping, splitting, retries, pacing, crashes between
steps) can be tested in milliseconds, by us and by users in their own test
suites::

    from bqspool.loader import Drainer
    from bqspool.loader.testing import MemoryObjectStore, MemoryWarehouse

    store = MemoryObjectStore()
    warehouse = MemoryWarehouse(store, schemas)
    warehouse.knobs.reject_rows = lambda row: "bad geography" if row["g"] == "x" else None
    Drainer(buffer_path, schemas, store, warehouse).drain_once()
    assert warehouse.ids("places") == ...

They behave as the contract suite says BigQuery and GCS do, except where a
knob (:class:`FaultKnobs`, :class:`WarehouseKnobs`) says otherwise. They
read the staged Parquet files with pyarrow, so what a load job "loads" is
exactly what was staged.
"""

from .faults import FaultKnobs, TransientFault, WarehouseKnobs
from .store import MemoryObjectStore
from .warehouse import MemoryWarehouse

__all__ = ["FaultKnobs", "MemoryObjectStore", "MemoryWarehouse", "TransientFault", "WarehouseKnobs"]
