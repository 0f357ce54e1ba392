"""What the pages embed inline: the CSS, the scripts, the data the index's script reads, the document."""

import html

from pipelines.local.run_record import finite

# Everything a page needs is inside it (CSS, JS and the DAG as inline SVG; Markdown rendered, the
# HTML evaluation embedded): no CDN, nothing fetched, readable from ``file://`` or through ``taxifare
# ui``. Links to artifacts and logs are relative, so they work from ``file://`` and from a server of a
# folder that holds both the run folders and kfp.local's pipeline root (``taxifare ui`` serves the
# work dir).

CSS = """
:root{--ok:#188038;--fail:#d93025;--cached:#1a73e8;--idle:#80868b;--line:#dadce0;--bg:#f8f9fa;--ink:#202124}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);background:#fff}
header{padding:14px 24px;border-bottom:1px solid var(--line);background:var(--bg);display:flex;gap:24px;align-items:center;flex-wrap:wrap}
header h1{font-size:20px;margin:0;font-weight:500}
header .crumbs a{color:#1a73e8;text-decoration:none}
.pill{display:inline-block;padding:2px 10px;border-radius:12px;font-size:12px;font-weight:600;color:#fff;text-transform:uppercase;letter-spacing:.03em}
.pill.succeeded{background:var(--ok)}.pill.failed{background:var(--fail)}.pill.cached{background:var(--cached)}.pill.not-run{background:var(--idle)}
.big{font-size:26px;font-weight:600}.muted{color:#5f6368}.small{font-size:12px}
main{display:grid;grid-template-columns:minmax(280px,360px) 1fr;gap:24px;padding:20px 24px}
@media (max-width:900px){main{grid-template-columns:1fr}}
.card{border:1px solid var(--line);border-radius:8px;padding:14px 16px;margin-bottom:16px;background:#fff}
.card h2{font-size:16px;margin:0 0 10px;font-weight:600}
.card h3{font-size:14px;margin:14px 0 6px}
table{border-collapse:collapse;width:100%}
td,th{border-bottom:1px solid #eee;padding:4px 8px;text-align:left;vertical-align:top}
th{font-weight:600;background:var(--bg)}
td.num{text-align:right;font-variant-numeric:tabular-nums}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px}
pre{background:var(--bg);border:1px solid #eee;border-radius:6px;padding:8px 10px;overflow:auto;max-height:420px;white-space:pre-wrap;word-break:break-all}
.kv td:first-child{color:#5f6368;white-space:nowrap;width:1%}
.kv td{word-break:break-all}
.kv.params tr.default td:nth-child(2){color:#80868b}
.failure{border-color:var(--fail);background:#fce8e6}
.failure h2{color:var(--fail)}
.step{scroll-margin-top:12px}
.step.target{box-shadow:0 0 0 3px #d2e3fc}
.step-head{display:flex;gap:12px;align-items:center;flex-wrap:wrap}
.step-head h2{margin:0}
.dag{position:sticky;top:12px}
.dag svg{width:100%;height:auto}
.dag .node rect{fill:#fff;stroke:var(--line);stroke-width:1.5}
.dag .node:hover rect{stroke:#1a73e8}
.dag .node text{font-size:13px;fill:var(--ink)}
.dag .node text.sub{font-size:11px;fill:#5f6368}
.dag .edge{fill:none;stroke:#9aa0a6;stroke-width:1.5}
.dag .s-succeeded circle{fill:var(--ok)}.dag .s-failed circle{fill:var(--fail)}
.dag .s-cached circle{fill:var(--cached)}.dag .s-not-run circle{fill:var(--idle)}
.dag .s-failed rect{stroke:var(--fail)}.dag .s-not-run text{fill:#80868b}
.dag .icon{fill:#fff;font-size:11px;font-weight:700}
.md table,table.metrics{width:auto;min-width:240px}
details.artifact{margin:10px 0;border-top:1px solid #eee;padding-top:6px}
details.artifact summary{cursor:pointer;font-weight:600;padding:2px 0}
th.num{text-align:right}.md h1{font-size:18px}.md h2{font-size:15px}.md code{background:var(--bg);padding:0 3px}
iframe{width:100%;height:760px;border:1px solid var(--line);border-radius:6px;background:#fff}
.diff td.val{background:#fef7e0}
.runs td,.runs th{white-space:nowrap}
.runs td.params{white-space:normal;font-size:12px;color:#3c4043}
footer{padding:8px 24px 24px;color:#5f6368;font-size:12px}
a{color:#1a73e8}
"""

