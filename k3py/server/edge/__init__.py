"""The server end of the node tunnel: one websocket per node, dialled by the node's agent.

Down (server to node): the pods bound to the node, the configmaps, secrets, claims and their
volumes, devices and device models they need, the pods' service-account tokens, and the node's
deleted local-path volumes. Up (node to server): the Node, its status and Lease, pod status,
finished pod deletions, Events and removed volume directories. Both directions are reliable
(ACKed, resent); streams for logs, exec, attach and port-forward are multiplexed on the same
websocket as best-effort frames. Joining (the node certificate) and node passwords are here
too. docs/design/tunnel.md and docs/design/streams.md tell the flow."""
