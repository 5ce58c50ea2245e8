"""Throughput of the local SageMaker's runtime, against a bare starlette handler on the same model.

Both servers run in their own process under the same uvicorn (httptools, uvloop, one worker);
the load comes from this process: 4 client threads over keep-alive HTTP on loopback (and, for
the host, 4 boto3 sagemaker-runtime clients too). The model is a scikit-learn pipeline on the
30 features of breast_cancer. Rounds alternate between the two servers; figures are medians.
Target: >= 1,500 invocations/s through raw HTTP, and at most 25% below the bare handler.

    python benchmarks/local_sagemaker_throughput.py [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import joblib
import numpy as np

ENDPOINT = "bench"


def bare_app(model_path: str) -> Any:
    """The baseline: the least a starlette handler can do to answer with this model."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    model = joblib.load(model_path)

    async def invocations(request: Request) -> Response:
        body = await request.body()
        row = np.array([[float(v) for v in body.split(b",")]])
        return Response(repr(float(model.predict_proba(row)[0, 1])), media_type="text/csv")

    return Starlette(routes=[Route("/endpoints/{name}/invocations", invocations, methods=["POST"])])


def serve_bare(model_path: str) -> None:
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(bare_app(model_path), log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


def start(cmd: list[str]) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"listening on (http://\S+)", line)
    if not match:
        process.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return process, match.group(1)


def raw_load(url: str, body: bytes, seconds: float, threads: int) -> tuple[float, list[float]]:
    host, port = url.removeprefix("http://").split(":")
    latencies: list[list[float]] = [[] for _ in range(threads)]
    stop = time.perf_counter() + seconds
    headers = {"Content-Type": "text/csv", "Accept": "text/csv"}

    def client(slot: int) -> None:
        conn = http.client.HTTPConnection(host, int(port))
        conn.connect()
        assert conn.sock is not None
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        mine = latencies[slot]
        while (t0 := time.perf_counter()) < stop:
            conn.request("POST", f"/endpoints/{ENDPOINT}/invocations", body, headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}")
            mine.append(time.perf_counter() - t0)
        conn.close()

    return _run(client, threads, seconds, latencies)


def boto3_load(url: str, body: bytes, seconds: float, threads: int) -> tuple[float, list[float]]:
    import boto3

    latencies: list[list[float]] = [[] for _ in range(threads)]
    stop = time.perf_counter() + seconds
    clients = [
        boto3.client(
            "sagemaker-runtime",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
        )
        for _ in range(threads)
    ]

    def client(slot: int) -> None:
        mine, rt = latencies[slot], clients[slot]
        while (t0 := time.perf_counter()) < stop:
            rt.invoke_endpoint(EndpointName=ENDPOINT, ContentType="text/csv", Body=body)["Body"].read()
            mine.append(time.perf_counter() - t0)

    return _run(client, threads, seconds, latencies)


def _run(
    client: Any, threads: int, seconds: float, latencies: list[list[float]]
) -> tuple[float, list[float]]:
    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - t0
    flat = [x for per in latencies for x in per]
    return len(flat) / elapsed, flat


def deploy(url: str, artifact: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import boto3

    sm = boto3.client(
        "sagemaker",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    sm.create_model(ModelName="m", PrimaryContainer={"Image": "local", "ModelDataUrl": artifact.as_uri()})
    sm.create_endpoint_config(
        EndpointConfigName="c",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "m",
                "InstanceType": "ml.m5.large",
                "InitialInstanceCount": 1,
            }
        ],
    )
    sm.create_endpoint(EndpointName=ENDPOINT, EndpointConfigName="c")
    while sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointStatus"] != "InService":
        time.sleep(0.05)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q) * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--serve-bare", metavar="MODEL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return

    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_breast_cancer(return_X_y=True)
    body = ",".join(repr(float(v)) for v in x[0]).encode()
    with tempfile.TemporaryDirectory() as tmp:
        artifact = Path(tmp) / "model.joblib"
        joblib.dump(make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, y), artifact)
        host, host_url = start(
            [sys.executable, "-m", "manager", "local-sagemaker", "serve", "--state-dir", f"{tmp}/state"]
        )
        bare, bare_url = start([sys.executable, __file__, "--serve-bare", str(artifact)])
        try:
            deploy(host_url, artifact)
            for url in (host_url, bare_url):
                raw_load(url, body, 1.0, args.threads)  # warm up
            results: dict[str, list[tuple[float, list[float]]]] = {"host": [], "bare": [], "boto3": []}
            for _ in range(args.rounds):
                results["host"].append(raw_load(host_url, body, args.seconds, args.threads))
                results["bare"].append(raw_load(bare_url, body, args.seconds, args.threads))
                results["boto3"].append(boto3_load(host_url, body, args.seconds, args.threads))
        finally:
            for process in (host, bare):
                process.terminate()
                process.wait(timeout=10)

    print(
        f"{os.cpu_count()} cores, {args.threads} client threads, {args.rounds} rounds x {args.seconds:g} s, "
        "30-feature LogisticRegression pipeline, keep-alive on loopback"
    )
    print(f"{'path':44} {'inv/s (median)':>15} {'p50 ms':>8} {'p99 ms':>8}")
    rows = {
        "local SageMaker, raw HTTP": "host",
        "bare starlette handler (baseline), raw HTTP": "bare",
        "local SageMaker, boto3 sagemaker-runtime": "boto3",
    }
    medians = {}
    for label, key in rows.items():
        rates = [r for r, _ in results[key]]
        lat = [x for _, per in results[key] for x in per]
        medians[key] = statistics.median(rates)
        print(f"{label:44} {medians[key]:15,.0f} {pct(lat, 50):8.2f} {pct(lat, 99):8.2f}")
    overhead = 1 - medians["host"] / medians["bare"]
    print(
        f"\noverhead against the bare handler: {overhead:.1%} (target <= 25%: "
        f"{'PASS' if overhead <= 0.25 else 'FAIL'}); raw HTTP >= 1,500 inv/s: "
        f"{'PASS' if medians['host'] >= 1500 else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
