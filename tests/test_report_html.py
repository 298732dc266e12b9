"""The HTML report opens in headless Chromium, offline, without console errors, and every image loads.

Chromium is driven over the DevTools protocol (websocket-client): console messages, uncaught
exceptions and browser log entries (failed loads, blocked resources) are collected while the page
loads, then every <img> is decoded and its natural size read. Skips only when Chromium is absent.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from test_report_data import fake_predictions

CHROMIUM = next(
    (p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), shutil.which("google-chrome")) if p), None
)


class DevTools:
    """A headless Chromium and one page, driven over the DevTools protocol."""

    def __init__(self, profile: Path):
        import websocket

        self.proc = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--remote-debugging-port=0",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not start its DevTools endpoint")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never route localhost via $http_proxy
        targets = json.load(no_proxy.open(f"http://127.0.0.1:{port}/json/list", timeout=30))
        page = next(t for t in targets if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, method: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(method)
            self.events.append(json.loads(self.ws.recv()))

    def errors(self) -> list[str]:
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.exceptionThrown":
                out.append("exception: " + p["exceptionDetails"].get("text", ""))
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(
                    "console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
                )
            elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
                out.append("log: " + p["entry"].get("text", ""))
        return out

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


IMAGES_JS = """
(async () => {
  document.querySelectorAll('details').forEach(d => d.open = true);
  const imgs = Array.from(document.images);
  await Promise.all(imgs.map(i => i.decode().catch(() => null)));
  return JSON.stringify({
    images: imgs.map(i => ({alt: i.alt, w: i.naturalWidth, h: i.naturalHeight, complete: i.complete})),
    title: document.title,
    thisRun: document.querySelectorAll('tr.this-run').length,
    external: Array.from(document.querySelectorAll('[src],[href]'))
      .map(e => e.getAttribute('src') || e.getAttribute('href'))
      .filter(u => !u.startsWith('data:') && !u.startsWith('#')),
  });
})()
"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (CI installs Debian's chromium package)")
def test_report_opens_in_chromium_without_errors(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from grefel.report.page import Section, SectionFigure, Table
    from grefel.study.pipeline import evaluate_and_report

    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)  # DevTools is on localhost: no proxy in between

    a = fake_predictions(tmp_path / "k10-noise10.parquet", n=300, seed=0, num_anchors=10, noise=0.1)
    b = fake_predictions(tmp_path / "k0-noise10.parquet", n=300, seed=1, num_anchors=0, noise=0.1)
    fig = Figure(figsize=(3, 2))
    fig.subplots().errorbar([0.5, 1.2], [0, 1], xerr=[0.3, 0.4], fmt="o")
    extra = Section(
        "Summary over seeds",
        text="A section a caller adds.",
        tables=[Table(["setting", "accuracy"], [["k10", "71.2 ± 0.8"], ["k0", 69.94]])],
        figures=[SectionFigure("forest", fig, caption="Paired differences")],
    )
    html = evaluate_and_report(
        [a, b, tmp_path / "missing.pt"], out=tmp_path / "report", tsne_points=150, show_progress=False, sections=[extra]
    )
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    n_figures = sum(len(r["figures"]) for r in report["runs"])
    n_figures += sum(len(s["figures"]) for s in report["sections"])  # the caller's and the ad-hoc study's

    (tmp_path / "profile").mkdir()
    dt = DevTools(tmp_path / "profile")
    try:
        dt.call("Runtime.enable")
        dt.call("Log.enable")
        dt.call("Page.enable")
        dt.call("Page.navigate", url=html.resolve().as_uri())
        dt.wait_for("Page.loadEventFired")
        res = dt.call("Runtime.evaluate", expression=IMAGES_JS, awaitPromise=True, returnByValue=True)
        page = json.loads(res["result"]["value"])
        errors = dt.errors()
    finally:
        dt.close()

    assert errors == []
    assert page["title"].startswith("GReFEL report")
    assert page["external"] == []  # opens offline: nothing outside the file
    assert len(page["images"]) == n_figures >= 2 * 7 + 1
    broken = [i["alt"] for i in page["images"] if not (i["complete"] and i["w"] > 0 and i["h"] > 0)]
    assert broken == []
    assert page["thisRun"] == 2  # both runs placed beside Table 1
