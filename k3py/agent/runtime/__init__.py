"""The container runtime behind the pod syncer: podman's libpod REST API (libpod.py, its
streams in libpod_streams.py), the podman CLI for what the API lacks (podman.py), images."""
