"""The node's persistent volumes: a pod's claim resolved to the directory its volume is
(claims.py, creating a local-path directory on first use) and the removal of the directories
of deleted local-path volumes of this node (cleanup.py)."""
