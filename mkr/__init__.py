"""The composition package: what assembles the services into one system.

`mkr/` sits above `services/` and `shared/`: the registry of the services (`mkr.registry`), the `mkr`
command (`mkr.cli`), the launcher behind `mkr run` (`mkr.launcher`), the import/export commands
(`mkr.importer`) and the permission renderer (`mkr.permissions`). Nothing below imports it.
"""
