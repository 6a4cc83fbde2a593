"""The report of the bundled example, rendered by a real browser (headless Chromium).

String checks cannot tell whether a page *looks* like anything; a screenshot
can at least tell that it has the expected size and is not blank. The PNG is
decoded here with zlib and numpy (no imaging library), and the screenshot is
kept under pytest's tmp path for a human to look at.
"""

import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from driftline.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "covid.jsonl.gz"
WIDTH, HEIGHT = 1280, 2400

pytestmark = pytest.mark.slow


def chromium() -> str:
    """The browser, or a skip; a failure where it must be there (CI)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    reason = "chromium is not installed (scripts/test-deps installs it: apt-get install chromium)"
    if os.environ.get("CI") or os.environ.get("DRIFTLINE_REQUIRE_CHROMIUM"):
        pytest.fail(f"{reason}; CI or DRIFTLINE_REQUIRE_CHROMIUM is set, so it is required")
    pytest.skip(f"{reason}; set DRIFTLINE_REQUIRE_CHROMIUM=1 to make this a failure")


def paeth(a: int, b: int, c: int) -> int:
    pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def decode_png(data: bytes) -> np.ndarray:
    """Pixels (height, width, channels) of an 8-bit RGB or RGBA, non-interlaced PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], None
    while pos < len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + size]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + size
    assert header is not None, "PNG without IHDR"
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and color in (2, 6) and interlace == 0, header
    bpp = 3 if color == 2 else 4
    stride = width * bpp
    rows = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8).reshape(height, -1)
    out = np.zeros((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.uint8)
    for y in range(height):
        kind, line = rows[y, 0], rows[y, 1:]
        if kind == 0:
            cur = line.copy()
        elif kind == 1:  # Sub: a running sum per channel
            cur = (np.cumsum(line.reshape(width, bpp), axis=0, dtype=np.int64) & 255).ravel()
        elif kind == 2:  # Up
            cur = line + prev
        else:  # Average or Paeth: sequential along the row
            buf, up = bytearray(line.tobytes()), prev.tobytes()
            for i in range(stride):
                a = buf[i - bpp] if i >= bpp else 0
                c = up[i - bpp] if i >= bpp else 0
                pred = (a + up[i]) >> 1 if kind == 3 else paeth(a, up[i], c)
                buf[i] = (buf[i] + pred) & 255
            cur = np.frombuffer(bytes(buf), dtype=np.uint8)
        out[y] = cur
        prev = out[y]
    return out.reshape(height, width, bpp)


def test_decoder_reads_a_known_png():
    # 2x2 RGB: a row filtered None (red, green), then a row filtered Paeth.
    raw = bytes([0, 255, 0, 0, 0, 255, 0]) + bytes([4, 0, 0, 255, 0, 0, 255])
    body = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + b"\0\0\0\0"

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", body) + chunk(b"IDAT", zlib.compress(raw))
    png += chunk(b"IEND", b"")
    px = decode_png(png)
    assert px[0].tolist() == [[255, 0, 0], [0, 255, 0]]
    # Paeth adds, per byte, whichever of left, up and up-left is nearest left + up - up-left.
    assert px[1].tolist() == [[255, 0, 255], [0, 255, 254]]


def test_report_renders_in_headless_chromium(tmp_path):
    browser = chromium()
    report = tmp_path / "tmp" / "report.html"
    r = CliRunner().invoke(
        main, ["replay", str(EXAMPLE), "--report", str(report)], catch_exceptions=False
    )
    assert r.exit_code == 0, r.output
    shot = tmp_path / "report.png"
    proc = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",  # the suite runs as root in CI
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            f"--window-size={WIDTH},{HEIGHT}",
            report.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    print(f"report screenshot: {shot}")
    assert shot.exists(), f"chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr}"
    px = decode_png(shot.read_bytes())
    assert px.shape[:2] == (HEIGHT, WIDTH)
    rgb = px[..., :3].reshape(-1, 3).astype(np.uint32)
    colors = rgb[:, 0] << 16 | rgb[:, 1] << 8 | rgb[:, 2]
    counts = np.bincount(np.unique(colors, return_inverse=True)[1])
    assert len(counts) > 500, "too few colours: the page did not render its charts"
    assert counts.max() / colors.size < 0.8, "one colour covers most of the page: blank?"
    dark = (rgb.sum(axis=1) < 200).mean()  # text and lines
    assert dark > 0.002, "almost nothing dark on the page: no text rendered?"
