"""Latency of gRPC responses of growing size, from a client in another
process (Python grpcio), against the release geo-service and control-service
that bench/transport.sh starts. Prints a Markdown table.

Usage: transport_client.py STUBS_DIR GEO_ADDR CONTROL_ADDR PASSWORD [RUNS]
"""

import random
import statistics
import sys
import time

sys.path.insert(0, sys.argv[1])

import grpc  # noqa: E402
from bangui.control.v1 import auth_pb2, auth_pb2_grpc, history_pb2, history_pb2_grpc  # noqa: E402
from bangui.geo.v1 import geo_pb2, geo_pb2_grpc  # noqa: E402

OPTIONS = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]


def measure(label, call, runs, warmup=5):
    for _ in range(warmup):
        response = call()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        response = call()
        samples.append((time.perf_counter() - started) * 1000.0)
    samples.sort()
    size = response.ByteSize()
    p90 = samples[min(len(samples) - 1, int(len(samples) * 0.9))]
    print(
        f"| {label} | {size / 1000:.1f} KB | {statistics.median(samples):.2f} ms | {p90:.2f} ms | "
        f"{samples[0]:.2f} ms | {runs} |",
        flush=True,
    )


def wait_ready(channel, what):
    try:
        grpc.channel_ready_future(channel).result(timeout=30)
    except grpc.FutureTimeoutError:
        sys.exit(f"{what} did not accept connections within 30 s")


def main():
    geo_addr, control_addr, password = sys.argv[2], sys.argv[3], sys.argv[4]
    runs = int(sys.argv[5]) if len(sys.argv) > 5 else 200
    rng = random.Random(7)

    print("| request | response | median | p90 | min | runs |")
    print("| --- | --- | --- | --- | --- | --- |")

    geo_channel = grpc.insecure_channel(geo_addr, options=OPTIONS)
    wait_ready(geo_channel, "the geo-service")
    geo = geo_pb2_grpc.GeoServiceStub(geo_channel)
    measure("geo `Lookup` (unary, one address)", lambda: geo.Lookup(geo_pb2.LookupRequest(ip="81.2.69.160")), runs)
    for n in (10, 100, 1000, 10000):
        ips = [f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}" for _ in range(n)]
        request = geo_pb2.LookupBatchRequest(ips=ips)
        measure(f"geo `LookupBatch` of {n} addresses", lambda: geo.LookupBatch(request), runs if n < 10000 else runs // 4)

    control_channel = grpc.insecure_channel(control_addr, options=OPTIONS)
    wait_ready(control_channel, "the control-service")
    token = auth_pb2_grpc.AuthServiceStub(control_channel).Login(auth_pb2.LoginRequest(password=password)).token
    metadata = [("authorization", f"Bearer {token}")]
    history = history_pb2_grpc.HistoryServiceStub(control_channel)
    everything = history_pb2.HistoryFilter(window=history_pb2.WINDOW_ALL)
    for size in (8, 80, 800):
        request = history_pb2.ListBansRequest(filter=everything, page_size=size)
        measure(f"control `ListBans`, page of {size}", lambda: history.ListBans(request, metadata=metadata), runs)
    request = history_pb2.TopIpsRequest(filter=everything, limit=1000)
    measure("control `TopIps` 1000, all time", lambda: history.TopIps(request, metadata=metadata), runs // 2)
    request = history_pb2.BanTrendRequest(filter=everything, bucket_seconds=3600)
    measure("control `BanTrend` all time by hour", lambda: history.BanTrend(request, metadata=metadata), runs // 2)
    request = history_pb2.BansByCountryRequest(filter=everything)
    measure(
        "**control `BansByCountry`, all time, 10 000 archived bans**",
        lambda: history.BansByCountry(request, metadata=metadata),
        runs,
    )


if __name__ == "__main__":
    main()
