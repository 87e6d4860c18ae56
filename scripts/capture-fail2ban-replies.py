#!/usr/bin/env python3
"""Capture raw socket replies from a running fail2ban-server.

Each reply is written byte for byte (pickle, without the END marker) to
OUTDIR/<name>.pickle, so the control-service's unpickler is tested on what
real fail2ban sends. Usage:

    scripts/capture-fail2ban-replies.py SOCKET OUTDIR

The server must have jails `alpha` and `beta` (see tests/src/fail2ban.rs).
"""
import pickle
import socket
import sys

END = b"<F2B_END_COMMAND>"
CLOSE = b"<F2B_CLOSE_COMMAND>"

COMMANDS = {
    "ping": ["ping"],
    "version": ["version"],
    "status": ["status"],
    "status_jail": ["status", "alpha"],
    "status_unknown_jail": ["status", "nope"],
    "ban_two": ["set", "alpha", "banip", "192.0.2.10", "2001:db8::10"],
    "status_jail_with_bans": ["status", "alpha"],
    "banned": ["banned"],
    "banned_ip": ["banned", "192.0.2.10"],
    "banip_with_time": ["get", "alpha", "banip", "--with-time"],
    "get_bantime": ["get", "alpha", "bantime"],
    "set_bantime_permanent": ["set", "beta", "bantime", "-1"],
    "ban_permanent": ["set", "beta", "banip", "198.51.100.7"],
    "banip_with_time_permanent": ["get", "beta", "banip", "--with-time"],
    "get_findtime": ["get", "alpha", "findtime"],
    "get_maxretry": ["get", "alpha", "maxretry"],
    "get_logpath": ["get", "alpha", "logpath"],
    "get_ignoreip": ["get", "alpha", "ignoreip"],
    "get_actions": ["get", "alpha", "actions"],
    "get_dbfile": ["get", "dbfile"],
    "addignoreip": ["set", "alpha", "addignoreip", "198.51.100.0/24"],
    "set_idle_on": ["set", "beta", "idle", "on"],
    "set_idle_off": ["set", "beta", "idle", "off"],
    "unban_all_jails": ["unban", "192.0.2.10"],
    "unbanip_jail": ["set", "alpha", "unbanip", "2001:db8::10"],
    "unbanip_not_banned": ["set", "alpha", "unbanip", "203.0.113.99"],
    "invalid_command": ["frobnicate"],
    "set_bantime_bad": ["set", "alpha", "bantime", "soon"],
}


def main():
    sock_path, outdir = sys.argv[1], sys.argv[2]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock_path)
    for name, cmd in COMMANDS.items():
        s.sendall(pickle.dumps(cmd, pickle.HIGHEST_PROTOCOL) + END)
        buf = b""
        while not buf.endswith(END):
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit("connection closed during " + name)
            buf += chunk
        body = buf[: -len(END)]
        with open(f"{outdir}/{name}.pickle", "wb") as f:
            f.write(body)
        try:
            shown = repr(pickle.loads(body))
        except Exception as e:  # a fail2ban class this Python cannot import
            shown = f"<not loadable here: {e}>"
        print(name, shown)
    # A request that is not a pickle: fail2ban answers with a bare "ERROR: ..." string.
    s.sendall(b"not a pickle" + END)
    buf = b""
    while not buf.endswith(END):
        buf += s.recv(65536)
    with open(f"{outdir}/load_error.pickle", "wb") as f:
        f.write(buf[: -len(END)])
    print("load_error", repr(pickle.loads(buf[: -len(END)])))
    s.sendall(CLOSE + END)
    s.close()


if __name__ == "__main__":
    main()
