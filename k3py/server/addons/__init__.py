"""What the server deploys by itself: the manifests directory under the data dir, applied at
start and whenever a file changes, as K3s does."""
