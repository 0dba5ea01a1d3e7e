"""How fast the simulator itself answers, so benchmarks of our code know its ceiling.

Prints requests/s for small JSON GETs (1 and 8 client threads, throttling off), MB/s for a
streamed download and for an upload session.

Run: .venv/bin/python -m bench.graphsim_throughput
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from graphsim import Simulator


def main() -> None:
    with Simulator(
        seed=1, users=4, messages=400, files=20, consented=True, throttling="off"
    ) as sim:
        token = httpx.post(
            f"{sim.base_url}/{sim.tenant().id}/oauth2/v2.0/token",
            data={
                "client_id": sim.app_id,
                "client_secret": sim.app_secret,
                "scope": "https://graph.microsoft.com/.default",
                "grant_type": "client_credentials",
            },
            verify=sim.ssl_context(),
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        tenant = sim.tenant()
        messages = [(m.user_id, m.id) for m in tenant.items.values() if m.kind == "message"]

        for threads in (1, 8):
            clients = [
                httpx.Client(base_url=sim.graph_url, verify=sim.ssl_context(), headers=headers)
                for _ in range(threads)
            ]
            per_thread = 300 // threads

            def run(n: int, clients: list[httpx.Client] = clients, per: int = per_thread) -> int:
                done = 0
                for k in range(per):
                    user, mid = messages[(n * per + k) % len(messages)]
                    resp = clients[n].get(
                        f"/users/{user}/messages/{mid}", params={"$select": "id,subject"}
                    )
                    done += resp.status_code == 200
                return done

            start = time.perf_counter()
            with ThreadPoolExecutor(max_workers=threads) as pool:
                ok = sum(pool.map(run, range(threads)))
            took = time.perf_counter() - start
            print(f"GET message ($select), {threads} thread(s): {ok / took:.0f} requests/s")
            for c in clients:
                c.close()

        user = next(iter(tenant.users.values()))
        size = 64 * 1024 * 1024
        file_id = sim.add_file(tenant.id, "bench/big.bin", user=user.id, size=size)
        with httpx.Client(
            base_url=sim.graph_url, verify=sim.ssl_context(), headers=headers, timeout=120
        ) as client:
            url = client.get(f"/users/{user.id}/drive/items/{file_id}/content").headers["location"]
            start = time.perf_counter()
            got = 0
            with httpx.stream("GET", url, verify=sim.ssl_context(), timeout=120) as resp:
                for chunk in resp.iter_bytes():
                    got += len(chunk)
            took = time.perf_counter() - start
            print(
                f"download (generated, streamed): {got / took / 1e6:.0f} MB/s "
                f"over {got / 1e6:.0f} MB"
            )

            data = bytes(327_680 * 16)
            total = len(data) * 8
            session = client.post(
                f"/users/{user.id}/drive/root:/bench/up.bin:/createUploadSession", json={}
            ).json()["uploadUrl"]
            start = time.perf_counter()
            with httpx.Client(verify=sim.ssl_context(), timeout=120) as plain:
                for n in range(8):
                    lo = n * len(data)
                    plain.put(
                        session,
                        content=data,
                        headers={"Content-Range": f"bytes {lo}-{lo + len(data) - 1}/{total}"},
                    )
            took = time.perf_counter() - start
            print(
                f"upload session (5 MiB fragments): {total / took / 1e6:.0f} MB/s "
                f"over {total / 1e6:.0f} MB"
            )


if __name__ == "__main__":
    main()
