"""The drain's view of a host's gateway: new inference requests in its access log, and the
engines' in-flight gauges (roles/inference_service/library/inference_drain_wait.py)."""

from __future__ import annotations

import http.server
import os
import threading

from kitcode import load

drain = load("roles/inference_service/library/inference_drain_wait.py")

LINE = '10.0.1.7 [07/Dec/2026:03:00:00 +0000] "{request} HTTP/1.1" 200 512 client=alice#1 rt=1.2 urt=1.2 port={port}\n'


def test_the_log_is_read_from_its_end_as_it_grows_whole_lines_only_and_again_after_rotation(tmp_path):
    log = tmp_path / "gateway.log"
    log.write_text(LINE.format(request="POST /v1/completions", port=8000))
    tail = drain.LogTail(str(log))
    assert tail.lines() == []  # what was there before the drain does not count
    with log.open("a") as handle:
        handle.write(LINE.format(request="GET /ready", port=8000) + LINE.format(request="POST /v1/x", port=8000)[:20])
    assert len(tail.lines()) == 1  # the half-written line waits
    with log.open("a") as handle:
        handle.write(LINE.format(request="POST /v1/x", port=8000)[20:])
    assert [line.split('"')[1] for line in tail.lines()] == ["POST /v1/x HTTP/1.1"]
    os.replace(log, tmp_path / "gateway.log.1")  # logrotate: a new, shorter file
    log.write_text(LINE.format(request="POST /v1/chat/completions", port=8001))
    assert len(tail.lines()) == 1


def test_an_engine_that_refuses_the_connection_has_nothing_in_flight_and_one_without_the_gauges_is_not_idle():
    names = ["vllm:num_requests_running", "vllm:num_requests_waiting"]

    class Metrics(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the name http.server calls
            body = b'vllm:num_requests_running{model_name="m"} 2.0\nvllm:num_requests_waiting{model_name="m"} 1.0\n'
            body = body if self.path == "/metrics" else b"other_gauge 1\n"
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        assert drain.in_flight(f"http://127.0.0.1:{port}/metrics", names) == 3
        assert drain.in_flight(f"http://127.0.0.1:{port}/other", names) is None
    finally:
        server.shutdown()
    assert drain.in_flight("http://127.0.0.1:9/metrics", names) == 0
