"""What the server deploys by itself: the manifests directory (auto-applied, like K3s's)
and the default objects a cluster starts with."""
