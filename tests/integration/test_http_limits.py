"""The HTTP limits against the running services, over raw sockets as a hostile client sends (issue 23):
a huge header costs no CPU, silent and half-sent connections are closed, a streamed body is refused at
the service's limit with its memory flat, and ordinary requests at the edge of each limit still work."""
import hashlib
import json
import os
import select
import socket
import threading
import time

import httpx

from shared.platform.config import CommonSettings
from shared.platform.http_server import HEAD_LIMIT_BYTES, KEEP_ALIVE_S

MiB = 2**20
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def setting(service, field: str) -> float:
    """One of a service's HTTP settings as it runs: from its environment (none in the test stack), else
    the default."""
    declared = CommonSettings.model_fields[field]
    return float(service.env.get(declared.validation_alias, declared.default))


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for {pid}")


def connect(service) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", service.port))
    sock.settimeout(10)
    return sock


def read_answer(sock: socket.socket) -> tuple[int | None, dict[str, str], bytes]:
    """One HTTP answer (status, headers, body), or (None, {}, b"") when the server closed without one."""
    data = b""
    while b"\r\n\r\n" not in data:
        if not (part := receive(sock)):
            return None, {}, b""
        data += part
    head, body = data.split(b"\r\n\r\n", 1)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
    while len(body) < int(headers.get("content-length", 0)) and (part := receive(sock)):
        body += part
    return int(status_line.split()[1]), headers, body


def receive(sock: socket.socket) -> bytes:
    """What the server sent next; b"" once it closed (a reset, after a refusal it did not read to the
    end, is a close too)."""
    try:
        return sock.recv(65536)
    except ConnectionResetError:
        return b""


def request(path: str, extra_headers: bytes = b"") -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: test\r\n" + extra_headers + b"\r\n"


def healthy(service) -> bool:
    return httpx.get(f"{service.url}/healthz", timeout=5).status_code == 200


def test_a_32_mb_header_is_refused_without_costing_the_service_cpu(services):
    lead = services["lead_partner"]
    pid = lead.proc.pid
    before, started = cpu_seconds(pid), time.monotonic()
    sock = connect(lead)
    try:
        sock.sendall(request("/healthz", b"X-Big: " + b"a" * (32 * MiB) + b"\r\n"))
    except OSError:
        pass  # the server closed while the header was still arriving: what a refusal may look like
    status, headers, body = read_answer(sock)
    sock.close()
    took, cost = time.monotonic() - started, cpu_seconds(pid) - before
    assert status in (431, None), f"a 32 MB header was answered {status}"
    if status == 431:
        assert headers["connection"] == "close" and "64 KiB" in json.loads(body)["detail"]
    assert cost < 0.5, f"the lead spent {cost:.2f} s of CPU on one header"
    assert took < 5
    assert healthy(lead)


def test_a_32_mb_trailer_after_a_chunked_body_is_refused_without_costing_the_service_cpu(services):
    """Trailers follow a chunked body's last chunk and are parsed as headers are, after the head's count
    ended: they are counted with the body's framing."""
    lead = services["lead_partner"]
    pid = lead.proc.pid
    before = cpu_seconds(pid)
    sock = connect(lead)
    try:
        sock.sendall(f"POST /api/tickets HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {lead.token}\r\n".encode()
                     + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n"
                     + b"X-Trailer: " + b"t" * (32 * MiB) + b"\r\n\r\n")
    except OSError:
        pass
    status, _, body = read_answer(sock)
    sock.close()
    cost = cpu_seconds(pid) - before
    assert status in (431, None), f"a 32 MB trailer was answered {status}"
    if status == 431:
        assert "chunk framing" in json.loads(body)["detail"]
    assert cost < 0.5, f"the lead spent {cost:.2f} s of CPU on one trailer"
    assert healthy(lead)


