"""Stream requests arriving through the tunnel (pods/log for now), served from the runtime.

Registered on edgehub.stream_handlers by main; frames go back with edgehub.send_live."""

from __future__ import annotations

import base64

from k3py.agent.edgehub import EdgeHub
from k3py.agent.pods import PodSyncer
from k3py.agent.runtime.podman import Podman
from k3py.tunnel.message import EDGE, Message, stream_frame

__all__ = ["install_stream_handlers"]


def install_stream_handlers(hub: EdgeHub, pods: PodSyncer, runtime: Podman) -> None:
    async def log(msg: Message) -> None:
        p = msg.content or {}
        sid = msg.id
        name = pods.container_name(p.get("namespace") or "", p.get("pod") or "",
                                   p.get("container") or "")
        if name is None:
            hub.send_live(stream_frame(sid, "error", {
                "code": 404, "reason": "NotFound",
                "message": f'pod "{p.get("pod")}" is not running on this node'}, source=EDGE))
            return
        tail = int(p["tailLines"]) if p.get("tailLines") not in (None, "") else None
        since = f"{int(p['sinceSeconds'])}s" if p.get("sinceSeconds") else p.get("sinceTime")
        limit = int(p["limitBytes"]) if p.get("limitBytes") else 0
        sent = 0
        async for chunk in runtime.logs(name, follow=bool(p.get("follow")), tail=tail,
                                        since=since, timestamps=bool(p.get("timestamps"))):
            if limit:
                chunk = chunk[:max(0, limit - sent)]
            sent += len(chunk)
            if chunk and not hub.send_live(stream_frame(
                    sid, "data", {"data": base64.b64encode(chunk).decode()}, source=EDGE)):
                return
            if limit and sent >= limit:
                break
        hub.send_live(stream_frame(sid, "close", source=EDGE))

    hub.stream_handlers["log"] = log
