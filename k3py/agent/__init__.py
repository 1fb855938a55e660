"""The node side, `k3py agent` (and the server's embedded agent): join, the tunnel (edgehub),
the local cache (metamanager), pods on podman, streams, devices. Never imports k3py.server."""
