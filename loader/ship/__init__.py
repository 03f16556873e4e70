"""The ship stage, on every host: this host's buffer file -> Parquet objects in ``staged/``.

- :mod:`.runner`: the stage itself (seal, stage, upload, hand over), :class:`.runner.Ship`;
- :mod:`.delivery`: a batch's upload and hand-over, on a second thread;
- :mod:`.ledger`: the batches in the buffer file, every change one fenced transaction;
- :mod:`.buffer_lease`: one shipper per buffer file, fenced by a token;
- :mod:`.stage`: deterministic Parquet files (pyarrow);
- :mod:`.quarantine`: batches that cannot be staged, held back with their reason;
- :mod:`.shipper`: shipping from inside an app (a thread, SIGTERM, exit);
- :mod:`.report`: what a ship did.

Nothing here imports a cloud SDK: objects go through ``interfaces.ObjectStore``.
"""
