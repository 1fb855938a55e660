"""The node's cluster networking: its DNS server (dns.py) and the cluster records it serves
(records.py), and the service rules it loads into nftables (proxy.py)."""
