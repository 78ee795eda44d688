"""Reports in a real browser: headless Chromium opens report.html offline and the test asserts what a user sees.

Chromium is driven by its command line only (no DevTools client to install): ``--dump-dom`` on a copy of the page
with a small probe script injected first in <head>, which records script errors, console.error calls, failed or
blocked loads and, on the load event, every <img>'s decoded size and colours, into a JSON element of the DOM; then
``--screenshot`` of the page itself for the blank check. The network is closed twice over: a dead proxy, and a
Content-Security-Policy in the probed copy that allows only inline data, so any external reference is reported.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genbits.cli import main

CHROMIUM = next((p for name in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(name))), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Chromium to open the reports: apt-get install -y chromium"
)

WIDTH, HEIGHT = 800, 2400  # half a laptop screen: the page must fit without sideways scrolling
OFFLINE = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
PROBE = """
(function () {
  var problems = [];
  window.addEventListener("error", function (e) {
    var t = e.target;
    problems.push(t && t !== window ? "failed to load <" + t.tagName + "> " + String(t.src || t.href).slice(0, 80)
                                    : "script error: " + e.message);
  }, true);
  document.addEventListener("securitypolicyviolation", function (e) { problems.push("blocked " + e.blockedURI); });
  var error = console.error;
  console.error = function () {
    problems.push("console.error: " + Array.prototype.join.call(arguments, " "));
    error.apply(console, arguments);
  };
  function colours(img) {  // distinct colours of the decoded image, drawn at 64 x 64
    var canvas = document.createElement("canvas"), seen = {};
    canvas.width = canvas.height = 64;
    var context = canvas.getContext("2d");
    context.drawImage(img, 0, 0, 64, 64);
    var d = context.getImageData(0, 0, 64, 64).data;
    for (var i = 0; i < d.length; i += 4) seen[d[i] + "," + d[i + 1] + "," + d[i + 2] + "," + d[i + 3]] = 1;
    return Object.keys(seen).length;
  }
  window.addEventListener("load", function () {
    var images = Array.prototype.map.call(document.images, function (img) {
      var n = 0;
      try { n = colours(img); } catch (err) { problems.push("cannot draw <img alt='" + img.alt + "'>: " + err); }
      var closed = img.closest("details:not([open])");
      return {alt: img.alt, width: img.naturalWidth, height: img.naturalHeight, colours: n,
              shown: img.getBoundingClientRect().width, collapsed: closed !== null};
    });
    var out = document.createElement("script");
    out.type = "application/json";
    out.id = "browser-check";
    out.textContent = JSON.stringify({
      problems: problems, images: images, title: document.title,
      headings: Array.prototype.map.call(document.querySelectorAll("h1, h2, h3, h4, summary"), function (h) {
        return h.textContent;
      }),
      collapsed: Array.prototype.map.call(document.querySelectorAll("details:not([open]) > summary"), function (s) {
        return s.textContent;
      }),
      tables: document.querySelectorAll("table").length,
      pageWidth: document.documentElement.scrollWidth, windowWidth: window.innerWidth
    });
    document.body.appendChild(out);
  });
})();
"""


@dataclass
class Seen:
    """What the browser reported about one page."""

    problems: list[str]  # script errors, console errors, failed or blocked loads, console lines on stderr
    images: list[dict]  # per <img>: alt, naturalWidth/Height, distinct colours, shown width, inside closed <details>
    headings: list[str]  # h1–h4 and <summary> texts, in order
    collapsed: list[str]  # summaries of <details> closed on load
    tables: int
    page_width: int
    window_width: int
    screenshot: np.ndarray  # (H, W, 3) uint8, the window as rendered

    def image(self, alt_start: str) -> dict:
        found = [i for i in self.images if i["alt"].startswith(alt_start)]
        assert found, f"no <img> whose alt starts with {alt_start!r}; images: {[i['alt'] for i in self.images]}"
        return found[0]


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--disable-gpu",
        "--no-sandbox",  # the tests may run as root, where Chromium's sandbox refuses to start
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--proxy-server=127.0.0.1:9",  # nothing listens there: no request leaves the machine
        "--proxy-bypass-list=<-loopback>",
        "--hide-scrollbars",
        f"--window-size={WIDTH},{HEIGHT}",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={profile}",
    ]
    done = subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"chromium exited with {done.returncode}:\n{done.stderr[-3000:]}"
    return done


def external_references(page: str) -> list[str]:
    """src/href attributes and CSS url() that are not inline data: a self-contained page has none."""
    attributes = re.findall(r"<[^>]*?\s(?:src|href|action|poster)\s*=\s*[\"']?([^\"'\s>]*)", page)
    urls = re.findall(r"url\(\s*[\"']?([^\"')]*)", page) + re.findall(r"@import\s+[\"']?([^\"';]*)", page)
    return [u for u in attributes + urls if not u.startswith(("data:", "#"))]


def open_report(path: Path, tmp_path: Path) -> Seen:
    page = path.read_text()
    assert not external_references(page), external_references(page)
    head = page.index("<head>") + len("<head>")
    probed = tmp_path / "probed.html"
    csp = f'<meta http-equiv="Content-Security-Policy" content="{OFFLINE}">'
    probed.write_text(page[:head] + csp + f"<script>{PROBE}</script>" + page[head:])
    dump = chromium("--virtual-time-budget=5000", "--dump-dom", probed.as_uri(), profile=tmp_path / "profile")
    match = re.search(r'<script type="application/json" id="browser-check">(.*?)</script>', dump.stdout, re.S)
    assert match, f"the probe wrote nothing; Chromium said:\n{dump.stderr[-3000:]}"
    seen = json.loads(match.group(1))
    console = [line for line in dump.stderr.splitlines() if ":CONSOLE" in line]
    shot = tmp_path / "screenshot.png"
    chromium(f"--screenshot={shot}", path.as_uri(), profile=tmp_path / "profile")
    return Seen(
        problems=seen["problems"] + console,
        images=seen["images"],
        headings=seen["headings"],
        collapsed=seen["collapsed"],
        tables=seen["tables"],
        page_width=seen["pageWidth"],
        window_width=seen["windowWidth"],
        screenshot=np.asarray(Image.open(shot).convert("RGB")),
    )


def assert_readable(seen: Seen) -> None:
    """No errors, every image decoded and not blank, shown unless collapsed, no sideways scrolling, a drawn page."""
    assert seen.problems == [], seen.problems
    assert seen.images, "a report without a single figure"
    for image in seen.images:
        assert image["width"] > 0 and image["height"] > 0, f"<img alt={image['alt']!r}> did not decode"
        assert image["colours"] > 2, f"<img alt={image['alt']!r}> is blank ({image['colours']} colours)"
        assert image["shown"] > 0 or image["collapsed"], f"<img alt={image['alt']!r}> is not displayed"
    assert seen.page_width <= seen.window_width, f"the page scrolls sideways: {seen.page_width} > {seen.window_width}"
    pixels = seen.screenshot.reshape(-1, 3)
    assert seen.screenshot.shape[:2] == (HEIGHT, WIDTH)
    _, counts = np.unique(pixels, axis=0, return_counts=True)
    assert len(counts) >= 16 and counts.max() / len(pixels) < 0.995, "the screenshot is (nearly) a single colour"


def test_run_report_in_a_browser(tmp_path):
    run = tmp_path / "run"
    train = ["train", "flow-ring", "--run-dir", str(run), "--no-progress"]
    for option in ("train.steps=60", "train.log_every=10", "train.sample_every=30", "train.diagnostics=true"):
        train += ["--set", option]
    assert main(train) == 0
    assert main(["eval", str(run), "-n", "1000", "--no-progress"]) == 0  # nll and mode coverage on the ring
    assert main(["eval", str(run), "-n", "1000", "--metrics", "modes", "--temperature", "0.5", "--no-progress"]) == 0
    assert main(["report", str(run)]) == 0
    seen = open_report(run / "report.html", tmp_path)
    assert_readable(seen)
    for heading in ("Evaluation", "Mode coverage", "sampled with temperature=0.5", "Training curves", "Samples"):
        assert heading in seen.headings, seen.headings
    assert seen.headings.count("Mode coverage") == 2  # default sampling and temperature=0.5
    assert seen.image("training curves")["shown"] > 0
    assert len([i for i in seen.images if i["alt"].startswith("samples at")]) == 2
    assert seen.image("training dynamics")["collapsed"]  # decoded, but folded away until opened
    assert any(s.startswith("Training dynamics") for s in seen.collapsed)


def test_sweep_report_in_a_browser(tmp_path):
    sweep = tmp_path / "sweep"
    argv = ["sweep", "flow-ring", "--grid", "optim.lr=1e-3,1e-2", "--seeds", "1", "--workers", "1"]
    argv += ["--set", "train.steps=20", "--set", "train.sample_every=0", "--run-dir", str(sweep), "--no-progress"]
    assert main(argv) == 0
    assert main(["report", str(sweep)]) == 0
    seen = open_report(sweep / "report.html", tmp_path)
    assert_readable(seen)
    assert {"Stability", "Runs"} <= set(seen.headings), seen.headings
    assert seen.image("stability")["shown"] > 0


def test_experiment_report_in_a_browser(tmp_path):
    assert main(["experiment", "dirac-gan", "--run-dir", str(tmp_path / "exp"), "--steps", "50", "--no-progress"]) == 0
    seen = open_report(tmp_path / "exp" / "report.html", tmp_path)
    assert_readable(seen)
    assert seen.image("figure")["shown"] > 0
    assert seen.tables == 1 and "Dirac-GAN: predicted spectral radius vs measured growth" in seen.headings  # table.md


def test_the_check_sees_a_broken_page(tmp_path):
    """The probe itself: a broken image, a script error, a console error and a remote image are all reported."""
    broken = tmp_path / "broken.html"
    tiny = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
    body = (
        '<img alt="truncated" src="data:image/png;base64,AAAA">'
        f'<img alt="one pixel" src="data:image/png;base64,{tiny}">'
        "<script>console.error('boom'); missing();</script>"
    )
    broken.write_text(f"<!doctype html><html><head><title>t</title></head><body>{body}</body></html>")
    seen = open_report(broken, tmp_path)
    assert any("failed to load <IMG> data:image/png" in p for p in seen.problems), seen.problems
    assert any("console.error: boom" in p for p in seen.problems) and any("missing" in p for p in seen.problems)
    assert seen.image("one pixel")["width"] == 1 and seen.image("truncated")["width"] == 0
    with pytest.raises(AssertionError, match="single colour"):
        assert_readable(Seen(**{**seen.__dict__, "problems": [], "images": [seen.image("one pixel") | {"colours": 3}]}))
    remote = broken.read_text().replace("data:image/png;base64,AAAA", "https://example.com/a.png")
    assert external_references(remote) == ["https://example.com/a.png"]
    broken.write_text(remote)
    with pytest.raises(AssertionError, match="example.com"):
        open_report(broken, tmp_path)