def test_a_head_just_under_64_kib_is_served_and_a_kept_alive_connection_counts_each_head_anew(services):
    lead = services["lead_partner"]
    sock = connect(lead)
    padding = b"X-Pad: " + b"p" * (HEAD_LIMIT_BYTES - 200) + b"\r\n"  # three of them make 192 KiB
    for _ in range(3):
        sock.sendall(request("/healthz", padding))
        status, headers, body = read_answer(sock)
        assert status == 200 and json.loads(body)["status"] == "ok"
        assert headers.get("connection") != "close"
    sock.close()


def test_half_sent_silent_idle_and_stalled_connections_are_all_closed_by_the_server(services):
    """All at once, on the default timeouts: a head that never ends (408), a connection that never
    sends a byte, one left idle after an answer (keep-alive), and a body that stops halfway."""
    lead = services["lead_partner"]
    head_timeout, body_idle = setting(lead, "http_head_timeout_s"), setting(lead, "http_body_idle_s")
    half, silent, idle, stalled = (connect(lead) for _ in range(4))
    started = time.monotonic()
    half.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")
    idle.sendall(request("/healthz"))
    assert read_answer(idle)[0] == 200
    idle_since = time.monotonic()
    stalled.sendall(f"POST /api/tickets HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {lead.token}\r\n"
                    "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"title\": \"".encode())
    stalled_since = time.monotonic()

    closed = closing_times({"half": half, "silent": silent, "idle": idle, "stalled": stalled},
                           deadline=max(head_timeout, KEEP_ALIVE_S, body_idle) + 10)
    assert head_timeout - 0.5 < closed["half"][0] - started < head_timeout + 5
    assert closed["half"][1].startswith(b"HTTP/1.1 408 ") and b"connection: close" in closed["half"][1]
    assert head_timeout - 0.5 < closed["silent"][0] - started < head_timeout + 5 and closed["silent"][1] == b""
    assert KEEP_ALIVE_S - 0.5 < closed["idle"][0] - idle_since < KEEP_ALIVE_S + 5
    assert body_idle - 0.5 < closed["stalled"][0] - stalled_since < body_idle + 5 and closed["stalled"][1] == b""
    assert healthy(lead)


def closing_times(sockets: dict[str, socket.socket], deadline: float) -> dict[str, tuple[float, bytes]]:
    """When the server closed each socket (monotonic time) and what it sent before."""
    received = {name: b"" for name in sockets}
    closed: dict[str, tuple[float, bytes]] = {}
    ends = time.monotonic() + deadline
    while len(closed) < len(sockets) and time.monotonic() < ends:
        waiting = {sock: name for name, sock in sockets.items() if name not in closed}
        for sock in select.select(list(waiting), [], [], 0.1)[0]:
            name = waiting[sock]
            part = receive(sock)
            received[name] += part
            if not part:
                closed[name] = (time.monotonic(), received[name])
                sock.close()
    assert closed.keys() == sockets.keys(), f"still open after {deadline:.0f} s: {sockets.keys() - closed.keys()}"
    return closed


