"""The page's stylesheet and its one script, inline (the page loads nothing from outside).

The script only measures what the browser drew, it draws nothing: each plot's size and
number of vertices, each audio clip's duration from its decoded metadata, each image's size.
Once every clip has loaded or failed it writes that summary as JSON into #render-check and
resolves `window.reportCheck` with it, so a headless browser can check the page rendered.
"""

from __future__ import annotations

STYLE = """
:root{--fg:#1f2937;--muted:#6b7280;--line:#e5e7eb;--bg:#f8fafc;--card:#fff;--accent:#2563eb}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
 font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:20px 24px 40px}
header h1{margin:0 0 4px;font-size:24px}
h2{font-size:17px;margin:0 0 12px}
h3{font-size:14px;margin:0}
h4{font-size:12px;margin:8px 0 4px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:16px 18px;margin:16px 0}
header{padding:4px 2px}
.facts{margin:4px 0;font-size:15px}
.muted{color:var(--muted);font-weight:normal}
.notes{border-color:#f59e0b;background:#fffbeb}
.notes p{margin:2px 0}
.error{color:#b91c1c;margin:2px 0}
.empty{color:var(--muted);padding:40px 0;text-align:center}
table{border-collapse:collapse}
table.targets{width:100%}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:12px;color:var(--muted);font-weight:600}
.nowrap{white-space:nowrap}
.checkpoints td,.checkpoints th{text-align:right}
.checkpoints td:last-child,.checkpoints th:last-child{text-align:left}
tr.best td{background:#f0fdf4;font-weight:600}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;background:#e5e7eb;white-space:nowrap}
.badge.met{background:#dcfce7;color:#166534}
.badge.on_track{background:#dbeafe;color:#1e40af}
.badge.off_trend,.badge.no_fit{background:#fee2e2;color:#991b1b}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:14px}
figure{margin:0;border:1px solid var(--line);border-radius:6px;padding:10px 10px 4px}
figcaption h3 span{font-weight:normal;color:var(--muted);font-size:12px;margin-left:6px}
.legend{font-size:12px;color:var(--muted);min-height:18px}
.key{margin-right:12px;white-space:nowrap}
.key i{display:inline-block;width:14px;height:3px;vertical-align:middle;margin-right:4px}
.key i.dash{border-top:2px dashed #374151;height:0}
.key i.shade{background:rgba(37,99,235,.15);height:10px}
svg.plot{width:100%;height:auto;display:block}
svg.plot .frame{fill:none;stroke:#d1d5db}
svg.plot .grid{stroke:#f1f5f9}
svg.plot .tick,svg.plot .axis-label{font-size:11px;fill:var(--muted)}
svg.plot polyline{fill:none;stroke-width:1.8;stroke-linejoin:round}
svg.plot .target{stroke:#374151;stroke-dasharray:6 4;stroke-width:1.2}
svg.plot .forecast{fill:rgba(37,99,235,.12)}
svg.plot .forecast-mid{stroke:rgba(37,99,235,.6);stroke-dasharray:2 3}
img.alignment{width:100%;max-width:900px;image-rendering:pixelated;border:1px solid var(--line);border-radius:4px}
.step{border-top:1px solid var(--line);padding:10px 0}
.step:first-of-type{border-top:none}
.group{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:6px 16px;align-items:end}
.group h4{grid-column:1/-1}
.clip{display:flex;flex-direction:column}
.clip .label{font-size:12px;color:var(--muted);margin-bottom:2px}
.clip audio{width:100%;height:34px}
footer{color:var(--muted);font-size:12px;text-align:center;margin-top:20px}
"""

CHECK_SCRIPT = """
(function () {
  function box(el) { try { var b = el.getBBox(); return [b.width, b.height]; } catch (e) { return [0, 0]; } }
  function settle(a) {
    return new Promise(function (done) {
      if (a.readyState >= 1 || a.error) { done(); return; }
      a.addEventListener('loadedmetadata', done, {once: true});
      a.addEventListener('error', done, {once: true});
    });
  }
  var audios = Array.prototype.slice.call(document.querySelectorAll('audio'));
  var images = Array.prototype.slice.call(document.images);
  var waits = audios.map(settle).concat(images.map(function (i) { return i.decode().catch(function () {}); }));
  window.reportCheck = Promise.all(waits).then(function () {
    var plots = Array.prototype.map.call(document.querySelectorAll('svg.plot'), function (svg) {
      var size = box(svg);
      return {id: svg.id, width: size[0], height: size[1],
        series: Array.prototype.map.call(svg.querySelectorAll('g.series'), function (g) {
          var line = g.querySelector('polyline'), s = box(g);
          return {label: g.dataset.label, n: +g.dataset.n, drawn: +g.dataset.drawn, width: s[0], height: s[1],
                  vertices: line ? line.points.numberOfItems : 0, markers: g.querySelectorAll('circle').length};
        })};
    });
    var summary = {
      plots: plots,
      audio: audios.map(function (a) {
        return {src: a.getAttribute('src').slice(0, 40), embedded: a.getAttribute('src').indexOf('data:') === 0,
                duration: isFinite(a.duration) ? a.duration : null, error: a.error ? a.error.code : null};
      }),
      images: images.map(function (i) { return {width: i.naturalWidth, height: i.naturalHeight}; })
    };
    document.getElementById('render-check').textContent = JSON.stringify(summary);
    return summary;
  });
})();
"""
