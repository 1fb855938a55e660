"""Credit-based flow control of relayed connect streams: the receiving end grants back the
bytes it has handed on, and the sending end never has more than one window unGranted, so every
hop between (the two agents' and the server's queues) holds at most a window per stream and
direction, and a slow reader pauses the sender without stalling the tunnel's other streams.

Pure bookkeeping (no I/O), as reliability.py: agent/streamrelay.py keeps one StreamWindow per
direction at both ends, server/edge/noderelay.py one per direction to check the nodes keep to
it. The frames are protocol.py's FRAME_DATA and FRAME_CREDIT; a stream is flow controlled
("strict") only when both its ends (and the server between) name
protocol.FEATURE_FLOW_CONTROL.

Towards a peer that names no features there are two older builds: one from before flow
control (it never sends credit and ignores credit frames) and the release before features
(it always counts windows, sends credit, waits for credit and ends a stream whose peer
overruns its window). Neither can be told from the other up front, so such a stream is
"lenient": credit is still granted (the second build needs it, the first ignores it), an
overrun never ends it, and the sender waits for credit only once the peer has sent some on
that stream (`StreamWindow.limits`): a peer that sends credit counts the window.

A TCP stream counts the bytes it carries. A UDP flow counts each datagram as its bytes plus
DATAGRAM_OVERHEAD (`datagram_cost`), at the sender, the relay and the receiver alike: a frame
costs its envelope whatever it carries, so empty or one-byte datagrams also fill the window."""

from __future__ import annotations

__all__ = ["StreamWindow", "STREAM_WINDOW", "DATAGRAM_OVERHEAD", "datagram_cost"]

STREAM_WINDOW = 256 * 1024  # bytes one direction of a stream may have in flight
# what a UDP flow's frame is charged beyond its datagram: about its envelope on the wire
# (header, route, the data's wrapper: 285 bytes for an empty datagram), so at most a
# thousand frames of a flow are in flight per direction
DATAGRAM_OVERHEAD = 256


def datagram_cost(n: int) -> int:
    """The window a datagram of `n` bytes takes."""
    return n + DATAGRAM_OVERHEAD


class StreamWindow:
    """One direction of a stream: the bytes sent and not yet granted back ("in flight").

    The sender sends at most `room()` and counts it with `sent`; the receiver counts what
    arrives with `sent` too (False: the peer overran the window) and, once it handed bytes
    on, `consumed` says how many to grant back now; a relay in between counts both."""

    def __init__(self, size: int = STREAM_WINDOW) -> None:
        self.size = size
        self.in_flight = 0
        self._to_grant = 0  # receiver: handed on, not yet granted back
        self.credited = False  # sender: the peer sent credit (so it counts this window)

    def room(self) -> int:
        return max(0, self.size - self.in_flight)

    def sent(self, n: int) -> bool:
        """`n` bytes went (or came); False once more than the window is in flight."""
        self.in_flight += n
        return self.in_flight <= self.size

    def granted(self, n: int) -> None:
        """The receiver granted `n` bytes back (never more than are in flight)."""
        self.in_flight = max(0, self.in_flight - max(0, n))

    def credit(self, n: int) -> None:
        """A credit frame from the peer granted `n` bytes."""
        self.credited = True
        self.granted(n)

    def limits(self, strict: bool) -> bool:
        """Whether the sender keeps within the window: always on a strict stream, on a
        lenient one once the peer showed it counts it (it sent credit)."""
        return strict or self.credited

    def consumed(self, n: int) -> int:
        """The receiver handed `n` more bytes on; the grant to send now (0: none yet).
        Grants go a quarter window at a time (small exchanges cost no credit frames): a
        sender stops only with a full window in flight, and then at least a quarter of it
        is handed on or on its way, so a grant always follows."""
        self._to_grant += n
        if self._to_grant < self.size // 4:
            return 0
        grant, self._to_grant = self._to_grant, 0
        self.granted(grant)
        return grant
