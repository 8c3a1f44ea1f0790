#!/usr/bin/env python3
"""Memory under a burst of large request bodies (issue: bodies read before admission).

Starts keygate-mock and a release keygate on a fresh SQLite data dir, then sends 40
concurrent large POSTs twice: 31 MiB each from a caller no key can serve (refused before
its body is read), and 15 MiB each (the mock takes up to 16 MiB) from a caller with their
own key (bodies read within the memory budget, `body_budget_mb`, 256 MiB by default). Prints keygate's resident memory before, at its
peak (VmHWM) and a few seconds after each burst. Loopback only; stops by itself.

    python3 bench/memory-burst.py [target/release]
"""
import http.client, json, os, socket, subprocess, sys, tempfile, threading, time

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release"
KEY = "sk-proj-membench0000000000000000abcd"
def body(mib):
    return b'{"model":"gpt-4o","messages":[{"role":"user","content":"' + b"x" * (mib << 20) + b'"}]}'


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # MiB
    return 0.0


def wait_port(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def burst(port, token, mib, n=40):
    statuses = []
    payload = body(mib)

    def one():
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            c.request("POST", "/proxy/openai/v1/chat/completions", body=payload,
                      headers={"authorization": f"Bearer {token}", "content-type": "application/json"})
            statuses.append(c.getresponse().status)
        except Exception as e:  # a refused upload may reset the connection mid-body
            statuses.append(type(e).__name__)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


def main():
    data = tempfile.mkdtemp(prefix="keygate-membench-")
    mock_port, port = free_port(), free_port()
    env = dict(os.environ, KEYGATE_DATA_DIR=data, KEYGATE_LISTEN=f"127.0.0.1:{port}",
               KEYGATE_PROVIDER_OPENAI_BASE_URL=f"http://127.0.0.1:{mock_port}", KEYGATE_LOG="warn")
    mock = subprocess.Popen([f"{BIN}/keygate-mock", "--listen", f"127.0.0.1:{mock_port}", "--valid-key", KEY],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run([f"{BIN}/keygate", "admin", "create", "--email", "mem@example.com"], env=env,
                   input=b"a-long-enough-password\n", check=True, capture_output=True)
    token = subprocess.run([f"{BIN}/keygate", "token", "create", "--user", "mem@example.com", "--name", "m"],
                           env=env, check=True, capture_output=True).stdout.decode().strip().splitlines()[-1]
    kg = subprocess.Popen([f"{BIN}/keygate", "serve"], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    try:
        wait_port(mock_port)
        wait_port(port)
        time.sleep(0.5)
        rows = []
        for label, mib in [("31 MiB each; no key can serve the caller (refused before the body is read)", 31),
                           ("15 MiB each; the caller's own key (bodies read within the 256 MiB budget)", 15)]:
            if "own key" in label:
                c = http.client.HTTPConnection("127.0.0.1", port)
                c.request("POST", "/api/v1/keys", body=json.dumps({"provider": "openai", "secret": KEY}),
                          headers={"authorization": f"Bearer {token}", "content-type": "application/json"})
                assert c.getresponse().status == 201
            before = rss(kg.pid, "VmRSS")
            statuses = burst(port, token, mib)
            peak = rss(kg.pid, "VmHWM")
            time.sleep(3)
            after = rss(kg.pid, "VmRSS")
            counts = {str(s): statuses.count(s) for s in set(statuses)}
            rows.append((label, before, peak, after, counts))
        print("| burst of 40 concurrent POSTs | RSS before | peak (VmHWM) | RSS 3 s after | answers |")
        print("|---|---:|---:|---:|---|")
        for label, before, peak, after, counts in rows:
            print(f"| {label} | {before:.0f} MiB | {peak:.0f} MiB | {after:.0f} MiB | {counts} |")
    finally:
        kg.terminate()
        mock.terminate()
        kg.wait()
        mock.wait()


if __name__ == "__main__":
    main()
