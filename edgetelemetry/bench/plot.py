"""The ``edgetelemetry bench --plot`` chart: matplotlib when installed, else a PNG drawn here.

Devices rarely have matplotlib, so the fallback is a small rasteriser: filled rectangles, lines
and a 5x7 bitmap font, written as an 8-bit RGB PNG with zlib and struct.  Both draw the same
two panels: the cost per call on a log scale (baselines, edgetelemetry, peers), and the
overhead on the inference loops with their 95% confidence intervals.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from typing import Any

__all__ = ["Bar", "ChartData", "chart_data", "plot", "write_png_chart"]

COLORS = {
    "baseline": (150, 150, 150),
    "edgetelemetry": (31, 119, 180),
    "peer": (230, 120, 20),
    "overhead": (44, 160, 44),
    "target": (200, 40, 40),
}


@dataclass(frozen=True)
class Bar:
    label: str
    value: float  # ns for costs, % for overheads
    kind: str
    text: str
    low: float | None = None  # confidence interval, overheads only
    high: float | None = None


@dataclass(frozen=True)
class ChartData:
    title: str
    subtitle: str
    costs: list[Bar]
    overheads: list[Bar]
    target_pct: float | None


def _ns(v: float) -> str:
    for scale, unit in ((1e9, "s"), (1e6, "ms"), (1e3, "us")):
        if abs(v) >= scale:
            return f"{v / scale:.3g} {unit}"
    return f"{v:.3g} ns"


_CHART_KEYS = (
    "baseline.c_noop", "baseline.c_call", "baseline.empty_call", "baseline.empty_with",
    "record", "time", "group", "c_record", "record_many", "drain", "peer.prometheus", "peer.otel",
)


def chart_data(result: dict[str, Any]) -> ChartData:
    """The bars from a bench result (the JSON document)."""
    m = result["machine"]
    figures = result["figures"]
    costs = []
    for key in _CHART_KEYS:
        f = figures.get(key)
        if not f or f.get("skipped") or f["median"] <= 0:
            continue
        text = f"{_ns(f['median'])}/{f['unit'].split('/')[1]}"
        if f.get("ratio") is not None and f.get("baseline"):
            base = figures[f["baseline"]]["label"].replace("baseline: ", "")
            text += f"  {f['ratio']:.3g}x {base}"
        costs.append(Bar(f["label"], f["median"], f["kind"], text))
    overheads = []
    inference = result.get("inference") or {}
    for w in (inference.get("workloads") or {}).values():
        if w.get("skipped"):
            continue
        lo, hi = w["overhead_ci95_pct"]
        overheads.append(Bar(
            w["label"], w["overhead_pct"], "overhead",
            f"{w['overhead_pct']:+.2f}% [{lo:+.2f}, {hi:+.2f}] of {_ns(w['inference_ns'])}",
            lo, hi,
        ))
    emulated = " (emulated)" if m.get("emulated") else ""
    cpu = m["cpu"] if not m.get("emulated") else m["cpu"].split(" emulated by ")[-1]
    subtitle = (f"{cpu}, {m['arch']}{emulated}, {m['cores']} cores, {m['python']}, "
                f"edgetelemetry {m['package_version']}")
    target = (inference.get("target") or {}).get("overhead_pct") if overheads else None
    title = "edgetelemetry bench" + (" - EMULATED, not the hardware's times" if emulated else "")
    return ChartData(title, subtitle, costs, overheads, target)


def plot(result: dict[str, Any], path: str) -> str:
    """Write the chart to ``path``; returns which renderer drew it."""
    data = chart_data(result)
    try:
        import matplotlib
    except ImportError:
        write_png_chart(data, path)
        return "built-in PNG writer (matplotlib is not installed)"
    matplotlib.use("Agg")
    _matplotlib_chart(data, path)
    return f"matplotlib {matplotlib.__version__}"


def _matplotlib_chart(data: ChartData, path: str) -> None:
    import matplotlib.pyplot as plt

    rows = len(data.costs) + len(data.overheads)
    heights = [max(len(data.costs), 1), max(len(data.overheads), 1)] if data.overheads else [1]
    fig, axes = plt.subplots(
        len(heights), 1, figsize=(11, 1.2 + 0.42 * rows + 1.0 * len(heights)),
        gridspec_kw={"height_ratios": heights}, squeeze=False,
    )
    ax = axes[0][0]
    ys = list(range(len(data.costs)))[::-1]
    ax.barh(ys, [b.value for b in data.costs],
            color=[tuple(c / 255 for c in COLORS[b.kind]) for b in data.costs])
    ax.set_xscale("log")
    ax.set_yticks(ys, [b.label for b in data.costs])
    for y, b in zip(ys, data.costs):
        ax.text(b.value * 1.08, y, b.text, va="center", fontsize=8)
    hi = max((b.value for b in data.costs), default=10)
    ax.set_xlim(right=hi * 60)
    ax.set_xlabel("ns per call (per value / record where so labelled), log scale")
    ax.set_title(f"{data.title}\n{data.subtitle}", fontsize=10)
    ax.grid(axis="x", which="major", alpha=0.3)
    if data.overheads:
        ax2 = axes[1][0]
        ys = list(range(len(data.overheads)))[::-1]
        vals = [b.value for b in data.overheads]
        err = [[b.value - (b.low or b.value) for b in data.overheads],
               [(b.high or b.value) - b.value for b in data.overheads]]
        ax2.barh(ys, vals, xerr=err, color=tuple(c / 255 for c in COLORS["overhead"]),
                 capsize=4)
        ax2.set_yticks(ys, [b.label for b in data.overheads])
        for y, b in zip(ys, data.overheads):
            ax2.text(max(b.high or b.value, 0) + 0.03, y, b.text, va="center", fontsize=8)
        if data.target_pct is not None:
            ax2.axvline(data.target_pct, color=tuple(c / 255 for c in COLORS["target"]),
                        linestyle="--", label=f"target {data.target_pct:g}%")
            ax2.legend(loc="lower right", fontsize=8)
        top = max([data.target_pct or 0] + [b.high or b.value for b in data.overheads])
        ax2.set_xlim(min(0, min(b.low or 0 for b in data.overheads)) - 0.1, top * 2.2 + 0.2)
        ax2.axvline(0, color="black", linewidth=0.8)
        ax2.set_xlabel("overhead of 4 metrics per inference, % of the inference thread's CPU time "
                       "(95% CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- the fallback: a tiny rasteriser and PNG writer ------------------------------------------

# 5x7 glyphs, rows top to bottom, '#' set.  Unknown characters draw as '?'; the letters in
# _DESCENDERS are drawn one row lower, so their tails hang below the line.
_GLYPHS = {
    " ": ".....|.....|.....|.....|.....|.....|.....",
    "0": ".###.|#...#|#..##|#.#.#|##..#|#...#|.###.",
    "1": "..#..|.##..|..#..|..#..|..#..|..#..|.###.",
    "2": ".###.|#...#|....#|...#.|..#..|.#...|#####",
    "3": "#####|...#.|..#..|...#.|....#|#...#|.###.",
    "4": "...#.|..##.|.#.#.|#..#.|#####|...#.|...#.",
    "5": "#####|#....|####.|....#|....#|#...#|.###.",
    "6": "..##.|.#...|#....|####.|#...#|#...#|.###.",
    "7": "#####|....#|...#.|..#..|.#...|.#...|.#...",
    "8": ".###.|#...#|#...#|.###.|#...#|#...#|.###.",
    "9": ".###.|#...#|#...#|.####|....#|...#.|.##..",
    "A": ".###.|#...#|#...#|#####|#...#|#...#|#...#",
    "B": "####.|#...#|#...#|####.|#...#|#...#|####.",
    "C": ".###.|#...#|#....|#....|#....|#...#|.###.",
    "D": "###..|#..#.|#...#|#...#|#...#|#..#.|###..",
    "E": "#####|#....|#....|####.|#....|#....|#####",
    "F": "#####|#....|#....|####.|#....|#....|#....",
    "G": ".###.|#...#|#....|#.###|#...#|#...#|.####",
    "H": "#...#|#...#|#...#|#####|#...#|#...#|#...#",
    "I": ".###.|..#..|..#..|..#..|..#..|..#..|.###.",
    "J": "..###|...#.|...#.|...#.|...#.|#..#.|.##..",
    "K": "#...#|#..#.|#.#..|##...|#.#..|#..#.|#...#",
    "L": "#....|#....|#....|#....|#....|#....|#####",
    "M": "#...#|##.##|#.#.#|#.#.#|#...#|#...#|#...#",
    "N": "#...#|#...#|##..#|#.#.#|#..##|#...#|#...#",
    "O": ".###.|#...#|#...#|#...#|#...#|#...#|.###.",
    "P": "####.|#...#|#...#|####.|#....|#....|#....",
    "Q": ".###.|#...#|#...#|#...#|#.#.#|#..#.|.##.#",
    "R": "####.|#...#|#...#|####.|#.#..|#..#.|#...#",
    "S": ".####|#....|#....|.###.|....#|....#|####.",
    "T": "#####|..#..|..#..|..#..|..#..|..#..|..#..",
    "U": "#...#|#...#|#...#|#...#|#...#|#...#|.###.",
    "V": "#...#|#...#|#...#|#...#|#...#|.#.#.|..#..",
    "W": "#...#|#...#|#...#|#.#.#|#.#.#|#.#.#|.#.#.",
    "X": "#...#|#...#|.#.#.|..#..|.#.#.|#...#|#...#",
    "Y": "#...#|#...#|.#.#.|..#..|..#..|..#..|..#..",
    "Z": "#####|....#|...#.|..#..|.#...|#....|#####",
    "a": ".....|.....|.###.|....#|.####|#...#|.####",
    "b": "#....|#....|#.##.|##..#|#...#|#...#|####.",
    "c": ".....|.....|.###.|#....|#....|#...#|.###.",
    "d": "....#|....#|.##.#|#..##|#...#|#...#|.####",
    "e": ".....|.....|.###.|#...#|#####|#....|.###.",
    "f": "..##.|.#..#|.#...|###..|.#...|.#...|.#...",
    "g": ".....|.####|#...#|#...#|.####|....#|.###.",
    "h": "#....|#....|#.##.|##..#|#...#|#...#|#...#",
    "i": "..#..|.....|.##..|..#..|..#..|..#..|.###.",
    "j": "...#.|.....|..##.|...#.|...#.|#..#.|.##..",
    "k": "#....|#....|#..#.|#.#..|##...|#.#..|#..#.",
    "l": ".##..|..#..|..#..|..#..|..#..|..#..|.###.",
    "m": ".....|.....|##.#.|#.#.#|#.#.#|#...#|#...#",
    "n": ".....|.....|#.##.|##..#|#...#|#...#|#...#",
    "o": ".....|.....|.###.|#...#|#...#|#...#|.###.",
    "p": ".....|####.|#...#|#...#|####.|#....|#....",
    "q": ".....|.####|#...#|#...#|.####|....#|....#",
    "r": ".....|.....|#.##.|##..#|#....|#....|#....",
    "s": ".....|.....|.###.|#....|.###.|....#|####.",
    "t": ".#...|.#...|###..|.#...|.#...|.#..#|..##.",
    "u": ".....|.....|#...#|#...#|#...#|#..##|.##.#",
    "v": ".....|.....|#...#|#...#|#...#|.#.#.|..#..",
    "w": ".....|.....|#...#|#...#|#.#.#|#.#.#|.#.#.",
    "x": ".....|.....|#...#|.#.#.|..#..|.#.#.|#...#",
    "y": ".....|#...#|#...#|#...#|.####|....#|.###.",
    "z": ".....|.....|#####|...#.|..#..|.#...|#####",
    ".": ".....|.....|.....|.....|.....|.##..|.##..",
    ",": ".....|.....|.....|.....|.##..|..#..|.#...",
    "-": ".....|.....|.....|#####|.....|.....|.....",
    "+": ".....|..#..|..#..|#####|..#..|..#..|.....",
    "=": ".....|.....|#####|.....|#####|.....|.....",
    "(": "...#.|..#..|.#...|.#...|.#...|..#..|...#.",
    ")": ".#...|..#..|...#.|...#.|...#.|..#..|.#...",
    "[": ".###.|.#...|.#...|.#...|.#...|.#...|.###.",
    "]": ".###.|...#.|...#.|...#.|...#.|...#.|.###.",
    "/": ".....|....#|...#.|..#..|.#...|#....|.....",
    ":": ".....|.##..|.##..|.....|.##..|.##..|.....",
    "%": "##...|##..#|...#.|..#..|.#...|#..##|...##",
    "_": ".....|.....|.....|.....|.....|.....|#####",
    "'": "..#..|..#..|.#...|.....|.....|.....|.....",
    "<": "...#.|..#..|.#...|#....|.#...|..#..|...#.",
    ">": ".#...|..#..|...#.|....#|...#.|..#..|.#...",
    "~": ".....|.....|.#...|#.#.#|...#.|.....|.....",
    "*": ".....|..#..|#.#.#|.###.|#.#.#|..#..|.....",
    "#": ".#.#.|.#.#.|#####|.#.#.|#####|.#.#.|.#.#.",
    "?": ".###.|#...#|....#|...#.|..#..|.....|..#..",
    "!": "..#..|..#..|..#..|..#..|..#..|.....|..#..",
    "|": "..#..|..#..|..#..|..#..|..#..|..#..|..#..",
    "@": ".###.|#...#|#.###|#.#.#|#.###|#....|.###.",
}
_DESCENDERS = frozenset("gpqy")


class _Canvas:
    def __init__(self, width: int, height: int, background: tuple[int, int, int]) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(bytes(background) * (width * height))

    def rect(self, x0: int, y0: int, x1: int, y1: int, color: tuple[int, int, int]) -> None:
        x0, x1 = max(0, min(x0, x1)), min(self.width, max(x0, x1))
        y0, y1 = max(0, min(y0, y1)), min(self.height, max(y0, y1))
        if x1 <= x0:
            return
        row = bytes(color) * (x1 - x0)
        for y in range(y0, y1):
            start = (y * self.width + x0) * 3
            self.pixels[start:start + len(row)] = row

    def text(self, x: int, y: int, s: str, color: tuple[int, int, int], scale: int = 2) -> int:
        """Draw ``s`` with its top left at (x, y); returns the x after it."""
        for ch in s:
            glyph = _GLYPHS.get(ch) or _GLYPHS.get(ch.upper()) or _GLYPHS["?"]
            drop = 1 if ch in _DESCENDERS else 0
            for gy, row in enumerate(glyph.split("|"), start=drop):
                for gx, bit in enumerate(row):
                    if bit == "#":
                        self.rect(x + gx * scale, y + gy * scale,
                                  x + (gx + 1) * scale, y + (gy + 1) * scale, color)
            x += 6 * scale
        return x

    @staticmethod
    def text_width(s: str, scale: int = 2) -> int:
        return len(s) * 6 * scale

    def png(self) -> bytes:
        def chunk(kind: bytes, data: bytes) -> bytes:
            return (struct.pack(">I", len(data)) + kind + data
                    + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

        stride = self.width * 3
        raw = b"".join(
            b"\x00" + bytes(self.pixels[y * stride:(y + 1) * stride]) for y in range(self.height)
        )
        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)  # 8-bit RGB
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def write_png_chart(data: ChartData, path: str) -> None:
    """Draw ``data`` with the built-in rasteriser and write it as a PNG."""
    black, grey, light = (20, 20, 20), (110, 110, 110), (225, 225, 225)
    label_w = max([_Canvas.text_width(b.label) for b in data.costs + data.overheads] + [200])
    left, plot_w, text_w, row_h = 16 + label_w + 12, 420, 520, 26
    width = max(left + plot_w + text_w, 32 + _Canvas.text_width(data.subtitle),
                32 + _Canvas.text_width(data.title, scale=3))
    n_cost, n_over = len(data.costs), len(data.overheads)
    height = 70 + 30 + n_cost * row_h + 40 + (40 + n_over * row_h + 40 if n_over else 0)
    c = _Canvas(width, height, (255, 255, 255))
    c.text(16, 12, data.title, black, scale=3)
    c.text(16, 44, data.subtitle, grey)

    # panel 1: cost per call, log scale
    y0 = 80
    c.text(16, y0, "cost per call (per value, per record where so labelled), log scale", black)
    y0 += 30
    if data.costs:
        lo = 10 ** math.floor(math.log10(min(b.value for b in data.costs)))
        hi = 10 ** math.ceil(math.log10(max(b.value for b in data.costs)))
        hi = max(hi, lo * 10)
        span = math.log10(hi / lo)

        def xpos(v: float) -> int:
            return left + int(plot_w * math.log10(max(v, lo) / lo) / span)

        decade = lo
        while decade <= hi * 1.0001:
            x = xpos(decade)
            c.rect(x, y0 - 4, x + 1, y0 + n_cost * row_h, light)
            tick = _ns(decade)
            c.text(x - _Canvas.text_width(tick) // 2, y0 + n_cost * row_h + 6, tick, grey)
            decade *= 10
        for i, b in enumerate(data.costs):
            y = y0 + i * row_h
            c.text(left - 12 - _Canvas.text_width(b.label), y + 5, b.label, black)
            c.rect(left, y + 3, max(xpos(b.value), left + 1), y + row_h - 5, COLORS[b.kind])
            c.text(xpos(b.value) + 8, y + 5, b.text, black)
    y0 += n_cost * row_h + 40

    # panel 2: overhead on inference loops, linear, with the CI and the target
    if n_over:
        c.text(16, y0, "overhead of 4 metrics per inference, % of the inference thread's CPU "
               "time, 95% CI", black)
        y0 += 40
        lo_v = min([0.0] + [b.low if b.low is not None else b.value for b in data.overheads])
        hi_v = max([data.target_pct or 0.0]
                   + [b.high if b.high is not None else b.value for b in data.overheads])
        lo_v, hi_v = lo_v - 0.05 * (hi_v - lo_v + 0.1), hi_v * 1.15 + 0.05

        def xlin(v: float) -> int:
            return left + int(plot_w * (v - lo_v) / (hi_v - lo_v))

        c.rect(xlin(0), y0 - 6, xlin(0) + 1, y0 + n_over * row_h, black)
        if data.target_pct is not None:
            xt = xlin(data.target_pct)
            for yy in range(y0 - 6, y0 + n_over * row_h, 8):
                c.rect(xt, yy, xt + 2, yy + 4, COLORS["target"])
            label = f"target {data.target_pct:g}%"
            c.text(xt - _Canvas.text_width(label) // 2, y0 + n_over * row_h + 6, label,
                   COLORS["target"])
        for i, b in enumerate(data.overheads):
            y = y0 + i * row_h
            c.text(left - 12 - _Canvas.text_width(b.label), y + 5, b.label, black)
            c.rect(xlin(0), y + 5, xlin(b.value), y + row_h - 7, COLORS["overhead"])
            if b.low is not None and b.high is not None:
                mid = y + row_h // 2 - 1
                c.rect(xlin(b.low), mid, xlin(b.high) + 1, mid + 2, black)
                for v in (b.low, b.high):
                    c.rect(xlin(v), mid - 5, xlin(v) + 2, mid + 7, black)
            end = max(xlin(b.value), xlin(b.high) if b.high is not None else 0)
            c.text(end + 10, y + 5, b.text, black)
    with open(path, "wb") as f:
        f.write(c.png())
