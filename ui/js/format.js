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

/** A configured weight for reading: at most 4 decimals, so 0.19999999999999996 reads "0.2". */
export function weight(x) {
  return isNum(x) ? String(Number(x.toFixed(4))) : '—';
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

/** A probability for reading: ">99.9%" and "<0.1%" rather than "100.0%" and "0.0%". */
export function prob(x, digits = 1) {
  if (!isNum(x)) return '—';
  const lim = 0.5 * 10 ** -(digits + 2);
  // A probability estimated from data is never certain: 1 reads ">99.9%", 0 reads "<0.1%".
  if (x >= 1 - lim) return `>${(100 - 10 ** -digits).toFixed(digits)}%`;
  if (x <= lim) return `<${(10 ** -digits).toFixed(digits)}%`;
  return `${(x * 100).toFixed(digits)}%`;
}

/** A number with `digits` significant figures (default 3), thousands separated. */
export function sig(x, digits = 3) {
  if (!isNum(x)) return '—';
  if (x === 0) return '0';
  const a = Math.abs(x);
  if (a >= 1e9 || a < 1e-4) return x.toExponential(digits - 1);
  if (a >= 10 ** digits) return Math.round(x).toLocaleString('en-US');
  return Number(x.toPrecision(digits)).toLocaleString('en-US', { maximumFractionDigits: 10 });
}

/** A relative lift with a sensible number of digits: "+39%", "+4.2%", "-0.35%". */
export function relPct(x) {
  if (!isNum(x)) return '—';
  if (x === 0) return '0%';
  const a = Math.abs(x * 100);
  const digits = a >= 10 ? 0 : a >= 1 ? 1 : 2;
  const v = (x * 100).toFixed(digits);
  return `${x > 0 ? '+' : x < 0 ? '\u2212' : ''}${v.replace('-', '')}%`;
}

/**
 * An expected loss as a share of the control mean (gbstats' relative risk) for reading: digits
 * as relPct, no sign: "12%", "1.3%", "0.40%"; "<0.01%" below that, "0%" only when exactly 0.
 */
export function riskPct(x) {
  if (!isNum(x)) return '—';
  if (x === 0) return '0%';
  const a = Math.abs(x * 100);
  if (a < 0.005) return '<0.01%';
  const digits = a >= 10 ? 0 : a >= 1 ? 1 : 2;
  return `${x < 0 ? '\u2212' : ''}${a.toFixed(digits)}%`;
}

/** A difference in percentage points: "+1.2 pp". */
export function signedPp(x) {
  if (!isNum(x)) return '—';
  const a = Math.abs(x * 100);
  const v = a >= 10 ? a.toFixed(1) : a >= 1 ? a.toFixed(2) : a.toPrecision(2);
  return `${x > 0 ? '+' : x < 0 ? '\u2212' : ''}${v} pp`;
}

/** A duration for reading: "45 s", "12 min", "2 h 10 min", "3 d 4 h". */
export function duration(ms) {
  if (!isNum(ms) || ms < 0) return '—';
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  const hr = Math.floor(m / 60);
  if (hr < 48) return m % 60 ? `${hr} h ${m % 60} min` : `${hr} h`;
  const d = Math.floor(hr / 24);
  return hr % 24 ? `${d} d ${hr % 24} h` : `${d} d`;
}

/** The raw value for a title attribute: every digit the server sent. */
export function raw(x) {
  return isNum(x) ? String(x) : '';
}
