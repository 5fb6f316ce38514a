"""Push: evaluating push rules for every local member of a room as events persist
(`rules.py` the conditions and rule walk, `ruleset_cache.py` each user's compiled
rules, `evaluation.py` the per-batch step in the persist path), unread notification
counts (`counts.py`), and who is syncing (`activity.py`, read by the pushers)."""
