"""How good a version is, and whether a difference is real: metrics, intervals and paired tests,
`eval` and `compare`, serving policies and their off-policy estimates from logged slates."""
