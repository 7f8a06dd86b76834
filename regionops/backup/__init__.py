"""Backups on pgBackRest, and restores that prove them.

pgBackRest (:mod:`regionops.drivers.pgbackrest`) is the engine: one stanza per cluster,
one repository per bucket the cluster's residency allows, WAL archived from every node.
What this package adds is what no backup tool keeps:

- :mod:`regionops.decisions.residency`: the rule that refuses a repository outside the cluster's
  residency (a pure rule, below the drivers, which check it too);
- :mod:`.proof`: the proof record beside each backup set (the fingerprint tables' rows
  at a named restore point taken after the backup) and the verdicts of restores;
- :mod:`regionops.model.restore`, :mod:`.restore`, :mod:`.restore_on_host`, :mod:`.scratch`: choosing the set and the
  target, ``pgbackrest restore`` into an empty directory, starting it and proving it.

No Prefect imports here: the runbooks in ``flows/`` orchestrate these functions.
"""
