"""The HTML of ``sr web``'s status page, rendered on the server from one sample
(:func:`sarra.cli.web.collect`) and the recent history of rates and lag.

Plain HTML with inline CSS and SVG: no script, no request to anywhere else, so it works on a
closed network and in a terminal browser. Every text from a sample is escaped.
"""

from __future__ import annotations

import html
import time
from typing import Any

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.2em;color:#222;background:#fafafa}
h1{font-size:1.4em;margin:0 0 .3em} h2{font-size:1.1em;margin:1.4em 0 .4em}
table{border-collapse:collapse;background:#fff} td,th{padding:.25em .6em;border:1px solid #ddd;
text-align:left;vertical-align:top} th{background:#eef} .num{text-align:right}
.ok{color:#080} .bad{color:#b00;font-weight:bold} .warn{color:#a60} .dim{color:#888}
.why{font-weight:normal;font-size:90%;display:inline-block;max-width:40em}
.dot{display:inline-block;width:.8em;height:.8em;border-radius:50%;margin-right:2px}
.up{background:#2a2} .down{background:#c22} .other{background:#aaa}
.charts{display:flex;flex-wrap:wrap;gap:1em} .chart{background:#fff;border:1px solid #ddd;
padding:.4em} .bar{background:#ddd;width:10em;height:.8em;display:inline-block}
.bar span{background:#36c;height:100%;display:block}
"""

CHART_W, CHART_H = 320, 90


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover - the loop returns


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def chart(title: str, points: list[tuple[float, float]], unit: str = "") -> str:
    """A small SVG line chart of ``points`` (time, value), with its last and top values."""
    if len(points) < 2:
        body = f'<text x="10" y="{CHART_H // 2}" class="dim">collecting...</text>'
        top = last = 0.0
    else:
        t0, t1 = points[0][0], points[-1][0]
        top = max(v for _, v in points) or 1.0
        span = (t1 - t0) or 1.0
        coords = " ".join(
            f"{(t - t0) / span * (CHART_W - 10) + 5:.1f},"
            f"{CHART_H - 5 - v / top * (CHART_H - 20):.1f}"
            for t, v in points
        )
        body = f'<polyline fill="none" stroke="#36c" stroke-width="1.5" points="{coords}"/>'
        last = points[-1][1]
    caption = f"{_e(title)}: {last:.3g}{_e(unit)} now, {top:.3g}{_e(unit)} top"
    return (
        f'<div class="chart"><div>{caption}</div>'
        f'<svg width="{CHART_W}" height="{CHART_H}" role="img" aria-label="{_e(title)}">'
        f'<rect width="{CHART_W}" height="{CHART_H}" fill="#fff" stroke="#eee"/>{body}</svg>'
        "</div>"
    )


def _series(history: list[tuple[float, dict[str, Any]]], key: str) -> list[tuple[float, float]]:
    """The pump-wide series of ``key``: summed over configs (rates), or the worst (lag)."""
    out = []
    for t, point in history:
        values = [r.get(key) for r in point.values() if r.get(key) is not None]
        if key == "lag":
            out.append((t, max(values, default=0.0)))
        else:
            out.append((t, sum(values)))
    return out


def _instances(record: dict[str, Any]) -> str:
    dots = []
    for each in record["instances"]["each"]:
        state = each["state"]
        cls = "up" if state == "running" else ("down" if not each.get("extra") else "other")
        m = each.get("metrics") or {}
        tip = f"{each['number']:03d} {state}" + (
            f", {m['connection']}" if m.get("connection") else ""
        )
        dots.append(f'<span class="dot {cls}" title="{_e(tip)}"></span>')
    inst = record["instances"]
    cls = "ok" if inst["running"] == inst["expected"] else "bad"
    why = "".join(
        f'<br><span class="why bad">{each["number"]:03d}: {_e(each["why"])}</span>'
        for each in inst["each"]
        if each.get("why")
    )
    return f'{"".join(dots)} <span class="{cls}">{inst["running"]}/{inst["expected"]}</span>{why}'


def _config_rows(
    doc: dict[str, Any], rates: dict[str, dict[str, Any]], lag_top: dict[str, float]
) -> str:
    rows = []
    for r in doc["configs"]:
        label = f"{r['component']}/{r['config']}"
        t = r.get("totals") or {}
        q = r.get("queue") or {}
        rate = rates.get(label, {})
        if q.get("error"):
            queue = f'<span class="warn">{_e(q["error"])}</span>'
        elif q:
            backlog, consumers = q.get("backlog"), q.get("consumers")
            queue = (
                f"{'-' if backlog is None else _e(backlog)} ready, "
                f"{'-' if consumers is None else _e(consumers)} consumers"
            )
        else:
            queue = '<span class="dim">-</span>'
        retry = t.get("retry_depth") or 0
        retry_cls = "warn" if retry else "dim"
        enabled = "" if r["enabled"] else ' <span class="dim">(disabled)</span>'
        if r.get("error"):
            enabled += f'<br><span class="bad">{_e(r["error"])}</span>'
        rows.append(
            "<tr>"
            f"<td>{_e(label)}{enabled}</td><td>{_instances(r)}</td><td>{queue}</td>"
            f'<td class="num">{rate.get("notices_in", 0):.2f}</td>'
            f'<td class="num">{rate.get("files", 0):.2f}</td>'
            f'<td class="num">{human_bytes(rate.get("bytes", 0))}/s</td>'
            f'<td class="num">{_e(t.get("files", 0))} / {human_bytes(t.get("bytes", 0))}</td>'
            f'<td class="num">{_e(t.get("rejects", 0))}</td>'
            f"<td>{seconds(t.get('lag_last'))} (max {seconds(lag_top.get(label))})</td>"
            f'<td class="{retry_cls}">{retry} (oldest {seconds(t.get("retry_oldest_age"))})</td>'
            "</tr>"
        )
    return "".join(rows)


def _failures(doc: dict[str, Any]) -> str:
    rows = []
    for r in doc["configs"]:
        by_source = (r.get("totals") or {}).get("by_source") or {}
        for source, counts in sorted(by_source.items()):
            for code, n in sorted(counts.items()):
                if int(code) >= 400:
                    label = f"{r['component']}/{r['config']}"
                    rows.append(
                        f'<tr><td>{_e(label)}</td><td class="bad">{_e(code)}</td>'
                        f'<td>{_e(source)}</td><td class="num">{_e(n)}</td></tr>'
                    )
    if not rows:
        return '<p class="ok">No failure reported.</p>'
    head = "<tr><th>config</th><th>code</th><th>source</th><th>count</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def _reassembly(doc: dict[str, Any]) -> str:
    rows = []
    for r in doc["configs"]:
        for part in r.get("reassembly") or ():
            share = part["present"] / part["blocks"] if part["blocks"] else 0.0
            rows.append(
                f"<tr><td>{_e(r['component'])}/{_e(r['config'])}</td><td>{_e(part['path'])}</td>"
                f'<td><span class="bar"><span style="width:{share * 100:.0f}%"></span></span> '
                f"{part['present']}/{part['blocks']} blocks</td></tr>"
            )
    if not rows:
        return '<p class="dim">No file being assembled from blocks.</p>'
    return f"<table><tr><th>config</th><th>file</th><th>progress</th></tr>{''.join(rows)}</table>"


_SEVERITY_RANK = {"error": 0, "warning": 1, "info": 2}
_SEVERITY_CLASS = {"error": "bad", "warning": "warn", "info": "dim"}


def _audit(report: dict[str, Any] | None) -> str:
    """The police audit's findings (sr_police audit), worst first."""
    if not report:
        return '<p class="dim">not run</p>'
    when = report.get("time")
    taken = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when)) if when else "-"
    status = str(report.get("status"))
    if report.get("error"):
        return f'<p id="audit" class="dim">{_e(status)}: {_e(report["error"])}</p>'
    findings = sorted(
        report.get("findings") or (),
        key=lambda f: (_SEVERITY_RANK.get(f.get("severity"), 3), f.get("check"), f.get("subject")),
    )
    cls = {"ok": "ok", "warning": "warn"}.get(status, "bad")
    head = (
        f'<p id="audit">Audit of {_e(report.get("broker") or "-")} at {_e(taken)}: '
        f'<span class="{cls}">{_e(status)}</span>, {len(findings)} finding(s).</p>'
    )
    if not findings:
        return head
    rows = "".join(
        f'<tr><td class="{_SEVERITY_CLASS.get(f.get("severity"), "")}">{_e(f.get("severity"))}'
        f"</td><td>{_e(f.get('check'))}</td><td>{_e(f.get('subject'))}</td>"
        f"<td>{_e(f.get('detail'))}</td><td>{_e(f.get('fix') or '-')}</td></tr>"
        for f in findings
    )
    return (
        f"{head}<table><tr><th>severity</th><th>check</th><th>subject</th><th>detail</th>"
        f"<th>sr_police fix</th></tr>{rows}</table>"
    )


def render_page(
    doc: dict[str, Any], history: list[tuple[float, dict[str, Any]]], refresh: int = 10
) -> str:
    """The whole status page."""
    configs = doc["configs"]
    rates = history[-1][1] if history else {}
    lag_top: dict[str, float] = {}  # the largest lag of each config over the history
    for _, point in history:
        for label, values in point.items():
            if values.get("lag") is not None:
                lag_top[label] = max(lag_top.get(label, 0.0), float(values["lag"]))
    for record in configs:
        last = (record.get("totals") or {}).get("lag_max")
        label = f"{record['component']}/{record['config']}"
        if last is not None:
            lag_top[label] = max(lag_top.get(label, 0.0), float(last))
    up = sum(r["instances"]["running"] for r in configs)
    expected = sum(r["instances"]["expected"] for r in configs)
    failing = sum(1 for r in configs if not r.get("ok"))
    taken = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(doc["time"])) if doc["time"] else "-"
    viewer = doc.get("viewer")
    scope = (
        f' <span class="dim">Shown to source {_e(viewer)}: its own flows, and its outcomes in '
        "the pump's shared ones.</span>"
        if viewer
        else ""
    )
    summary_cls = "ok" if failing == 0 else "bad"
    charts = "".join(
        (
            chart("notices/s", _series(history, "notices_in")),
            chart("files/s", _series(history, "files")),
            chart("KiB/s", [(t, v / 1024) for t, v in _series(history, "bytes")]),
            chart("lag", _series(history, "lag"), " s"),
        )
    )
    head = (
        "<tr><th>config</th><th>instances</th><th>queue</th><th>notices/s</th><th>files/s</th>"
        "<th>bytes/s</th><th>placed</th><th>rejects</th><th>lag (max of the last minutes)</th>"
        "<th>retry queue</th></tr>"
    )
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="refresh" content="{int(refresh)}">'
        f"<title>sarra pump status</title><style>{_STYLE}</style></head><body>"
        "<h1>sarra pump status</h1>"
        f'<p>Sampled {_e(taken)}. <span class="{summary_cls}">{len(configs)} configurations, '
        f"{up}/{expected} instances running, {failing} not as expected.</span> "
        f'<a href="status.json">status.json</a> · <a href="metrics">metrics</a>{scope}</p>'
        f'<h2>Last minutes</h2><div class="charts">{charts}</div>'
        f"<h2>Configurations</h2><table>{head}{_config_rows(doc, rates, lag_top)}</table>"
        f"<h2>Failures by code and source</h2>{_failures(doc)}"
        f"<h2>Files in reassembly</h2>{_reassembly(doc)}"
        f"<h2>Police audit</h2>{_audit(doc.get('audit'))}"
        "</body></html>"
    )