RUN_JS = """
(function(){
  function mark(){
    document.querySelectorAll('.step.target').forEach(function(e){e.classList.remove('target');});
    var id = decodeURIComponent(location.hash.slice(1));
    var el = id && document.getElementById(id);
    if (el) { el.classList.add('target'); }
  }
  window.addEventListener('hashchange', mark);
  mark();
})();
"""

INDEX_JS = """
(function(){
  var runs = JSON.parse(document.getElementById('runs-data').textContent);
  var byId = {}; runs.forEach(function(r){ byId[r.run] = r; });
  var out = document.getElementById('compare');
  function fmt(v){
    if (v === null || v === undefined) return '';
    if (typeof v === 'number') return Number.isInteger(v) ? String(v) : v.toFixed(4).replace(/0+$/,'').replace(/\\.$/,'');
    if (typeof v === 'object') return JSON.stringify(v);
    return String(v);
  }
  function cell(tag, text, cls){ var c = document.createElement(tag); c.textContent = text; if (cls) c.className = cls; return c; }
  function render(){
    var picked = Array.prototype.filter.call(document.querySelectorAll('input.pick'), function(b){ return b.checked; })
      .map(function(b){ return byId[b.value]; });
    out.textContent = '';
    if (picked.length < 2) { out.appendChild(cell('p', 'Tick two or more runs to compare them side by side.', 'muted')); return; }
    var table = document.createElement('table'); table.className = 'diff';
    var head = document.createElement('tr'); head.appendChild(cell('th', ''));
    picked.forEach(function(r){ head.appendChild(cell('th', r.run)); });
    table.appendChild(head);
    function section(title){ var tr = document.createElement('tr'); var th = cell('th', title); th.colSpan = picked.length + 1; tr.appendChild(th); table.appendChild(tr); }
    function row(label, values){
      var tr = document.createElement('tr'); tr.appendChild(cell('td', label));
      var shown = values.map(fmt); var differ = shown.some(function(v){ return v !== shown[0]; });
      shown.forEach(function(v){ tr.appendChild(cell('td', v, differ ? 'val' : '')); });
      if (differ) tr.className = 'differs';
      table.appendChild(tr);
    }
    section('result');
    row('status', picked.map(function(r){ return r.status; }));
    row('endpoint RMSE', picked.map(function(r){ return r.rmse; }));
    row('wall s', picked.map(function(r){ return r.wall_s; }));
    var metrics = {};
    picked.forEach(function(r){ Object.keys(r.metrics).forEach(function(k){ metrics[k] = 1; }); });
    Object.keys(metrics).sort().forEach(function(k){ row(k, picked.map(function(r){ return r.metrics[k]; })); });
    section('parameters');
    var names = {};
    picked.forEach(function(r){ Object.keys(r.params).forEach(function(k){ names[k] = 1; }); });
    Object.keys(names).sort().forEach(function(k){ row(k, picked.map(function(r){ return r.params[k]; })); });
    section('steps');
    var steps = [];
    picked.forEach(function(r){ r.steps.forEach(function(s){ if (steps.indexOf(s.name) < 0) steps.push(s.name); }); });
    steps.forEach(function(n){
      row(n, picked.map(function(r){
        var s = r.steps.filter(function(x){ return x.name === n; })[0];
        if (!s) return '';
        return s.state + (s.wall_s !== null ? ' · ' + s.wall_s.toFixed(1) + ' s' : '');
      }));
    });
    out.appendChild(table);
  }
  document.querySelectorAll('input.pick').forEach(function(b){ b.addEventListener('change', render); });
  render();
})();
"""


def for_comparison(record: dict) -> dict:
    """What the runs index compares of a run: its result, its parameters, its steps' numeric facts
    (train rmse, mae, rows …) and its steps' states and times."""
    metrics = {}
    for step in record.get("steps") or []:
        for key, value in (step.get("facts") or {}).items():
            if finite(value):
                metrics[f"{step['name']}.{key}"] = value
    return {
        "run": record.get("run") or record.get("_dir"),
        "status": record.get("status"),
        "rmse": record.get("rmse"),
        "wall_s": record.get("wall_s"),
        "params": record.get("params") or {},
        "metrics": metrics,
        "steps": [
            {"name": s["name"], "state": s.get("state"), "wall_s": s.get("wall_s")} for s in record.get("steps") or []
        ],
    }


def document(title: str, body: str, script: str = "") -> str:
    """A whole HTML document: `body` under `title`, with the CSS and `script` inline."""
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{html.escape(str(title), quote=True)}</title><style>{CSS}</style></head>\n<body>\n{body}\n"
        + (f"<script>{script}</script>" if script else "")
        + "\n</body></html>\n"
    )
