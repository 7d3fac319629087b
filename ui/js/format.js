// Number, date and percentage formatting shared by the screens.

const isNum = (x) => typeof x === 'number' && Number.isFinite(x);

export function num(x, digits = 4) {
  if (!isNum(x)) return '—';
  if (x === 0) return '0';
  const a = Math.abs(x);
  if (a >= 1e6 || a < 1e-4) return x.toExponential(2);
  if (Number.isInteger(x)) return x.toLocaleString('en-US');
  return Number(x.toPrecision(digits)).toLocaleString('en-US', { maximumFractionDigits: 8 });
}

export function int(x) {
  return isNum(x) ? Math.round(x).toLocaleString('en-US') : '—';
}

export function pct(x, digits = 1) {
  if (!isNum(x)) return '—';
  return `${(x * 100).toFixed(digits)}%`;
}

export function signedPct(x, digits = 1) {
  if (!isNum(x)) return '—';
  const v = (x * 100).toFixed(digits);
  return `${x > 0 ? '+' : ''}${v}%`;
}

export function signed(x, digits = 4) {
  if (!isNum(x)) return '—';
  return `${x > 0 ? '+' : ''}${num(x, digits)}`;
}

export function pValue(p) {
  if (!isNum(p)) return '—';
  if (p < 0.0001) return '<0.0001';
  if (p < 0.01) return p.toFixed(4);
  return p.toFixed(3);
}

/** "p < 0.0001" or "p = 0.031". */
export function pText(p) {
  if (!isNum(p)) return 'p not available';
  return p < 0.0001 ? 'p < 0.0001' : `p = ${pValue(p)}`;
}

export function interval(ci, fmt = num) {
  if (!Array.isArray(ci) || ci.length !== 2 || !isNum(ci[0]) || !isNum(ci[1])) return '—';
  return `[${fmt(ci[0])}, ${fmt(ci[1])}]`;
}

export function dateTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleString(undefined, {
    year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit',
  });
}

export function date(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleDateString(undefined, { year: 'numeric', month: 'short', day: 'numeric' });
}

export function time(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

export function ago(iso, now = Date.now()) {
  if (!iso) return '';
  const t = new Date(iso).getTime();
  if (Number.isNaN(t)) return '';
  const s = Math.round((now - t) / 1000);
  if (s < 2) return 'just now';
  if (s < 60) return `${s} s ago`;
  const m = Math.round(s / 60);
  if (m < 60) return `${m} min ago`;
  const hr = Math.round(m / 60);
  if (hr < 48) return `${hr} h ago`;
  return `${Math.round(hr / 24)} days ago`;
}

export function json(value) {
  if (value === undefined || value === null) return '';
  try { return JSON.stringify(value, null, 2); } catch { return String(value); }
}

export function compactJson(value) {
  if (value === undefined) return '';
  try {
    const s = JSON.stringify(value);
    return s.length > 120 ? `${s.slice(0, 117)}…` : s;
  } catch { return String(value); }
}
