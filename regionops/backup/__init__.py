"""Physical backups of a cluster in S3, and restores that prove them.

A backup is ``pg_basebackup -Ft -D -`` streamed into the cluster's home-region bucket
(volumes of one tar stream), a small tar of WAL that reaches the backup's *fingerprint
point*, and ``manifest.json`` written last: a backup without its manifest is
incomplete and is never offered for restore.

Modules, each small: :mod:`.manifest` (the model and the object layout),
:mod:`.catalog` (listing, orphans), :mod:`.retention` and :mod:`.residency` and
:mod:`.source` (pure decisions), :mod:`.streams` (bounded read-ahead and volumes),
:mod:`.take` (taking a backup), :mod:`.copy` (cross-region copies), :mod:`.scratch`
and :mod:`.restore` (``pgbackrest restore`` into an empty directory, started and proven).
No Prefect imports here: the runbooks in ``flows/`` orchestrate these functions.
"""
