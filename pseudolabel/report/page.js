(function () {
  const data = JSON.parse(document.getElementById('data').textContent);
  const status = document.getElementById('status');
  const table = document.getElementById('images');
  const esc = s => String(s).replace(/[&<>"']/g, c => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'}[c]));
  const fmt = v => (v === null || v === undefined) ? '-' : (100 * v).toFixed(2);
  const keys = [];
  data.predictions.forEach(p => ['miou', 'mbiou', 'coverage'].forEach(k => keys.push([p, k])));
  const value = (row, key) => { const v = row.by[key[0]]; return v ? v[key[1]] : null; };
  let sortKey = null, sortDir = 1, page = 0, filter = -1;
  const hash = window.location.hash.slice(1);
  if (hash.startsWith('sort=')) { sortKey = keys.findIndex(k => k[1] === hash.slice(5)); if (sortKey < 0) sortKey = null; }

  function render() {
    if (!table) return;
    let shown = filter < 0 ? data.rows : data.rows.filter(r => r.classes.includes(filter));
    if (sortKey !== null) {
      shown = shown.slice().sort((a, b) => {
        const x = value(a, keys[sortKey]), y = value(b, keys[sortKey]);
        if (x === null && y === null) return a.id < b.id ? -1 : 1;
        if (x === null) return 1;
        if (y === null) return -1;
        return sortDir * (x - y) || (a.id < b.id ? -1 : 1);
      });
    }
    const pages = Math.max(1, Math.ceil(shown.length / 100));
    page = Math.min(page, pages - 1);
    const head = '<tr><th>id</th><th>GT classes</th>' + keys.map((k, i) =>
      '<th class="sortable" data-col="' + i + '">' + esc(k[0]) + ' ' + k[1] + (sortKey === i ? (sortDir > 0 ? ' &#9650;' : ' &#9660;') : '') + '</th>').join('') + '</tr>';
    const body = shown.slice(page * 100, page * 100 + 100).map(r => '<tr><td>' + esc(r.id) + '</td><td>' +
      r.classes.filter(c => c > 0).map(c => esc(data.classes[c])).join(', ') + '</td>' +
      keys.map(k => '<td>' + fmt(value(r, k)) + '</td>').join('') + '</tr>').join('');
    table.innerHTML = head + body;
    table.querySelectorAll('th.sortable').forEach(th => th.addEventListener('click', () => {
      const column = Number(th.dataset.col);
      sortDir = sortKey === column ? -sortDir : 1;
      sortKey = column;
      render();
    }));
    const pager = document.getElementById('pages');
    pager.innerHTML = '<button id="prev">previous</button><button id="next">next</button> page ' + (page + 1) +
      ' of ' + pages + ' (' + shown.length + ' images)';
    document.getElementById('prev').onclick = () => { page = Math.max(0, page - 1); render(); };
    document.getElementById('next').onclick = () => { page = Math.min(pages - 1, page + 1); render(); };
    status.dataset.rows = shown.length;
    status.dataset.first = shown.length ? shown[0].id : '';
  }

  const controls = document.getElementById('controls');
  if (controls) {
    const present = new Set();
    data.rows.forEach(r => r.classes.forEach(c => { if (c > 0) present.add(c); }));
    controls.innerHTML = 'show images with GT class <select id="filter"><option value="-1">any</option>' +
      [...present].sort((a, b) => a - b).map(c => '<option value="' + c + '">' + esc(data.classes[c]) + '</option>').join('') +
      '</select> (click a heading to sort)';
    document.getElementById('filter').addEventListener('change', e => { filter = Number(e.target.value); page = 0; render(); });
  }
  render();

  if (hash === 'check') {
    const images = [...document.images];
    images.forEach(img => { img.loading = 'eager'; });
    Promise.all(images.map(img => img.complete ? Promise.resolve() :
      new Promise(done => { img.addEventListener('load', done); img.addEventListener('error', done); })))
      .then(() => {
        status.dataset.imagesOk = images.filter(img => img.naturalWidth > 0).length;
        status.dataset.imagesBroken = images.filter(img => img.naturalWidth === 0).length;
        status.textContent = 'checked ' + images.length + ' images';
      });
  }
})();
