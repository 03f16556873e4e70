"""The backends: Google Cloud Storage and BigQuery, the local stack, and webhooks.

The only modules of the loader that import a Google library or an HTTP
client. Each implements an interface of :mod:`bqspool.loader.interfaces`
and translates its errors into bqspool's tree at the boundary
(:mod:`.google_errors` tells the retry policy which are transient).

- :mod:`.gcs` (with :mod:`.gcs_batch`): ``ObjectStore`` on a bucket;
- :mod:`.bq` (with :mod:`.bq_tables`, :mod:`.bq_queries`): ``Warehouse`` on a dataset;
- :mod:`.google_clients`: the clients, for GCP or the local emulators;
- :mod:`.localstack`: fake-gcs-server and the BigQuery emulator on loopback;
- :mod:`.webhook`: alert notifications.
"""
