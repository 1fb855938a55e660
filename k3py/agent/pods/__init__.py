"""The agent's pods: the syncer that runs them in podman (syncer.py) and its parts, one job a
module: record, restarts, status, containers, events, probes, podspec, inspects."""

from k3py.agent.pods.status import phase_of
from k3py.agent.pods.syncer import PodSyncer

__all__ = ["PodSyncer", "phase_of"]
