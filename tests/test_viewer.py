"""The web viewer (GET /) in a real headless Chromium, against a real server on the shipped model.

One `recon-serve serve` subprocess (ORT backend, temporary index holding a few meshes from
../shared/data/meshes), Playwright driving the system Chromium (tests/browser.py installs Debian's
`chromium` with apt when it is missing) with software WebGL (SwiftShader). The page must:
upload chair_model.obj (y-up) through the file picker and show class probabilities, a part legend
and a point cloud the WebGL canvas really drew (pixels read back); orbit and zoom with the mouse;
score zero-shot labels; search by text and by "more like this"; open a hit's record; and show an
API error (empty.obj, dropped onto the page) as a readable message.

A screenshot of the loaded chair goes to the test's temp dir, and to $RECON_SCREENSHOT when set
(`RECON_SCREENSHOT=docs/viewer.png pytest tests/test_viewer.py` refreshes the one in the docs).
Skipped only when the shared meshes are absent.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser import LAUNCH_ARGS, chromium_path  # noqa: E402
from server_util import ROOT, Server  # noqa: E402

pytestmark = pytest.mark.data

SHARED = Path(os.environ.get("RECON_DATA", ROOT.parent / "shared" / "data"))
MESHES = SHARED / "meshes"
WIDTH, HEIGHT = 1280, 800
# (id, file, up axis, metadata) put in the index before the page searches it
INDEXED = [("mesh/chair", "chair_model.obj", "y", {"kind": "chair", "format": "obj"}),
           ("mesh/bunny", "bunny.ply", "z", {"kind": "animal", "format": "ply"}),
           ("mesh/teapot", "teapot.stl", "z", {"kind": "teapot", "format": "stl"}),
           ("mesh/torus", "torus.STL", "z", {"kind": "torus", "format": "stl"})]

# Pixel statistics of the WebGL canvas: drawn pixels, and how many of them are strongly coloured
# (part colours; the floor grid is grey), plus the number of distinct colours.
CANVAS_STATS = """() => {
  const src = document.querySelector('#viewport canvas');
  const c = document.createElement('canvas');
  c.width = src.width; c.height = src.height;
  const g = c.getContext('2d');
  g.drawImage(src, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let drawn = 0, coloured = 0;
  const colours = new Set();
  for (let i = 0; i < d.length; i += 4) {
    if (d[i + 3] === 0) continue;
    drawn++;
    const mx = Math.max(d[i], d[i + 1], d[i + 2]), mn = Math.min(d[i], d[i + 1], d[i + 2]);
    if (mx - mn > 60) coloured++;
    colours.add((d[i] >> 3) << 10 | (d[i + 1] >> 3) << 5 | (d[i + 2] >> 3));
  }
  return {drawn, coloured, distinct: colours.size, total: c.width * c.height};
}"""

# Drop a file on the drop zone the way a browser does (a DragEvent carrying a DataTransfer).
DROP_FILE = """([name, b64]) => {
  const bytes = Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0));
  const dt = new DataTransfer();
  dt.items.add(new File([bytes], name));
  const zone = document.getElementById('drop-zone');
  for (const type of ['dragenter', 'dragover', 'drop']) {
    zone.dispatchEvent(new DragEvent(type, {dataTransfer: dt, bubbles: true, cancelable: true}));
  }
}"""


def _mesh(name: str) -> Path:
    path = MESHES / name
    if not path.is_file():
        pytest.skip(f"shared data not found: {path}")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from recon_serve.model.factory import DEFAULT_CHECKPOINT
    from recon_serve.settings import Settings

    for _, name, _, _ in INDEXED:
        _mesh(name)
    _mesh("empty.obj")
    d = tmp_path_factory.mktemp("viewer")
    # the usual ONNX cache: only the first run after a new checkpoint pays for the export
    s = Server(DEFAULT_CHECKPOINT, d / "index", Path(Settings.from_env().cache_dir), d / "server.log",
               ready_timeout=600, threads=min(2, os.cpu_count() or 1), max_wait_ms=2)
    try:
        for shape_id, name, up, meta in INDEXED:
            with _mesh(name).open("rb") as f:
                r = httpx.post(f"{s.url}/v1/shapes", files={"file": (name, f)}, timeout=120,
                               data={"id": shape_id, "up_axis": up, "metadata": json.dumps(meta)})
            assert r.status_code == 201, r.text
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    executable = chromium_path()  # installs Debian's chromium when missing
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=LAUNCH_ARGS)
        context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT}, device_scale_factor=1)
        pg = context.new_page()
        pg.set_default_timeout(45_000)
        pg.problems = []  # uncaught page errors and console errors other than the expected 4xx loads
        pg.on("pageerror", lambda e: pg.problems.append(f"pageerror: {e}"))
        pg.on("console", lambda m: m.type == "error" and "status of 4" not in m.text
              and pg.problems.append(f"console: {m.text}"))
        try:
            yield pg
        finally:
            browser.close()


def test_viewer_end_to_end(server, page, tmp_path):
    from playwright.sync_api import expect

    expect.set_options(timeout=45_000)  # model answers on a busy 2-core machine
    page.goto(server.url + "/")
    expect(page).to_have_title("recon-serve viewer")
    expect(page.locator("#model-info")).to_contain_text("onnxruntime")
    expect(page.locator("#index-size")).to_have_text(f"({len(INDEXED)} shapes)")
    webgl = page.evaluate("() => { const gl = document.querySelector('#viewport canvas').getContext('webgl2');"
                          " return gl ? gl.getParameter(gl.VERSION) : null; }")
    assert webgl, "no WebGL context in headless Chromium"

    # ---- upload the chair (file picker), y-up, with zero-shot labels already typed
    page.check('input[name="up_axis"][value="y"]')
    page.fill("#zero-shot-labels", "chair, table, lamp")
    page.set_input_files("#file-input", str(_mesh("chair_model.obj")))
    classes = page.locator("#class-list li")
    expect(classes).to_have_count(5)
    expect(classes.first.locator(".name")).to_have_text("chair")
    probs = [float(t.rstrip("%")) for t in classes.locator(".value").all_inner_texts()]
    assert probs == sorted(probs, reverse=True) and 50 < probs[0] <= 100, probs
    legend = page.locator("#legend li")
    expect(legend.first).to_be_visible()
    expect(page.locator("#viewport")).to_have_attribute("data-points", "2048")
    parts = legend.locator(".name").all_inner_texts()
    assert 1 <= len(parts) <= 10 and all(parts), parts
    expect(page.locator("#category")).to_contain_text("chair")  # chair or armchair
    zero = page.locator("#zero-shot-list li")
    expect(zero).to_have_count(3)
    expect(zero.first.locator(".name")).to_have_text("chair")
    expect(page.locator("#status")).to_contain_text("chair_model.obj · 2,048 points")

    # ---- the canvas really drew the coloured cloud (pixels read back from WebGL)
    page.wait_for_function(f"({CANVAS_STATS})().coloured > 2000")
    stats = page.evaluate(CANVAS_STATS)
    assert stats["distinct"] > len(parts) + 5 and stats["drawn"] < stats["total"], stats

    # ---- zero-shot again with other labels (button)
    page.fill("#zero-shot-labels", "a lamp, an armchair, a car")
    page.click("#zero-shot-run")
    expect(zero.first.locator(".name")).to_have_text("an armchair")
    expect(zero).to_have_count(3)

    # ---- text search: the grid of hits, with ids and scores
    page.fill("#search-text", "a chair")
    page.click("#search-run")
    cards = page.locator("#results .result")
    expect(cards).to_have_count(len(INDEXED))
    ids = cards.locator(".id").all_inner_texts()
    assert sorted(ids) == sorted(i for i, *_ in INDEXED)
    assert all(t.startswith("score ") for t in cards.locator(".score").all_inner_texts())
    expect(page.locator("#results")).to_contain_text("kind: chair")
    expect(page.locator("#search-note")).to_contain_text("nearest to “a chair”")

    # ---- screenshot: chair coloured by part, classes, zero-shot, search hits
    shot = tmp_path / "viewer.png"
    page.screenshot(path=str(shot))
    assert 10_000 < shot.stat().st_size < 600_000
    target = os.environ.get("RECON_SCREENSHOT")
    if target:
        dest = Path(target) if Path(target).is_absolute() else ROOT / target
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, dest)

    # ---- orbit (drag) and zoom (wheel) move the camera
    pos = "() => window.reconViewer.camera.position.toArray()"
    before = page.evaluate(pos)
    box = page.locator("#viewport canvas").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 120, cy + 30, steps=6)
    page.mouse.up()
    page.wait_for_timeout(300)
    orbited = page.evaluate(pos)
    assert max(abs(a - b) for a, b in zip(before, orbited)) > 1e-3, (before, orbited)
    dist = "() => window.reconViewer.camera.position.distanceTo(window.reconViewer.controls.target)"
    d0 = page.evaluate(dist)
    page.mouse.wheel(0, 400)
    page.wait_for_timeout(400)
    assert page.evaluate(dist) > d0 * 1.05

    # ---- "more like this" with the uploaded chair: its own stored copy comes first
    page.click("#more-like-this")
    expect(page.locator("#search-note")).to_contain_text("nearest to chair_model.obj")
    expect(cards.first.locator(".id")).to_have_text("mesh/chair")
    assert float(cards.first.locator(".score").inner_text().split()[1]) > 0.99

    # ---- open a hit: its record; "more like this" by id leaves it out of the hits
    page.locator('#results .result[data-id="mesh/teapot"]').click()
    record = page.locator("#record-body")
    expect(record).to_contain_text("mesh/teapot")
    expect(record).to_contain_text("teapot")
    expect(page.locator("#view-note")).to_be_visible()
    page.click("#more-like-this")
    expect(page.locator("#search-note")).to_contain_text("nearest to mesh/teapot")
    expect(cards).to_have_count(len(INDEXED) - 1)
    assert "mesh/teapot" not in cards.locator(".id").all_inner_texts()

    # ---- an API error (an empty mesh, dropped onto the page) reads as a message, not a crash
    empty = _mesh("empty.obj")
    page.evaluate(DROP_FILE, ["empty.obj", base64.b64encode(empty.read_bytes()).decode()])
    error = page.locator("#errors .error").first
    expect(error).to_be_visible()
    expect(error).to_contain_text("Could not analyse empty.obj")
    expect(error).to_contain_text("holds no vertices or points")
    expect(error).to_contain_text("empty_shape (HTTP 422)")
    expect(page.locator("#errors .error")).to_have_count(1)  # one message, not one per request
    expect(page.locator("#legend li")).to_have_count(0)
    expect(page.locator("#class-list li")).to_have_count(0)

    # ---- a fresh upload clears the error
    page.set_input_files("#file-input", str(_mesh("teapot.stl")))
    expect(page.locator("#errors .error")).to_have_count(0)
    expect(page.locator("#class-list li")).to_have_count(5)
    assert page.problems == [], page.problems


def test_static_files_served(server):
    r = httpx.get(f"{server.url}/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'src="static/app.js"' in r.text
    for name, ctype in [("app.js", "javascript"), ("app.css", "text/css")]:
        r = httpx.get(f"{server.url}/static/{name}")
        assert r.status_code == 200 and ctype in r.headers["content-type"]
    r = httpx.get(f"{server.url}/static/missing.js")
    assert r.status_code == 404 and set(r.json()) == {"error", "detail"}
    assert "/" not in httpx.get(f"{server.url}/openapi.json").json()["paths"]
