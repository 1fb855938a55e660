"""The node tunnel's shared protocol, used by cloudhub (server) and edgehub (agent); no I/O.

message.py is the envelope, framing.py its wire form, reliability.py ACK/resend bookkeeping."""
