"""Operating bqspool: what was loaded, whether it matches, and what it costs.

- :mod:`.history`: what the commit log says was loaded, per table and day;
- :mod:`.status`: each stage's view per table (``bqspool status``, the monitor);
- :mod:`.verify`: the live dataset against the schema set, and its safe fixes;
- :mod:`.audit`: exactly once, counted in the warehouse;
- :mod:`.restore`: archived objects loaded again;
- :mod:`.archive`: the archive's lifecycle and size;
- :mod:`.cost`: what ingestion, storage and queries cost;
- :mod:`.queries`: a schema set's named queries, run (``Analytics``).

None of these imports a cloud SDK.
"""
