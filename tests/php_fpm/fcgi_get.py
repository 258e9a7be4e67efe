#!/usr/bin/env python3
"""fcgi_get.py: sends N FastCGI GET requests for one PHP script to a PHP-FPM unix socket, one after another, and prints each response body.

Usage: fcgi_get.py SOCKET SCRIPT_FILENAME N
Exit status 0 when every request got a body and no FastCGI stderr; 1 otherwise (the
failing response is printed on stderr).
"""
import socket
import struct
import sys

BEGIN_REQUEST, END_REQUEST, PARAMS, STDIN, STDOUT, STDERR = 1, 3, 4, 5, 6, 7
RESPONDER = 1


def record(kind, content, request_id=1):
    """One FastCGI record (version 1, no padding)."""
    return struct.pack("!BBHHBx", 1, kind, request_id, len(content), 0) + content


def name_value_pairs(pairs):
    """FastCGI name-value pair encoding of a dict."""
    out = b""
    for name, value in pairs.items():
        name, value = name.encode(), value.encode()
        for part in (name, value):
            out += bytes([len(part)]) if len(part) < 128 else struct.pack("!I", len(part) | 0x80000000)
        out += name + value
    return out


def get(sock_path, script):
    """Runs one GET request; returns (body, stderr text)."""
    params = {
        "GATEWAY_INTERFACE": "CGI/1.1", "REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.1",
        "SCRIPT_FILENAME": script, "SCRIPT_NAME": "/" + script.rsplit("/", 1)[-1],
        "REQUEST_URI": "/" + script.rsplit("/", 1)[-1], "QUERY_STRING": "",
        "SERVER_NAME": "localhost", "SERVER_PORT": "80", "REMOTE_ADDR": "127.0.0.1",
    }
    message = (record(BEGIN_REQUEST, struct.pack("!HB5x", RESPONDER, 0))
               + record(PARAMS, name_value_pairs(params)) + record(PARAMS, b"") + record(STDIN, b""))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(sock_path)
        s.sendall(message)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    stdout, stderr, pos = b"", b"", 0
    while pos + 8 <= len(data):
        _, kind, _, length, padding = struct.unpack("!BBHHB", data[pos:pos + 7])
        content = data[pos + 8:pos + 8 + length]
        pos += 8 + length + padding
        if kind == STDOUT:
            stdout += content
        elif kind == STDERR:
            stderr += content
    body = stdout.split(b"\r\n\r\n", 1)[-1]
    return body.decode(errors="replace"), stderr.decode(errors="replace")


def main():
    sock_path, script, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    for _ in range(count):
        body, err = get(sock_path, script)
        if err or not body.strip():
            sys.stderr.write("request failed: body %r, stderr %r\n" % (body, err))
            return 1
        print(body.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
