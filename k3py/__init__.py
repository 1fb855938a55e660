"""k3py: a lightweight single-binary Kubernetes distribution for the edge.

The package version lives here so the CLI, the Node object and the /version endpoint agree."""

__version__ = "0.1.0"
PROGRAM = "k3py"
