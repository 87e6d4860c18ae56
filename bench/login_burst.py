#!/usr/bin/env python3
"""Peak RSS of a control-service under a burst of wrong logins.

Starts BINARY (a control-service build) on a fresh SQLite database, sets the
password up (with the setup token when the build makes one), sends N
concurrent Logins with a wrong password on one connection, and prints how
they were answered, how many were checked (UNAUTHENTICATED: wrong password
after a check) and the process's VmHWM/VmRSS from /proc.

    python3 bench/login_burst.py target/debug/control-service [N]

Needs grpcio and grpcio-tools (the stubs are generated from proto/ into a
temporary directory).
"""
import asyncio, json, os, subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def stubs(out):
    os.makedirs(out, exist_ok=True)
    from grpc_tools import protoc
    import grpc_tools
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    rc = protoc.main(["protoc", f"-I{ROOT}/proto", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}",
                      "bangui/control/v1/auth.proto"])
    assert rc == 0, rc
    sys.path.insert(0, out)
    from bangui.control.v1 import auth_pb2, auth_pb2_grpc
    return auth_pb2, auth_pb2_grpc


def status(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])


async def main():
    binary, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 200
    import grpc
    with tempfile.TemporaryDirectory() as tmp:
        pb, rpc = stubs(os.path.join(tmp, "stubs"))
        proc = subprocess.Popen([binary, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--log-format", "json",
                                 "--database-url", f"sqlite://{tmp}/control.db", "--fail2ban-socket", f"{tmp}/none.sock"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            for line in proc.stdout:
                msg = json.loads(line)
                if msg.get("message") == "serving":
                    addr = msg["grpc_addr"]
                    break
            # Keep reading its log, or the service blocks on a full pipe.
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            token_file = os.path.join(tmp, "setup-token")
            token = open(token_file).read().strip() if os.path.exists(token_file) else ""
            async with grpc.aio.insecure_channel(addr) as channel:
                auth = rpc.AuthServiceStub(channel)
                await auth.Setup(pb.SetupRequest(password="a long master password", setup_token=token))
                await auth.Login(pb.LoginRequest(password="a long master password"))
                before = status(proc.pid, "VmHWM")

                async def wrong():
                    try:
                        await auth.Login(pb.LoginRequest(password="not the password at all"))
                        return "OK"
                    except grpc.aio.AioRpcError as e:
                        return e.code().name
                started = time.monotonic()
                codes = await asyncio.gather(*(wrong() for _ in range(n)))
                took = time.monotonic() - started
            counts = {c: codes.count(c) for c in sorted(set(codes))}
            print(f"{n} concurrent wrong logins in {took:.2f}s: {counts}")
            print(f"checked (UNAUTHENTICATED): {counts.get('UNAUTHENTICATED', 0)}")
            print(f"VmHWM before the burst {before} KiB, after {status(proc.pid, 'VmHWM')} KiB; VmRSS now {status(proc.pid, 'VmRSS')} KiB")
        finally:
            proc.terminate()
            proc.wait()


asyncio.run(main())
