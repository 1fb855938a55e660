"""The node's cluster networking: its DNS server (dns.py) and the cluster records it serves
(records.py)."""
