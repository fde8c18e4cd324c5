"""The names every stage shares: the canonical columns of ingested logs and of scores, and the
chain of versions that `reloop run` trains and serves.

Features keep the names the spec gives them; everything else a stage reads or writes by name is
named here once, so a rename is one edit.
"""

from __future__ import annotations

# Ingested logs (logs/day=D/*.parquet), beside the spec's feature columns.
IMPRESSION_ID = "impression_id"
LABEL = "label"
TS = "ts"  # epoch seconds, UTC
SERVED_PCTR = "served_pctr"  # what the live model predicted when it served the row (ỹ_last)
ORACLE = "oracle_ctr"  # the true click probability, where a simulator knows it
REQUEST_ID = "request_id"  # which request (slate) an impression belonged to
PROPENSITY = "propensity"  # the probability the serving policy gave the shown item
DAY = "day"  # the partition a row belongs to, added when logs are scanned
REJECT_REASON = "reject_reason"  # why ingest refused a row (rejects/ only)

# Scores (scores/vNNNN/day=D/*.parquet): impression_id and the version's prediction.
PCTR = "pctr"

# A training row's parent prediction, joined in beside its label.
Y_LAST = "y_last"

# The chain of versions the cron cycle trains, gates and serves (simulations keep their own).
MAIN_CHAIN = "main"
