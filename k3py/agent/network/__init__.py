"""The node's cluster networking: its DNS server (dns.py) and the cluster records it serves
(records.py), the service rules it loads into nftables (proxy.py), pods' resolver settings
(dnsconfig.py), and the manager feeding them from the node's cache (manager.py)."""
