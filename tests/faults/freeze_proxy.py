#!/usr/bin/python3
"""freeze_proxy.py HOST PORT: a loopback TCP proxy for the fault tests (tests/faults/faultutil.c).

Listens on 127.0.0.1 (a free port, printed on stdout as one line), and forwards every
connection to HOST:PORT, one thread per direction. To make the network path stop answering
without closing anything, stop the process (SIGSTOP): the kernel still accepts new TCP
connections on the listening socket and buffers what clients send, but nothing is forwarded in
either direction. SIGCONT resumes forwarding. The test kills it with SIGKILL.
"""
import socket
import sys
import threading


def pump(src, dst):
    """Copies src to dst until EOF or an error, then half-closes dst."""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    for how in (lambda: dst.shutdown(socket.SHUT_WR), lambda: src.shutdown(socket.SHUT_RD)):
        try:
            how()
        except OSError:
            pass


def serve(client, target):
    try:
        upstream = socket.create_connection(target)
    except OSError:
        client.close()
        return
    for s in (client, upstream):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    threads = [threading.Thread(target=pump, args=(client, upstream), daemon=True),
               threading.Thread(target=pump, args=(upstream, client), daemon=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    client.close()
    upstream.close()


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: freeze_proxy.py HOST PORT")
    target = (sys.argv[1], int(sys.argv[2]))
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    print(listener.getsockname()[1], flush=True)
    while True:
        client, _ = listener.accept()
        threading.Thread(target=serve, args=(client, target), daemon=True).start()


if __name__ == "__main__":
    main()
