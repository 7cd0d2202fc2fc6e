"""Prints N distinct TCP ports on 127.0.0.1 that nothing listens on now, one a line (the kernel picks
them; all N are held open together while picking, so no two are the same).

    python3 scripts/lib/free_ports.py [N]
"""

import socket
import sys


def main(count="1"):
    sockets = [socket.socket() for _ in range(int(count))]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        for s in sockets:
            print(s.getsockname()[1])
    finally:
        for s in sockets:
            s.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