def test_a_200_mb_chunked_note_is_refused_at_the_limit_with_the_services_memory_flat(services):
    lead = services["lead_partner"]
    auth = {"Authorization": f"Bearer {lead.token}"}
    ticket = httpx.post(f"{lead.url}/api/tickets", json={"title": "Streamed note"}, headers=auth).json()
    pid = lead.proc.pid
    baseline, peak = rss_mb(pid), RssPeak(pid)
    sock = connect(lead)
    sock.sendall(f"POST /api/tickets/{ticket['id']}/notes HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {lead.token}"
                 "\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
    sent = send_chunked(sock, b'{"body": "', b"a" * MiB, count=200)
    status, headers, body = read_answer(sock)
    sock.close()
    peak.stop()
    assert status == 413, f"answered {status} after {sent / MiB:.0f} MiB"
    assert json.loads(body)["detail"].startswith("the request body is over this service's limit of 10.25 MiB")
    assert headers["connection"] == "close"
    assert sent < 50 * MiB, f"the client could send {sent / MiB:.0f} MiB of a refused body"
    assert peak.mb - baseline < 50, f"the lead went from {baseline:.0f} to {peak.mb:.0f} MB"
    notes = httpx.get(f"{lead.url}/api/tickets/{ticket['id']}/notes", headers=auth).json()
    assert notes["items"] == []


class RssPeak:
    """The highest VmRSS of a process while it is watched: sampled every 10 ms in a thread, and the
    kernel's own high-water mark (VmHWM, reset at the start), which a peak shorter than a sample shows."""

    def __init__(self, pid: int):
        with open(f"/proc/{pid}/clear_refs", "w") as refs:
            refs.write("5")  # VmHWM starts again from the current RSS
        self.pid, self.mb, self._done = pid, rss_mb(pid), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.wait(0.01):
            self.mb = max(self.mb, rss_mb(self.pid))

    def stop(self) -> None:
        self._done.set()
        self._thread.join()
        self.mb = max(self.mb, rss_mb(self.pid, "VmHWM"))


def send_chunked(sock: socket.socket, first: bytes, chunk: bytes, count: int) -> int:
    """Sends `first`, then `chunk` `count` times, as a chunked body, until the server answers or stops
    taking it; returns the bytes sent."""
    sent = 0
    framed = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    try:
        sock.sendall(b"%x\r\n%s\r\n" % (len(first), first))
        for _ in range(count):
            if select.select([sock], [], [], 0)[0]:
                return sent  # answered early, as a careful client notices
            sock.sendall(framed)
            sent += len(chunk)
        sock.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server closed: it read no more
    return sent


def test_a_content_length_over_the_limit_is_refused_before_the_body_with_the_limit_stated(services):
    for name, limit in (("lead_partner", "10.25 MiB"), ("sync_bridge", "1 MiB")):
        sock = connect(services[name])
        sock.sendall(b"POST /api/tickets HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 209715200\r\n\r\n")
        status, headers, body = read_answer(sock)
        sock.close()
        assert status == 413 and headers["connection"] == "close"
        assert json.loads(body)["detail"] == (f"the request body of 209715200 bytes is over this service's limit"
                                              f" of {limit}; nothing was read or stored")


def test_a_chunked_upload_just_under_the_limit_is_stored_whole(services):
    lead = services["lead_partner"]
    auth = {"Authorization": f"Bearer {lead.token}"}
    with httpx.Client(base_url=lead.url, headers=auth, timeout=30) as client:
        ticket = client.post("/api/tickets", json={"title": "Large upload"}).json()
        content = os.urandom(10 * MiB)  # the largest attachment, in a body just under the 10.25 MiB limit
        boundary = "limit-test-boundary"
        parts = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"max.bin\"\r\n"
                 "Content-Type: application/octet-stream\r\n\r\n".encode(),
                 *(content[i:i + MiB] for i in range(0, len(content), MiB)), f"\r\n--{boundary}--\r\n".encode()]
        answer = client.post(f"/api/tickets/{ticket['id']}/attachments", content=iter(parts),  # no length: chunked
                             headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert answer.status_code == 201, answer.text
        assert answer.json()["sha256"] == hashlib.sha256(content).hexdigest()


def test_connections_past_the_cap_are_answered_503_and_served_again_once_they_close(services):
    bridge = services["sync_bridge"]
    cap = int(setting(bridge, "http_max_connections"))
    held = [connect(bridge) for _ in range(cap - 1)]
    try:
        last_served = connect(bridge)  # the cap-th connection is served (and kept open)
        held.append(last_served)
        last_served.sendall(request("/healthz"))
        assert read_answer(last_served)[0] == 200
        one_more = connect(bridge)
        one_more.sendall(request("/healthz"))
        status, headers, _ = read_answer(one_more)
        one_more.close()
        assert status == 503 and headers["connection"] == "close"
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while not healthy(bridge):
        assert time.monotonic() < deadline, "the bridge still refuses after the held connections closed"
        time.sleep(0.1)
