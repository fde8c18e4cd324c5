"""Raw logs -> validated Parquet under logs/day=D/: which files an input names, how each format
is read, how time becomes a day, what was ingested before, and the ingest stage itself."""
