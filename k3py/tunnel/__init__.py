"""The node tunnel's shared protocol, used by cloudhub (server) and edgehub (agent); no I/O.

protocol.py names what both ends must spell alike (paths, headers, kinds, stream frames),
message.py is the envelope, framing.py its wire form, reliability.py ACK/resend bookkeeping."""
