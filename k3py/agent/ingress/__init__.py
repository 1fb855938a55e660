"""The node's ingress controller: Ingress objects resolved into a routing table (routes.py)
served by an HTTP/HTTPS reverse proxy (proxy.py), kept current from metamanager (manager.py)."""
