"""The workspace on disk: every path in it, atomic writes, the lock, the registry of versions,
and the spec the workspace was ingested with."""
