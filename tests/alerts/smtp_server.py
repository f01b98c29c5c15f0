#!/usr/bin/env python3
"""A real SMTP server for cidguard's alert tests (aiosmtpd, loopback only).

Every accepted message is stored twice in --out: the raw message as
<n>.eml and, decoded by Python's own email package (an implementation
independent of the sender's), <n>.json with the envelope, the subject, the
text and HTML parts, the login used and whether the session was encrypted.
Both are written to a temporary name and renamed, so a reader never sees
half a file; the .json is renamed last, so counting .json files counts
complete messages.

Options choose plain, STARTTLS (--starttls CERT KEY) or implicit TLS
(--smtps CERT KEY), and AUTH with one user (--user/--password). When the
server is listening, the --ready file is created. SIGTERM stops it.
"""

import argparse
import email
import email.policy
import json
import os
import signal
import ssl
import sys
import threading
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def write_atomically(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)


class Saver:
    def __init__(self, out):
        self.out = out
        self.lock = threading.Lock()
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        text = msg.get_body(preferencelist=("plain",))
        html = msg.get_body(preferencelist=("html",))
        login = None
        if session.authenticated and isinstance(session.auth_data, LoginPassword):
            login = session.auth_data.login.decode("utf-8", "replace")
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "subject": str(msg["subject"]),
            "message_id": str(msg["message-id"]),
            "auto_submitted": msg.get("auto-submitted"),
            "content_type": msg.get_content_type(),
            "text": text.get_content() if text is not None else None,
            "html": html.get_content() if html is not None else None,
            "login": login,
            # session.ssl is only set by STARTTLS; SMTPS shows in the transport.
            "tls": session.ssl is not None
            or server.transport.get_extra_info("ssl_object") is not None,
        }
        with self.lock:
            self.count += 1
            n = self.count
        base = os.path.join(self.out, "%d-%d-%d" % (time.time_ns(), os.getpid(), n))
        write_atomically(base + ".eml", raw)
        write_atomically(base + ".json", json.dumps(record).encode("utf-8"))
        return "250 2.0.0 Ok: queued as test-%d" % n


def tls_context(cert, key):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--ready", required=True)
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--starttls", nargs=2, metavar=("CERT", "KEY"))
    ap.add_argument("--smtps", nargs=2, metavar=("CERT", "KEY"))
    args = ap.parse_args()

    kwargs = {
        # A fixed name: the default looks the host's FQDN up in DNS.
        "server_hostname": "smtp.cidguard.test",
        "ident": "cidguard test SMTP",
    }
    if args.starttls:
        kwargs["tls_context"] = tls_context(*args.starttls)
        kwargs["require_starttls"] = True
    if args.smtps:
        kwargs["ssl_context"] = tls_context(*args.smtps)
    if args.user is not None:
        user = args.user.encode()
        password = (args.password or "").encode()

        def authenticator(server, session, envelope, mechanism, auth_data):
            if (
                isinstance(auth_data, LoginPassword)
                and auth_data.login == user
                and auth_data.password == password
            ):
                return AuthResult(success=True, auth_data=auth_data)
            return AuthResult(success=False, handled=False)

        kwargs["authenticator"] = authenticator
        kwargs["auth_required"] = True
        # Over STARTTLS or SMTPS aiosmtpd's default (AUTH only once
        # encrypted) holds; a plain test server accepts AUTH in clear, as a
        # local relay would.
        kwargs["auth_require_tls"] = bool(args.starttls)

    controller = Controller(
        Saver(args.out), hostname="127.0.0.1", port=args.port, **kwargs
    )
    controller.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    write_atomically(args.ready, b"ready\n")
    stop.wait()
    controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
