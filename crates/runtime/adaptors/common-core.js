// gabbro's implementation of @openfn/language-common (API of 3.3.4).
//
// This file is the shared body of both built-in adaptors: the registry
// (src/adaptors/registry.rs) concatenates it with `common.js` or `http.js`,
// which hold the `export` statements. Nothing here is exported directly.
//
// Third-party behaviour OpenFn exposes (lodash as `_`, JSONPath as
// jsonpath-plus evaluates it, csv-parse, date-fns) is reimplemented here as
// the subset documented in docs/adaptors.md. Network access goes only through
// the native `httpRequest` of the `gabbro:host` module.

import * as host from 'gabbro:host';

// ---------------------------------------------------------------------------
// Host access
// ---------------------------------------------------------------------------

// Adaptor logs (source ADA). The host's logger is optional so the adaptor
// still loads where no logger is wired.
function adaptorLog(level, ...args) {
  const sink = host.log;
  if (typeof sink === 'function') {
    try {
      sink(level, ...args);
    } catch (_e) {
      // logging must never break an operation
    }
  }
}

function requireHost(name) {
  const f = host[name];
  if (typeof f !== 'function') {
    throw new Error(`gabbro host function ${name} is not available`);
  }
  return f;
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

// Array.prototype.push(...big) hits QuickJS's 65535-argument limit.
function pushAll(target, items) {
  for (let i = 0; i < items.length; i++) target.push(items[i]);
  return target;
}

const hasOwn = (o, k) => Object.prototype.hasOwnProperty.call(o, k);
const isObjectLike = v => v !== null && typeof v === 'object';
const isPlainObject = v => {
  if (!isObjectLike(v) || Object.prototype.toString.call(v) !== '[object Object]') return false;
  const proto = Object.getPrototypeOf(v);
  return proto === null || proto === Object.prototype;
};

// UTF-8 <-> base64 without Buffer (QuickJS has none).
const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

function utf8Bytes(str) {
  const out = [];
  for (let i = 0; i < str.length; i++) {
    let c = str.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < str.length) {
      const d = str.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
      } else {
        c = 0xfffd;
      }
    } else if (c >= 0xd800 && c <= 0xdfff) {
      c = 0xfffd;
    }
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return out;
}

function utf8Decode(bytes) {
  let out = '';
  for (let i = 0; i < bytes.length; ) {
    const b = bytes[i];
    let c;
    let n = 0;
    if (b < 0x80) { c = b; n = 0; }
    else if (b >= 0xc2 && b < 0xe0) { c = b & 31; n = 1; }
    else if (b >= 0xe0 && b < 0xf0) { c = b & 15; n = 2; }
    else if (b >= 0xf0 && b < 0xf5) { c = b & 7; n = 3; }
    else { out += '\ufffd'; i++; continue; }
    let ok = i + n < bytes.length + 0 || n === 0;
    let j = 1;
    for (; j <= n; j++) {
      const x = bytes[i + j];
      if (x === undefined || (x & 0xc0) !== 0x80) { ok = false; break; }
      c = (c << 6) | (x & 63);
    }
    if (!ok) { out += '\ufffd'; i += j; continue; }
    i += n + 1;
    if (c >= 0x10000) {
      c -= 0x10000;
      out += String.fromCharCode(0xd800 + (c >> 10), 0xdc00 + (c & 1023));
    } else {
      out += String.fromCharCode(c);
    }
  }
  return out;
}

function bytesToBase64(bytes) {
  let out = '';
  let i = 0;
  for (; i + 2 < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    out += B64[n >> 18] + B64[(n >> 12) & 63] + B64[(n >> 6) & 63] + B64[n & 63];
  }
  if (i < bytes.length) {
    const rest = bytes.length - i;
    const n = (bytes[i] << 16) | ((rest > 1 ? bytes[i + 1] : 0) << 8);
    out += B64[n >> 18] + B64[(n >> 12) & 63] + (rest > 1 ? B64[(n >> 6) & 63] : '=') + '=';
  }
  return out;
}

// Lenient like Node's Buffer.from(s, 'base64'): accepts the URL-safe
// alphabet, ignores other characters and stops at padding.
function base64ToBytes(str) {
  const out = [];
  let acc = 0;
  let bits = 0;
  for (const ch of String(str)) {
    if (ch === '=') break;
    let v = B64.indexOf(ch);
    if (ch === '-') v = 62;
    else if (ch === '_') v = 63;
    if (v < 0) continue;
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push((acc >> bits) & 255);
    }
  }
  return out;
}

const toBase64 = str => bytesToBase64(utf8Bytes(str));
const fromBase64 = str => utf8Decode(base64ToBytes(str));

function typedArrayBytes(v) {
  if (v instanceof ArrayBuffer) return Array.from(new Uint8Array(v));
  if (ArrayBuffer.isView(v)) return Array.from(new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
  return null;
}

// ---------------------------------------------------------------------------
// JSONPath (the subset of jsonpath-plus that jobs use)
// ---------------------------------------------------------------------------

// A path is a list of steps: {t:'child', names:[...]}, {t:'wild'},
// {t:'desc'}, {t:'slice', start, end, step}, {t:'filter', expr}.
const jsonPathCache = new Map();

function parseJsonPath(path) {
  if (jsonPathCache.has(path)) return jsonPathCache.get(path);
  const steps = [];
  let i = 0;
  const s = path;
  if (s[0] === '$') i = 1;
  const readName = () => {
    let start = i;
    while (i < s.length && s[i] !== '.' && s[i] !== '[') i++;
    return s.slice(start, i);
  };
  if (i === 0 && s.length && s[0] !== '.' && s[0] !== '[') {
    // jsonpath-plus accepts a path without the leading `$`
    const name = readName();
    steps.push(name === '*' ? { t: 'wild' } : { t: 'child', names: [name] });
  }
  while (i < s.length) {
    const c = s[i];
    if (c === '.') {
      if (s[i + 1] === '.') {
        steps.push({ t: 'desc' });
        i += 2;
        if (s[i] === '[') continue;
      } else {
        i += 1;
      }
      const name = readName();
      if (name === '*') steps.push({ t: 'wild' });
      else if (name !== '') steps.push({ t: 'child', names: [name] });
    } else if (c === '[') {
      const close = findBracketEnd(s, i);
      const inner = s.slice(i + 1, close).trim();
      i = close + 1;
      steps.push(parseBracket(inner, path));
    } else {
      throw new Error(`Invalid JSONPath ${JSON.stringify(path)}`);
    }
  }
  jsonPathCache.set(path, steps);
  return steps;
}

function findBracketEnd(s, open) {
  let depth = 0;
  let quote = null;
  for (let j = open; j < s.length; j++) {
    const ch = s[j];
    if (quote) {
      if (ch === '\\') j++;
      else if (ch === quote) quote = null;
    } else if (ch === "'" || ch === '"') quote = ch;
    else if (ch === '[' || ch === '(') depth++;
    else if (ch === ']' || ch === ')') {
      depth--;
      if (depth === 0 && ch === ']') return j;
    }
  }
  throw new Error(`Invalid JSONPath: unclosed bracket in ${JSON.stringify(s)}`);
}

function splitTopLevel(str, sep) {
  const parts = [];
  let quote = null;
  let depth = 0;
  let cur = '';
  for (let j = 0; j < str.length; j++) {
    const ch = str[j];
    if (quote) {
      cur += ch;
      if (ch === '\\') { cur += str[++j] ?? ''; }
      else if (ch === quote) quote = null;
      continue;
    }
    if (ch === "'" || ch === '"') quote = ch;
    else if (ch === '(' || ch === '[') depth++;
    else if (ch === ')' || ch === ']') depth--;
    if (ch === sep && depth === 0) {
      parts.push(cur);
      cur = '';
    } else cur += ch;
  }
  parts.push(cur);
  return parts;
}

function unquote(str) {
  const t = str.trim();
  if ((t[0] === "'" && t[t.length - 1] === "'") || (t[0] === '"' && t[t.length - 1] === '"')) {
    return t.slice(1, -1).replace(/\\(.)/g, '$1');
  }
  return t;
}

function parseBracket(inner, path) {
  if (inner === '*') return { t: 'wild' };
  if (inner.startsWith('?(') && inner.endsWith(')')) {
    return { t: 'filter', expr: parseFilterExpression(inner.slice(2, -1)) };
  }
  if (inner.startsWith('(') && inner.endsWith(')')) {
    return { t: 'script', expr: parseFilterExpression(inner.slice(1, -1)) };
  }
  if (/^-?\d*\s*:\s*-?\d*(\s*:\s*-?\d*)?$/.test(inner)) {
    const [a, b, c] = inner.split(':').map(x => x.trim());
    return {
      t: 'slice',
      start: a === '' ? undefined : Number(a),
      end: b === '' ? undefined : Number(b),
      step: c === undefined || c === '' ? 1 : Number(c),
    };
  }
  const names = splitTopLevel(inner, ',').map(unquote);
  if (names.some(n => n === '')) throw new Error(`Invalid JSONPath ${JSON.stringify(path)}`);
  return { t: 'child', names };
}

function jsonPathQuery(path, json) {
  if (path === undefined || path === null || path === '') return [];
  const steps = parseJsonPath(String(path));
  if (steps.every(st => st.t === 'wild' || (st.t === 'child' && st.names.length === 1 && st.names[0] !== '*'))) {
    return simpleJsonPath(steps, json);
  }
  let nodes = [{ value: json, parent: null, key: '$' }];
  for (const step of steps) {
    const next = [];
    for (const node of nodes) applyJsonPathStep(step, node, next, json);
    nodes = next;
  }
  return nodes.map(n => n.value);
}

// Fast path for the common `$.a.b[*].c` shapes: values only, no node records.
function simpleJsonPath(steps, json) {
  let values = [json];
  for (const step of steps) {
    const next = [];
    if (step.t === 'wild') {
      for (const v of values) {
        if (Array.isArray(v)) pushAll(next, v);
        else if (isObjectLike(v)) for (const k of Object.keys(v)) next.push(v[k]);
      }
    } else {
      const name = step.names[0];
      for (const v of values) {
        if (!isObjectLike(v)) continue;
        if (hasOwn(v, name)) next.push(v[name]);
        else if (Array.isArray(v) && name === 'length') next.push(v.length);
      }
    }
    values = next;
  }
  return values;
}

function childrenOf(node) {
  const v = node.value;
  if (!isObjectLike(v)) return [];
  if (Array.isArray(v)) return v.map((value, key) => ({ value, parent: v, key }));
  return Object.keys(v).map(key => ({ value: v[key], parent: v, key }));
}

function applyJsonPathStep(step, node, out, root) {
  const v = node.value;
  switch (step.t) {
    case 'child':
      if (!isObjectLike(v)) return;
      for (const name of step.names) {
        if (name === '*') {
          pushAll(out, childrenOf(node));
        } else if (hasOwn(v, name)) {
          out.push({ value: v[name], parent: v, key: name });
        } else if (Array.isArray(v) && name === 'length') {
          out.push({ value: v.length, parent: v, key: name });
        }
      }
      return;
    case 'wild':
      pushAll(out, childrenOf(node));
      return;
    case 'desc': {
      // `..` selects the node and all its descendants; the next step
      // applies to each of them.
      // (pre-order, iteratively: deep documents must not overflow the stack)
      const stack = [node];
      while (stack.length) {
        const n = stack.pop();
        out.push(n);
        const kids = childrenOf(n);
        for (let k = kids.length - 1; k >= 0; k--) stack.push(kids[k]);
      }
      return;
    }
    case 'slice': {
      if (!Array.isArray(v)) return;
      const len = v.length;
      let { start, end, step: st } = step;
      if (!st) st = 1;
      start = start === undefined ? 0 : start < 0 ? Math.max(0, len + start) : Math.min(len, start);
      end = end === undefined ? len : end < 0 ? Math.max(0, len + end) : Math.min(len, end);
      for (let k = start; k < end; k += st) out.push({ value: v[k], parent: v, key: k });
      return;
    }
    case 'filter':
      for (const child of childrenOf(node)) {
        let keep = false;
        try {
          keep = evalFilter(step.expr, { at: child.value, root, property: child.key });
        } catch (_e) {
          keep = false;
        }
        if (keep) out.push(child);
      }
      return;
    case 'script': {
      if (!isObjectLike(v)) return;
      const key = evalFilter(step.expr, { at: v, root, property: node.key });
      if (key !== undefined && hasOwn(v, key)) out.push({ value: v[key], parent: v, key });
      return;
    }
    default:
  }
}

// Filter expressions: a small, safe evaluator (no eval). Supports @ / $
// paths with .name, ['name'], [n]; literals; ! - + unary; * / % + -;
// comparisons; && || ; ternaries are not supported.
function parseFilterExpression(src) {
  const tokens = [];
  const re = /\s*(?:(\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)|('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")|(===|!==|==|!=|<=|>=|&&|\|\||[-+*/%<>!().\[\],?:])|(@[A-Za-z_]*|\$|[A-Za-z_][A-Za-z0-9_]*))/y;
  let pos = 0;
  const regexLiteral = /\s*\/((?:\\.|\[(?:\\.|[^\]\\])*\]|[^/\\[\n])+)\/([dgimsuy]*)/y;
  while (pos < src.length) {
    if (/^\s*$/.test(src.slice(pos))) break;
    // a `/` where an operand is expected starts a regular expression
    const last = tokens[tokens.length - 1];
    if (!last || (last.k === 'op' && last.v !== ')' && last.v !== ']')) {
      regexLiteral.lastIndex = pos;
      const rm = regexLiteral.exec(src);
      if (rm) {
        tokens.push({ k: 'lit', v: new RegExp(rm[1], rm[2]) });
        pos = regexLiteral.lastIndex;
        continue;
      }
    }
    re.lastIndex = pos;
    const m = re.exec(src);
    if (!m) throw new Error(`Invalid JSONPath filter: ${src}`);
    pos = re.lastIndex;
    if (m[1] !== undefined) tokens.push({ k: 'lit', v: Number(m[1]) });
    else if (m[2] !== undefined) tokens.push({ k: 'lit', v: unquote(m[2]) });
    else if (m[3] !== undefined) tokens.push({ k: 'op', v: m[3] });
    else tokens.push({ k: 'id', v: m[4] });
  }
  let p = 0;
  const peek = () => tokens[p];
  const isOp = v => peek() && peek().k === 'op' && peek().v === v;
  const expect = v => {
    if (!isOp(v)) throw new Error(`Invalid JSONPath filter: ${src}`);
    p++;
  };
  const prec = { '||': 1, '&&': 2, '==': 3, '!=': 3, '===': 3, '!==': 3, '<': 4, '<=': 4, '>': 4, '>=': 4, '+': 5, '-': 5, '*': 6, '/': 6, '%': 6 };
  function primary() {
    const t = tokens[p++];
    if (!t) throw new Error(`Invalid JSONPath filter: ${src}`);
    let node;
    if (t.k === 'lit') node = { k: 'lit', v: t.v };
    else if (t.k === 'op' && t.v === '(') {
      node = binary(0);
      expect(')');
    } else if (t.k === 'op' && (t.v === '!' || t.v === '-' || t.v === '+')) {
      return { k: 'unary', op: t.v, a: primary() };
    } else if (t.k === 'id') {
      if (t.v === 'true') node = { k: 'lit', v: true };
      else if (t.v === 'false') node = { k: 'lit', v: false };
      else if (t.v === 'null') node = { k: 'lit', v: null };
      else if (t.v === 'undefined') node = { k: 'lit', v: undefined };
      else if (t.v === '@' || t.v === '$' || t.v === '@property') node = { k: 'ref', v: t.v };
      else throw new Error(`Invalid JSONPath filter: unsupported identifier ${t.v}`);
    } else throw new Error(`Invalid JSONPath filter: ${src}`);
    for (;;) {
      if (isOp('.')) {
        p++;
        const name = tokens[p++];
        if (!name || name.k !== 'id') throw new Error(`Invalid JSONPath filter: ${src}`);
        node = { k: 'get', o: node, key: { k: 'lit', v: name.v } };
      } else if (isOp('[')) {
        p++;
        const key = binary(0);
        expect(']');
        node = { k: 'get', o: node, key };
      } else if (isOp('(')) {
        p++;
        const args = [];
        while (!isOp(')')) {
          args.push(conditional());
          if (!isOp(')')) expect(',');
        }
        expect(')');
        node = { k: 'call', callee: node, args };
      } else break;
    }
    return node;
  }
  function conditional() {
    const test = binary(0);
    if (!isOp('?')) return test;
    p++;
    const yes = conditional();
    expect(':');
    const no = conditional();
    return { k: 'cond', test, yes, no };
  }
  function binary(minPrec) {
    let left = primary();
    for (;;) {
      const t = peek();
      if (!t || t.k !== 'op' || !(t.v in prec) || prec[t.v] <= minPrec - 1 || prec[t.v] < minPrec) break;
      p++;
      const right = binary(prec[t.v] + 1);
      left = { k: 'bin', op: t.v, a: left, b: right };
    }
    return left;
  }
  const ast = conditional();
  if (p !== tokens.length) throw new Error(`Invalid JSONPath filter: ${src}`);
  return ast;
}

function evalFilter(n, env) {
  switch (n.k) {
    case 'lit': return n.v;
    case 'ref': return n.v === '$' ? env.root : n.v === '@property' ? env.property : env.at;
    case 'get': {
      const o = evalFilter(n.o, env);
      const key = evalFilter(n.key, env);
      if (o === null || o === undefined) return undefined;
      return o[key];
    }
    case 'cond':
      return evalFilter(n.test, env) ? evalFilter(n.yes, env) : evalFilter(n.no, env);
    case 'call': {
      const args = n.args.map(a => evalFilter(a, env));
      if (n.callee.k === 'get') {
        const self = evalFilter(n.callee.o, env);
        const f = self === null || self === undefined ? undefined : self[evalFilter(n.callee.key, env)];
        if (typeof f !== 'function') throw new TypeError('not a function');
        return f.apply(self, args);
      }
      const f = evalFilter(n.callee, env);
      if (typeof f !== 'function') throw new TypeError('not a function');
      return f(...args);
    }
    case 'unary': {
      const a = evalFilter(n.a, env);
      return n.op === '!' ? !a : n.op === '-' ? -a : +a;
    }
    case 'bin': {
      if (n.op === '&&') return evalFilter(n.a, env) && evalFilter(n.b, env);
      if (n.op === '||') return evalFilter(n.a, env) || evalFilter(n.b, env);
      const a = evalFilter(n.a, env);
      const b = evalFilter(n.b, env);
      switch (n.op) {
        case '==': return a == b; // eslint-disable-line eqeqeq
        case '!=': return a != b; // eslint-disable-line eqeqeq
        case '===': return a === b;
        case '!==': return a !== b;
        case '<': return a < b;
        case '<=': return a <= b;
        case '>': return a > b;
        case '>=': return a >= b;
        case '+': return a + b;
        case '-': return a - b;
        case '*': return a * b;
        case '/': return a / b;
        case '%': return a % b;
        default: return undefined;
      }
    }
    default: return undefined;
  }
}

const JSONPath = ({ path, json }) => jsonPathQuery(path, json);

// ---------------------------------------------------------------------------
// lodash (`_`): the commonly used subset, with lodash's argument shorthands
// ---------------------------------------------------------------------------

function toPath(path) {
  if (Array.isArray(path)) return path.map(String);
  if (typeof path === 'number' || typeof path === 'symbol') return [path];
  const out = [];
  String(path).replace(/[^.[\]]+|\[(?:(-?\d+(?:\.\d+)?)|(["'])((?:(?!\2)[^\\]|\\.)*?)\2)\]|(?=(?:\.|\[\])(?:\.|\[\]|$))/g,
    (match, number, quote, subString) => {
      out.push(quote ? subString.replace(/\\(\\)?/g, '$1') : number !== undefined ? number : match);
      return match;
    });
  return out;
}

function getPath(obj, path, defaultValue) {
  if (obj === null || obj === undefined) return defaultValue;
  if (typeof path === 'string' && hasOwn(Object(obj), path)) return obj[path];
  const parts = toPath(path);
  let cur = obj;
  for (const part of parts) {
    if (cur === null || cur === undefined) return defaultValue;
    cur = cur[part];
  }
  return cur === undefined ? defaultValue : cur;
}

function hasPath(obj, path) {
  const parts = toPath(path);
  let cur = obj;
  for (const part of parts) {
    if (cur === null || cur === undefined || !hasOwn(Object(cur), part)) return false;
    cur = cur[part];
  }
  return parts.length > 0;
}

function setPath(obj, path, value) {
  if (!isObjectLike(obj) && typeof obj !== 'function') return obj;
  const parts = toPath(path);
  let cur = obj;
  parts.forEach((part, idx) => {
    if (idx === parts.length - 1) {
      cur[part] = value;
      return;
    }
    if (!isObjectLike(cur[part])) cur[part] = /^\d+$/.test(parts[idx + 1]) ? [] : {};
    cur = cur[part];
  });
  return obj;
}

function isEqual(a, b) {
  if (a === b || (a !== a && b !== b)) return true; // eslint-disable-line no-self-compare
  if (!isObjectLike(a) || !isObjectLike(b)) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (a instanceof Date && b instanceof Date) return a.getTime() === b.getTime();
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  return ka.every(k => hasOwn(b, k) && isEqual(a[k], b[k]));
}

function isMatch(obj, src) {
  if (obj === null || obj === undefined) return Object.keys(src).length === 0;
  return Object.keys(src).every(k => {
    const sv = src[k];
    const ov = obj[k];
    if (isObjectLike(sv) && isObjectLike(ov) && !Array.isArray(sv)) return isMatch(ov, sv);
    return isEqual(ov, sv);
  });
}

// lodash's iteratee shorthand: function, property path, [path, value], or
// a partial object to match.
function iteratee(f) {
  if (typeof f === 'function') return f;
  if (f === null || f === undefined) return v => v;
  if (Array.isArray(f)) {
    if (f.length === 2 && !Array.isArray(f[0])) return o => isEqual(getPath(o, f[0]), f[1]);
    return o => getPath(o, f);
  }
  if (typeof f === 'object') return o => isMatch(o, f);
  return o => getPath(o, f);
}

function collectionValues(c) {
  if (c === null || c === undefined) return [];
  if (Array.isArray(c) || typeof c === 'string') return Array.from(c);
  return Object.values(c);
}

function eachEntry(c, cb) {
  if (c === null || c === undefined) return;
  if (Array.isArray(c) || typeof c === 'string') {
    const arr = Array.from(c);
    for (let i = 0; i < arr.length; i++) if (cb(arr[i], i, c) === false) return;
  } else {
    for (const k of Object.keys(c)) if (cb(c[k], k, c) === false) return;
  }
}

function compareAsc(a, b) {
  if (a === b) return 0;
  if (a === undefined) return 1;
  if (b === undefined) return -1;
  if (a === null) return 1;
  if (b === null) return -1;
  return a > b ? 1 : a < b ? -1 : 0;
}

function orderBy(coll, iteratees, orders) {
  let its = iteratees === undefined ? [v => v] : Array.isArray(iteratees) ? iteratees : [iteratees];
  if (its.length === 0) its = [v => v];
  const fs = its.map(it => (Array.isArray(it) ? o => getPath(o, it) : iteratee(it)));
  const ords = Array.isArray(orders) ? orders : orders === undefined ? [] : [orders];
  return collectionValues(coll)
    .map((value, idx) => ({ value, idx, keys: fs.map(f => f(value)) }))
    .sort((x, y) => {
      for (let i = 0; i < fs.length; i++) {
        const c = compareAsc(x.keys[i], y.keys[i]);
        if (c) return ords[i] === 'desc' ? -c : c;
      }
      return x.idx - y.idx;
    })
    .map(e => e.value);
}

function words(str) {
  return String(str ?? '')
    .replace(/['\u2019]/g, '')
    .match(/[A-Z]{2,}(?=[A-Z][a-z]+[0-9]*|\b)|[A-Z]?[a-z]+[0-9]*|[A-Z]+|[0-9]+/g) || [];
}
const capitalize = s => {
  const str = String(s ?? '');
  return str.charAt(0).toUpperCase() + str.slice(1).toLowerCase();
};
const upperFirst = s => { const str = String(s ?? ''); return str.charAt(0).toUpperCase() + str.slice(1); };
const lowerFirst = s => { const str = String(s ?? ''); return str.charAt(0).toLowerCase() + str.slice(1); };

function flattenDepth(arr, depth) {
  const out = [];
  for (const v of arr || []) {
    if (Array.isArray(v) && depth > 0) pushAll(out, flattenDepth(v, depth - 1));
    else out.push(v);
  }
  return out;
}

function cloneDeep(v) {
  if (!isObjectLike(v)) return v;
  if (v instanceof Date) return new Date(v.getTime());
  if (v instanceof RegExp) return new RegExp(v.source, v.flags);
  if (Array.isArray(v)) return v.map(cloneDeep);
  const out = {};
  for (const k of Object.keys(v)) out[k] = cloneDeep(v[k]);
  return out;
}

function mergeDeep(target, ...sources) {
  for (const src of sources) {
    if (!isObjectLike(src)) continue;
    for (const k of Object.keys(src)) {
      const sv = src[k];
      if (isObjectLike(sv) && !(sv instanceof Date)) {
        if (!isObjectLike(target[k])) target[k] = Array.isArray(sv) ? [] : {};
        mergeDeep(target[k], sv);
      } else if (sv !== undefined || !hasOwn(target, k)) {
        target[k] = sv;
      }
    }
  }
  return target;
}

const lodashFns = {
  // objects and paths
  get: getPath,
  set: setPath,
  has: hasPath,
  pick: (o, ...paths) => {
    const out = {};
    if (o === null || o === undefined) return out;
    for (const p of flattenDepth(paths, Infinity)) if (hasPath(o, p)) setPath(out, p, getPath(o, p));
    return out;
  },
  pickBy: (o, pred) => {
    const f = iteratee(pred);
    const out = {};
    for (const k of Object.keys(o || {})) if (f(o[k], k)) out[k] = o[k];
    return out;
  },
  omit: (o, ...paths) => {
    const list = flattenDepth(paths, Infinity);
    const out = {};
    for (const k of Object.keys(o || {})) out[k] = o[k];
    for (const p of list) {
      if (p === undefined || p === null || hasOwn(out, String(p))) {
        delete out[String(p)];
        continue;
      }
      // deep path: copy the objects along it, then drop the leaf
      const parts = toPath(p);
      if (parts.length < 2) continue;
      let cur = out;
      for (let i = 0; i < parts.length - 1; i++) {
        if (!isObjectLike(cur[parts[i]])) { cur = null; break; }
        cur[parts[i]] = Array.isArray(cur[parts[i]]) ? cur[parts[i]].slice() : { ...cur[parts[i]] };
        cur = cur[parts[i]];
      }
      if (cur) delete cur[parts[parts.length - 1]];
    }
    return out;
  },
  omitBy: (o, pred) => {
    const f = iteratee(pred);
    const out = {};
    for (const k of Object.keys(o || {})) if (!f(o[k], k)) out[k] = o[k];
    return out;
  },
  keys: o => (o === null || o === undefined ? [] : Object.keys(o)),
  values: o => collectionValues(o),
  entries: o => Object.entries(o || {}),
  toPairs: o => Object.entries(o || {}),
  fromPairs: pairs => {
    const out = {};
    for (const pair of pairs || []) out[pair[0]] = pair[1];
    return out;
  },
  mapValues: (o, f) => {
    const g = iteratee(f);
    const out = {};
    for (const k of Object.keys(o || {})) out[k] = g(o[k], k, o);
    return out;
  },
  mapKeys: (o, f) => {
    const g = iteratee(f);
    const out = {};
    for (const k of Object.keys(o || {})) out[g(o[k], k, o)] = o[k];
    return out;
  },
  invert: o => {
    const out = {};
    for (const k of Object.keys(o || {})) out[o[k]] = k;
    return out;
  },
  assign: (t, ...s) => Object.assign(t, ...s),
  defaults: (t, ...sources) => {
    for (const s of sources) for (const k of Object.keys(s || {})) if (t[k] === undefined) t[k] = s[k];
    return t;
  },
  merge: mergeDeep,
  clone: v => (Array.isArray(v) ? v.slice() : isObjectLike(v) ? { ...v } : v),
  cloneDeep,
  // collections
  map: (c, f) => {
    const g = iteratee(f);
    const out = [];
    eachEntry(c, (v, k, coll) => { out.push(g(v, k, coll)); });
    return out;
  },
  filter: (c, f) => {
    const g = iteratee(f);
    const out = [];
    eachEntry(c, (v, k, coll) => { if (g(v, k, coll)) out.push(v); });
    return out;
  },
  reject: (c, f) => {
    const g = iteratee(f);
    const out = [];
    eachEntry(c, (v, k, coll) => { if (!g(v, k, coll)) out.push(v); });
    return out;
  },
  find: (c, f) => {
    const g = iteratee(f);
    let found;
    eachEntry(c, (v, k, coll) => {
      if (g(v, k, coll)) { found = v; return false; }
      return undefined;
    });
    return found;
  },
  findIndex: (arr, f) => (arr || []).findIndex(iteratee(f)),
  some: (c, f) => collectionValues(c).some(iteratee(f)),
  every: (c, f) => collectionValues(c).every(iteratee(f)),
  includes: (c, v) => (typeof c === 'string' ? c.includes(v) : collectionValues(c).some(x => isEqual(x, v) || x === v)),
  forEach: (c, f) => { eachEntry(c, f); return c; },
  each: (c, f) => { eachEntry(c, f); return c; },
  reduce(c, f, acc) {
    let first = arguments.length < 3;
    let result = acc;
    eachEntry(c, (v, k, coll) => {
      if (first) { result = v; first = false; } else result = f(result, v, k, coll);
    });
    return result;
  },
  groupBy: (c, f) => {
    const g = iteratee(f);
    const out = {};
    for (const v of collectionValues(c)) {
      const k = g(v);
      (hasOwn(out, k) ? out[k] : (out[k] = [])).push(v);
    }
    return out;
  },
  keyBy: (c, f) => {
    const g = iteratee(f);
    const out = {};
    for (const v of collectionValues(c)) out[g(v)] = v;
    return out;
  },
  countBy: (c, f) => {
    const g = iteratee(f);
    const out = {};
    for (const v of collectionValues(c)) {
      const k = g(v);
      out[k] = (out[k] || 0) + 1;
    }
    return out;
  },
  partition: (c, f) => {
    const g = iteratee(f);
    const yes = [];
    const no = [];
    for (const v of collectionValues(c)) (g(v) ? yes : no).push(v);
    return [yes, no];
  },
  sortBy: (c, ...its) => orderBy(c, flattenDepth(its, 1)),
  orderBy,
  size: c => (c === null || c === undefined ? 0 : typeof c === 'string' || Array.isArray(c) ? c.length : Object.keys(c).length),
  // arrays
  chunk: (arr, size = 1) => {
    const n = Math.max(Math.floor(size), 0);
    const out = [];
    if (!arr || n < 1) return out;
    for (let i = 0; i < arr.length; i += n) out.push(Array.prototype.slice.call(arr, i, i + n));
    return out;
  },
  compact: arr => (arr || []).filter(Boolean),
  concat: (arr, ...vals) => [].concat(arr, ...vals),
  difference: (arr, ...others) => {
    const drop = flattenDepth(others, 1);
    return (arr || []).filter(v => !drop.includes(v));
  },
  differenceBy: (arr, other, f) => {
    const g = iteratee(f);
    const drop = (other || []).map(g);
    return (arr || []).filter(v => !drop.includes(g(v)));
  },
  intersection: (...arrays) => {
    const [first = [], ...rest] = arrays;
    return [...new Set(first)].filter(v => rest.every(a => (a || []).includes(v)));
  },
  union: (...arrays) => [...new Set(flattenDepth(arrays, 1))],
  uniq: arr => [...new Set(arr || [])],
  uniqBy: (arr, f) => {
    const g = iteratee(f);
    const seen = new Set();
    return (arr || []).filter(v => {
      const k = g(v);
      if (seen.has(k)) return false;
      seen.add(k);
      return true;
    });
  },
  flatten: arr => flattenDepth(arr, 1),
  flattenDeep: arr => flattenDepth(arr, Infinity),
  flattenDepth: (arr, d = 1) => flattenDepth(arr, d),
  head: arr => (arr || [])[0],
  first: arr => (arr || [])[0],
  last: arr => (arr && arr.length ? arr[arr.length - 1] : undefined),
  tail: arr => (arr || []).slice(1),
  initial: arr => (arr || []).slice(0, -1),
  take: (arr, n = 1) => (arr || []).slice(0, Math.max(n, 0)),
  drop: (arr, n = 1) => (arr || []).slice(Math.max(n, 0)),
  nth: (arr, n = 0) => (arr || [])[n < 0 ? arr.length + n : n],
  zip: (...arrays) => {
    const len = Math.max(0, ...arrays.map(a => (a ? a.length : 0)));
    return Array.from({ length: len }, (_u, i) => arrays.map(a => (a ? a[i] : undefined)));
  },
  zipObject: (keys, values) => {
    const out = {};
    (keys || []).forEach((k, i) => { out[k] = (values || [])[i]; });
    return out;
  },
  range: (start, end, step) => {
    if (end === undefined) { end = start; start = 0; }
    if (step === undefined) step = start < end ? 1 : -1;
    const out = [];
    if (step === 0) { for (let i = start; i < end; i++) out.push(start); return out; }
    for (let v = start; step > 0 ? v < end : v > end; v += step) out.push(v);
    return out;
  },
  times: (n, f = i => i) => Array.from({ length: Math.max(0, n) }, (_u, i) => f(i)),
  indexOf: (arr, v) => (arr || []).indexOf(v),
  join: (arr, sep = ',') => (arr || []).join(sep),
  reverse: arr => (arr ? arr.reverse() : arr),
  without: (arr, ...vals) => (arr || []).filter(v => !vals.includes(v)),
  // math
  sum: arr => (arr || []).reduce((a, b) => a + b, 0),
  sumBy: (arr, f) => {
    const g = iteratee(f);
    let total;
    for (const v of arr || []) {
      const x = g(v);
      if (x !== undefined) total = total === undefined ? x : total + x;
    }
    return total === undefined ? 0 : total;
  },
  mean: arr => (arr && arr.length ? arr.reduce((a, b) => a + b, 0) / arr.length : NaN),
  meanBy: (arr, f) => {
    const g = iteratee(f);
    return arr && arr.length ? arr.reduce((a, v) => a + g(v), 0) / arr.length : NaN;
  },
  max: arr => (arr && arr.length ? arr.reduce((a, b) => (b > a ? b : a)) : undefined),
  min: arr => (arr && arr.length ? arr.reduce((a, b) => (b < a ? b : a)) : undefined),
  maxBy: (arr, f) => {
    const g = iteratee(f);
    return (arr || []).reduce((a, b) => (a === undefined || g(b) > g(a) ? b : a), undefined);
  },
  minBy: (arr, f) => {
    const g = iteratee(f);
    return (arr || []).reduce((a, b) => (a === undefined || g(b) < g(a) ? b : a), undefined);
  },
  round: (n, precision = 0) => {
    const f = Math.pow(10, precision);
    return Math.round(n * f) / f;
  },
  clamp: (n, lo, hi) => Math.min(Math.max(n, lo), hi),
  add: (a, b) => a + b,
  subtract: (a, b) => a - b,
  multiply: (a, b) => a * b,
  divide: (a, b) => a / b,
  ceil: (n, precision = 0) => {
    const f = Math.pow(10, precision);
    return Math.ceil(n * f) / f;
  },
  floor: (n, precision = 0) => {
    const f = Math.pow(10, precision);
    return Math.floor(n * f) / f;
  },
  random: (lo = 0, hi = 1) => lo + Math.floor(Math.random() * (hi - lo + 1)),
  // strings
  camelCase: s => words(s).map((w, i) => (i === 0 ? w.toLowerCase() : capitalize(w))).join(''),
  kebabCase: s => words(s).map(w => w.toLowerCase()).join('-'),
  snakeCase: s => words(s).map(w => w.toLowerCase()).join('_'),
  startCase: s => words(s).map(upperFirst).join(' '),
  lowerCase: s => words(s).map(w => w.toLowerCase()).join(' '),
  upperCase: s => words(s).map(w => w.toUpperCase()).join(' '),
  capitalize,
  upperFirst,
  lowerFirst,
  words,
  toLower: s => String(s ?? '').toLowerCase(),
  toUpper: s => String(s ?? '').toUpperCase(),
  trim: (s, chars) => (chars === undefined ? String(s ?? '').trim() : lodashTrim(String(s ?? ''), chars, true, true)),
  trimStart: (s, chars) => (chars === undefined ? String(s ?? '').trimStart() : lodashTrim(String(s ?? ''), chars, true, false)),
  trimEnd: (s, chars) => (chars === undefined ? String(s ?? '').trimEnd() : lodashTrim(String(s ?? ''), chars, false, true)),
  pad: (s, len, chars = ' ') => {
    const str = String(s ?? '');
    const total = Math.max(len - str.length, 0);
    const left = Math.floor(total / 2);
    return ''.padStart(left, chars) + str + ''.padEnd(total - left, chars);
  },
  padStart: (s, len, chars = ' ') => String(s ?? '').padStart(len, chars),
  padEnd: (s, len, chars = ' ') => String(s ?? '').padEnd(len, chars),
  repeat: (s, n = 1) => String(s ?? '').repeat(Math.max(0, n)),
  replace: (s, pattern, replacement) => String(s ?? '').replace(pattern, replacement),
  split: (s, sep, limit) => String(s ?? '').split(sep, limit),
  startsWith: (s, target, position = 0) => String(s ?? '').startsWith(target, position),
  endsWith: (s, target, position) => String(s ?? '').endsWith(target, position),
  escapeRegExp: s => String(s ?? '').replace(/[\\^$.*+?()[\]{}|]/g, '\\$&'),
  toString: v => (v === null || v === undefined ? '' : String(v)),
  toNumber: v => Number(v),
  toInteger: v => {
    const n = Number(v);
    return Number.isFinite(n) ? Math.trunc(n) : n ? (n > 0 ? Number.MAX_VALUE : -Number.MAX_VALUE) : 0;
  },
  // predicates
  isArray: Array.isArray,
  isString: v => typeof v === 'string',
  isNumber: v => typeof v === 'number',
  isInteger: v => Number.isInteger(v),
  isFinite: v => Number.isFinite(v),
  isNaN: v => typeof v === 'number' && v !== v, // eslint-disable-line no-self-compare
  isBoolean: v => typeof v === 'boolean',
  isFunction: v => typeof v === 'function',
  isObject: v => v !== null && (typeof v === 'object' || typeof v === 'function'),
  isObjectLike,
  isPlainObject,
  isNil: v => v === null || v === undefined,
  isNull: v => v === null,
  isUndefined: v => v === undefined,
  isDate: v => v instanceof Date,
  isRegExp: v => v instanceof RegExp,
  isEmpty: v => {
    if (v === null || v === undefined) return true;
    if (typeof v === 'string' || Array.isArray(v)) return v.length === 0;
    if (v instanceof Map || v instanceof Set) return v.size === 0;
    if (typeof v === 'object') return Object.keys(v).length === 0;
    return true;
  },
  isEqual,
  isMatch,
  // functions and misc
  identity: v => v,
  noop: () => undefined,
  constant: v => () => v,
  property: p => o => getPath(o, p),
  matches: src => o => isMatch(o, src),
  iteratee,
  uniqueId: (() => {
    let n = 0;
    return (prefix = '') => `${prefix}${++n}`;
  })(),
  castArray: (...args) => (args.length === 0 ? [] : Array.isArray(args[0]) ? args[0] : [args[0]]),
  defaultTo: (v, d) => (v === null || v === undefined || v !== v ? d : v), // eslint-disable-line no-self-compare
  // more collections and arrays
  flatMap: (c, f) => flattenDepth(lodashFns.map(c, f), 1),
  flatMapDeep: (c, f) => flattenDepth(lodashFns.map(c, f), Infinity),
  findLast: (c, f) => {
    const g = iteratee(f);
    const vals = collectionValues(c);
    for (let i = vals.length - 1; i >= 0; i--) if (g(vals[i], i, c)) return vals[i];
    return undefined;
  },
  findLastIndex: (arr, f) => {
    const g = iteratee(f);
    for (let i = (arr || []).length - 1; i >= 0; i--) if (g(arr[i], i, arr)) return i;
    return -1;
  },
  dropRight: (arr, n = 1) => (arr || []).slice(0, Math.max((arr || []).length - n, 0)),
  takeRight: (arr, n = 1) => (n <= 0 ? [] : (arr || []).slice(-n)),
  lastIndexOf: (arr, v) => (arr || []).lastIndexOf(v),
  xor: (...arrays) => {
    const counts = new Map();
    for (const a of arrays) for (const v of new Set(a || [])) counts.set(v, (counts.get(v) || 0) + 1);
    return [...counts.keys()].filter(v => counts.get(v) === 1);
  },
  unionBy: (...args) => {
    const f = iteratee(Array.isArray(args[args.length - 1]) ? undefined : args.pop());
    return lodashFns.uniqBy(flattenDepth(args, 1), f);
  },
  intersectionBy: (...args) => {
    const f = iteratee(Array.isArray(args[args.length - 1]) ? undefined : args.pop());
    const [first = [], ...rest] = args;
    const restKeys = rest.map(a => (a || []).map(f));
    return lodashFns.uniqBy(first.filter(v => restKeys.every(keys => keys.includes(f(v)))), f);
  },
  sortedUniq: arr => (arr || []).filter((v, i, a) => i === 0 || v !== a[i - 1]),
  fill: (arr, value, start = 0, end = arr ? arr.length : 0) => (arr ? arr.fill(value, start, end) : []),
  pull: (arr, ...vals) => lodashFns.pullAll(arr, vals),
  pullAll: (arr, vals) => {
    if (!arr) return arr;
    for (let i = arr.length - 1; i >= 0; i--) if ((vals || []).includes(arr[i])) arr.splice(i, 1);
    return arr;
  },
  remove: (arr, f) => {
    const g = iteratee(f);
    const removed = [];
    if (!arr) return removed;
    for (let i = 0; i < arr.length; ) {
      if (g(arr[i], i, arr)) removed.push(arr.splice(i, 1)[0]);
      else i++;
    }
    return removed;
  },
  sample: c => {
    const vals = collectionValues(c);
    return vals[Math.floor(Math.random() * vals.length)];
  },
  shuffle: c => {
    const vals = collectionValues(c);
    for (let i = vals.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [vals[i], vals[j]] = [vals[j], vals[i]];
    }
    return vals;
  },
  toArray: v => (v === null || v === undefined ? [] : typeof v === 'string' ? Array.from(v) : isObjectLike(v) ? collectionValues(v) : []),
  // more objects
  at: (o, ...paths) => flattenDepth(paths, Infinity).map(p => getPath(o, p)),
  unset: (o, path) => {
    const parts = toPath(path);
    const parent = parts.length > 1 ? getPath(o, parts.slice(0, -1)) : o;
    if (isObjectLike(parent)) delete parent[parts[parts.length - 1]];
    return true;
  },
  update: (o, path, f) => setPath(o, path, f(getPath(o, path))),
  assignIn: (t, ...s) => {
    for (const src of s) for (const k in src) t[k] = src[k]; // eslint-disable-line guard-for-in
    return t;
  },
  extend: (t, ...s) => lodashFns.assignIn(t, ...s),
  forOwn: (o, f) => {
    for (const k of Object.keys(o || {})) if (f(o[k], k, o) === false) break;
    return o;
  },
  transform: (o, f, acc) => {
    let result = acc;
    if (result === undefined) result = Array.isArray(o) ? [] : {};
    eachEntry(o, (v, k) => f(result, v, k, o));
    return result;
  },
  mergeWith: (target, ...rest) => {
    const customizer = typeof rest[rest.length - 1] === 'function' ? rest.pop() : null;
    const walk = (t, src) => {
      for (const k of Object.keys(src || {})) {
        const custom = customizer ? customizer(t[k], src[k], k, t, src) : undefined;
        if (custom !== undefined) t[k] = custom;
        else if (isObjectLike(src[k]) && !(src[k] instanceof Date)) {
          if (!isObjectLike(t[k])) t[k] = Array.isArray(src[k]) ? [] : {};
          walk(t[k], src[k]);
        } else if (src[k] !== undefined || !hasOwn(t, k)) t[k] = src[k];
      }
    };
    for (const src of rest) walk(target, src);
    return target;
  },
  isArrayLike: v => v !== null && v !== undefined && typeof v !== 'function' && Number.isInteger(v.length) && v.length >= 0,
  isSafeInteger: v => Number.isSafeInteger(v),
  inRange: (n, start, end) => {
    if (end === undefined) { end = start; start = 0; }
    return n >= Math.min(start, end) && n < Math.max(start, end);
  },
  // functions
  flow: (...fns) => {
    const list = flattenDepth(fns, 1);
    return function flowed(...args) {
      let result = list.length ? list[0].apply(this, args) : args[0];
      for (let i = 1; i < list.length; i++) result = list[i].call(this, result);
      return result;
    };
  },
  flowRight: (...fns) => lodashFns.flow(...flattenDepth(fns, 1).reverse()),
  once: f => {
    let done = false;
    let result;
    return function onced(...args) {
      if (!done) { done = true; result = f.apply(this, args); }
      return result;
    };
  },
  memoize: (f, resolver) => {
    const cache = new Map();
    const memoized = function memoized(...args) {
      const key = resolver ? resolver.apply(this, args) : args[0];
      if (cache.has(key)) return cache.get(key);
      const v = f.apply(this, args);
      cache.set(key, v);
      return v;
    };
    memoized.cache = cache;
    return memoized;
  },
  // more strings
  escape: s => String(s ?? '').replace(/[&<>"']/g, ch => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[ch]),
  unescape: s => String(s ?? '').replace(/&(?:amp|lt|gt|quot|#39);/g, e => ({ '&amp;': '&', '&lt;': '<', '&gt;': '>', '&quot;': '"', '&#39;': "'" })[e]),
  truncate: (s, opts = {}) => {
    const str = String(s ?? '');
    const length = opts.length ?? 30;
    const omission = opts.omission ?? '...';
    if (str.length <= length) return str;
    let end = length - omission.length;
    if (end < 1) return omission;
    let result = str.slice(0, end);
    if (opts.separator !== undefined) {
      const sep = opts.separator;
      if (typeof sep === 'string') {
        const idx = result.lastIndexOf(sep);
        if (idx > -1) result = result.slice(0, idx);
      } else if (sep instanceof RegExp) {
        const re = new RegExp(sep.source, sep.flags.includes('g') ? sep.flags : `${sep.flags}g`);
        let last = -1;
        let m;
        while ((m = re.exec(result)) !== null) { last = m.index; if (m[0] === '') re.lastIndex++; }
        if (last > -1) result = result.slice(0, last);
      }
    }
    return result + omission;
  },
  parseInt: (s, radix) => parseInt(String(s).trim(), radix || 0),
};

function lodashTrim(str, chars, start, end) {
  const set = new Set(Array.from(chars));
  const arr = Array.from(str);
  let a = 0;
  let b = arr.length;
  if (start) while (a < b && set.has(arr[a])) a++;
  if (end) while (b > a && set.has(arr[b - 1])) b--;
  return arr.slice(a, b).join('');
}

// `_(value).fn(...).fn(...).value()` chaining.
function LodashWrapper(value) {
  this.__value = value;
}
LodashWrapper.prototype.value = function value() {
  return this.__value;
};
LodashWrapper.prototype.valueOf = LodashWrapper.prototype.value;
LodashWrapper.prototype.toJSON = LodashWrapper.prototype.value;
for (const name of Object.keys(lodashFns)) {
  LodashWrapper.prototype[name] = function chained(...args) {
    return new LodashWrapper(lodashFns[name](this.__value, ...args));
  };
}

const _ = Object.assign(value => (value instanceof LodashWrapper ? value : new LodashWrapper(value)), lodashFns, {
  chain: value => new LodashWrapper(value),
});

// ---------------------------------------------------------------------------
// date-fns (format / parse and the helpers cursor needs)
// ---------------------------------------------------------------------------

const MONTHS = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December'];
const DAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];

const pad2 = (n, w = 2) => String(Math.abs(n)).padStart(w, '0');

function toDate(arg) {
  if (arg instanceof Date) return new Date(arg.getTime());
  if (typeof arg === 'number') return new Date(arg);
  return new Date(NaN);
}

function ordinal(n) {
  const r100 = n % 100;
  if (r100 > 10 && r100 < 20) return `${n}th`;
  switch (n % 10) {
    case 1: return `${n}st`;
    case 2: return `${n}nd`;
    case 3: return `${n}rd`;
    default: return `${n}th`;
  }
}

function tzOffset(date, kind) {
  const off = -date.getTimezoneOffset();
  const sign = off >= 0 ? '+' : '-';
  const h = Math.floor(Math.abs(off) / 60);
  const m = Math.abs(off) % 60;
  switch (kind) {
    case 'O': case 'OO': case 'OOO':
      return `GMT${sign}${h}${m ? `:${pad2(m)}` : ''}`;
    case 'OOOO':
      return `GMT${sign}${pad2(h)}:${pad2(m)}`;
    case 'X': if (off === 0) return 'Z'; return `${sign}${pad2(h)}${m ? pad2(m) : ''}`;
    case 'XX': if (off === 0) return 'Z'; return `${sign}${pad2(h)}${pad2(m)}`;
    case 'XXX': if (off === 0) return 'Z'; return `${sign}${pad2(h)}:${pad2(m)}`;
    case 'x': return `${sign}${pad2(h)}${m ? pad2(m) : ''}`;
    case 'xx': return `${sign}${pad2(h)}${pad2(m)}`;
    default: return `${sign}${pad2(h)}:${pad2(m)}`;
  }
}

const FORMAT_TOKEN = /([yYQqMLwIdDecihHKkms]o|''|'(?:[^']|'')*'?|y+|Y+|M+|L+|d+|D+|E+|e+|c+|H+|h+|k+|K+|m+|s+|S+|a+|b+|B+|X+|x+|O+|z+|T+|t+|Q+|q+|i+|w+|I+|G+|P+|p+|[A-Za-z])/g;

function formatToken(tok, d) {
  const c = tok[0];
  const n = tok.length;
  const year = d.getFullYear();
  const month = d.getMonth();
  const day = d.getDate();
  const hours = d.getHours();
  switch (c) {
    case 'y': case 'Y': case 'u':
      if (n === 2) return pad2(year % 100);
      if (tok === 'yo') return ordinal(year);
      return pad2(year, n);
    case 'M': case 'L':
      if (n === 1) return String(month + 1);
      if (n === 2) return pad2(month + 1);
      if (n === 3) return MONTHS[month].slice(0, 3);
      if (n === 4) return MONTHS[month];
      return MONTHS[month][0];
    case 'd': return n === 1 ? String(day) : pad2(day, n);
    case 'D': {
      const start = new Date(year, 0, 1);
      const doy = Math.round((new Date(year, month, day) - start) / 86400000) + 1;
      return pad2(doy, n);
    }
    case 'E': case 'e': case 'c': {
      const wd = d.getDay();
      if ((c === 'e' || c === 'c') && n <= 2) return n === 1 ? String(wd + 1) : pad2(wd + 1);
      if (n <= 3) return DAYS[wd].slice(0, 3);
      if (n === 4) return DAYS[wd];
      if (n === 5) return DAYS[wd][0];
      return DAYS[wd].slice(0, 2);
    }
    case 'i': { const wd = d.getDay() || 7; return n === 1 ? String(wd) : pad2(wd, n); }
    case 'H': return n === 1 ? String(hours) : pad2(hours, n);
    case 'k': { const h = hours || 24; return n === 1 ? String(h) : pad2(h, n); }
    case 'h': { const h = hours % 12 || 12; return n === 1 ? String(h) : pad2(h, n); }
    case 'K': { const h = hours % 12; return n === 1 ? String(h) : pad2(h, n); }
    case 'm': return n === 1 ? String(d.getMinutes()) : pad2(d.getMinutes(), n);
    case 's': return n === 1 ? String(d.getSeconds()) : pad2(d.getSeconds(), n);
    case 'S': return pad2(d.getMilliseconds(), 3).slice(0, n).padEnd(n, '0');
    case 'a': case 'b': case 'B': {
      const am = hours < 12;
      if (n <= 2) return am ? 'AM' : 'PM';
      if (n === 3) return am ? 'am' : 'pm';
      if (n === 4) return am ? 'a.m.' : 'p.m.';
      return am ? 'a' : 'p';
    }
    case 'Q': case 'q': { const q = Math.floor(month / 3) + 1; return n === 1 ? String(q) : n === 2 ? pad2(q) : `Q${q}`; }
    case 'X': case 'x': return tzOffset(d, tok.slice(0, 3));
    case 'O': return tzOffset(d, n >= 4 ? 'OOOO' : 'O');
    case 'z': return tzOffset(d, n >= 4 ? 'OOOO' : 'O');
    case 'T': return String(d.getTime());
    case 't': return String(Math.floor(d.getTime() / 1000));
    case 'G': return year > 0 ? (n === 4 ? 'Anno Domini' : 'AD') : n === 4 ? 'Before Christ' : 'BC';
    case 'P': {
      if (n === 1) return `${pad2(month + 1)}/${pad2(day)}/${pad2(year, 4)}`;
      if (n === 2) return `${MONTHS[month].slice(0, 3)} ${day}, ${year}`;
      if (n === 3) return `${MONTHS[month]} ${ordinal(day)}, ${year}`;
      return `${DAYS[d.getDay()]}, ${MONTHS[month]} ${ordinal(day)}, ${year}`;
    }
    case 'p': {
      const h = hours % 12 || 12;
      const mm = pad2(d.getMinutes());
      const ampm = hours < 12 ? 'AM' : 'PM';
      if (n === 1) return `${h}:${mm} ${ampm}`;
      return `${h}:${mm}:${pad2(d.getSeconds())} ${ampm}`;
    }
    default:
      throw new RangeError(`Format string contains an unescaped latin alphabet character \`${c}\``);
  }
}

function dateFormat(date, formatStr) {
  const d = toDate(date);
  if (isNaN(d.getTime())) throw new RangeError('Invalid time value');
  return String(formatStr).replace(FORMAT_TOKEN, tok => {
    if (tok === "''") return "'";
    if (tok[0] === "'") return tok.replace(/^'|'$/g, '').replace(/''/g, "'");
    if (/^(D+|Y+)$/.test(tok)) {
      const what = tok[0] === 'D' ? ['d', 'days of the month'] : ['y', 'years'];
      throw new RangeError(`Use \`${what[0].repeat(tok.length)}\` instead of \`${tok}\` (in \`${formatStr}\`) for formatting ${what[1]} to the input \`${d}\`; see: https://github.com/date-fns/date-fns/blob/master/docs/unicodeTokens.md`);
    }
    if (tok.length === 2 && tok[1] === 'o') {
      const base = tok[0];
      const d2 = d;
      if (base === 'd') return ordinal(d2.getDate());
      if (base === 'M') return ordinal(d2.getMonth() + 1);
      if (base === 'y') return ordinal(d2.getFullYear());
      if (base === 'Q') return ordinal(Math.floor(d2.getMonth() / 3) + 1);
      if (base === 'H') return ordinal(d2.getHours());
      if (base === 'h') return ordinal(d2.getHours() % 12 || 12);
      if (base === 'm') return ordinal(d2.getMinutes());
      if (base === 's') return ordinal(d2.getSeconds());
    }
    return formatToken(tok, d);
  });
}

// date-fns `parse(dateString, formatString, referenceDate)`: numeric and
// month-name tokens, literals, AM/PM and offsets. Invalid input gives an
// Invalid Date, as date-fns does.
function dateParse(dateStr, formatStr, referenceDate) {
  const ref = toDate(referenceDate);
  const str = String(dateStr);
  const fields = {};
  let pos = 0;
  const tokens = String(formatStr).match(FORMAT_TOKEN) || [];
  // the literal text between tokens matters too
  let fmtPos = 0;
  const fmt = String(formatStr);
  const readNum = (min, max) => {
    const m = new RegExp(`^[+-]?\\d{${min},${max}}`).exec(str.slice(pos));
    if (!m) return null;
    pos += m[0].length;
    return Number(m[0]);
  };
  const readName = (names, short) => {
    const rest = str.slice(pos).toLowerCase();
    for (let i = 0; i < names.length; i++) {
      const full = names[i].toLowerCase();
      if (!short && rest.startsWith(full)) { pos += full.length; return i; }
    }
    for (let i = 0; i < names.length; i++) {
      const abbr = names[i].slice(0, 3).toLowerCase();
      if (rest.startsWith(abbr)) { pos += 3; return i; }
    }
    return null;
  };
  for (const tok of tokens) {
    const at = fmt.indexOf(tok, fmtPos);
    const literal = fmt.slice(fmtPos, at);
    fmtPos = at + tok.length;
    if (literal) {
      if (!str.startsWith(literal, pos)) return new Date(NaN);
      pos += literal.length;
    }
    const c = tok[0];
    const n = tok.length;
    let v;
    if (tok === "''") { if (str[pos] !== "'") return new Date(NaN); pos++; continue; }
    if (n === 2 && tok[1] === 'o') {
      // ordinal number: 1st, 2nd, 3rd, 4th…
      const m = /^(\d+)(st|nd|rd|th)/.exec(str.slice(pos));
      if (!m) return new Date(NaN);
      pos += m[0].length;
      v = Number(m[1]);
      if (c === 'd') fields.day = v;
      else if (c === 'M') fields.month = v - 1;
      else if (c === 'y') fields.year = v;
      else if (c === 'H') fields.hours = v;
      else if (c === 'm') fields.minutes = v;
      else if (c === 's') fields.seconds = v;
      else return new Date(NaN);
      continue;
    }
    if (c === "'") {
      const lit = tok.replace(/^'|'$/g, '').replace(/''/g, "'");
      if (!str.startsWith(lit, pos)) return new Date(NaN);
      pos += lit.length;
      continue;
    }
    switch (c) {
      case 'y': case 'Y': case 'u':
        v = n === 2 ? readNum(2, 2) : readNum(1, Math.max(n, 4) + 2);
        if (v === null) return new Date(NaN);
        fields.year = n === 2 ? 2000 + v - (v + 2000 > ref.getFullYear() + 50 ? 100 : 0) : v;
        break;
      case 'M': case 'L':
        if (n <= 2) { v = readNum(n === 1 ? 1 : 2, 2); if (v === null) return new Date(NaN); fields.month = v - 1; }
        else { v = readName(MONTHS, n === 3); if (v === null) return new Date(NaN); fields.month = v; }
        break;
      case 'd': v = readNum(n === 1 ? 1 : 2, 2); if (v === null) return new Date(NaN); fields.day = v; break;
      case 'E': case 'e': case 'c':
        if (n >= 3) { if (readName(DAYS, n === 3) === null) return new Date(NaN); } else if (readNum(1, 2) === null) return new Date(NaN);
        break;
      case 'H': case 'k': v = readNum(n === 1 ? 1 : 2, 2); if (v === null) return new Date(NaN); fields.hours = c === 'k' && v === 24 ? 0 : v; break;
      case 'h': case 'K': v = readNum(n === 1 ? 1 : 2, 2); if (v === null) return new Date(NaN); fields.hours12 = v % 12; break;
      case 'm': v = readNum(n === 1 ? 1 : 2, 2); if (v === null) return new Date(NaN); fields.minutes = v; break;
      case 's': v = readNum(n === 1 ? 1 : 2, 2); if (v === null) return new Date(NaN); fields.seconds = v; break;
      case 'S': v = readNum(1, n); if (v === null) return new Date(NaN); fields.ms = Math.round(v * Math.pow(10, 3 - String(v).length)); break;
      case 'a': case 'b': case 'B': {
        const m = /^(a\.?m\.?|p\.?m\.?)/i.exec(str.slice(pos));
        if (!m) return new Date(NaN);
        pos += m[0].length;
        fields.pm = /^p/i.test(m[0]);
        break;
      }
      case 'X': case 'x': case 'O': case 'z': {
        const m = /^(Z|(?:GMT)?([+-])(\d{1,2}):?(\d{2})?)/.exec(str.slice(pos));
        if (!m) return new Date(NaN);
        pos += m[0].length;
        fields.offset = m[1] === 'Z' ? 0 : (m[2] === '-' ? -1 : 1) * (Number(m[3]) * 60 + Number(m[4] || 0));
        break;
      }
      case 'T': v = readNum(1, 16); if (v === null) return new Date(NaN); return new Date(v);
      case 't': v = readNum(1, 13); if (v === null) return new Date(NaN); return new Date(v * 1000);
      default:
        return new Date(NaN);
    }
  }
  const tail = fmt.slice(fmtPos);
  if (tail) {
    if (!str.startsWith(tail, pos)) return new Date(NaN);
    pos += tail.length;
  }
  if (pos !== str.length) return new Date(NaN);
  const year = fields.year ?? ref.getFullYear();
  const month = fields.month ?? (fields.year !== undefined ? 0 : ref.getMonth());
  const day = fields.day ?? (fields.year !== undefined || fields.month !== undefined ? 1 : ref.getDate());
  let hours = fields.hours ?? 0;
  if (fields.hours12 !== undefined) hours = fields.hours12 + (fields.pm ? 12 : 0);
  else if (fields.pm !== undefined && hours < 12 && fields.pm) hours += 12;
  const minutes = fields.minutes ?? 0;
  const seconds = fields.seconds ?? 0;
  const ms = fields.ms ?? 0;
  let result;
  if (fields.offset !== undefined) {
    result = new Date(Date.UTC(year, month, day, hours, minutes, seconds, ms) - fields.offset * 60000);
  } else {
    result = new Date(year, month, day, hours, minutes, seconds, ms);
    if (year >= 0 && year < 100) result.setFullYear(year);
  }
  if (result.getMonth() !== month && fields.offset === undefined) return new Date(NaN);
  return result;
}

const startOfDay = d => { const x = toDate(d); x.setHours(0, 0, 0, 0); return x; };
const subHours = (d, n) => new Date(toDate(d).getTime() - Number(n) * 3600000);
const subDays = (d, n) => { const x = toDate(d); x.setDate(x.getDate() - Number(n)); return x; };
const startOfToday = () => startOfDay(new Date());
const startOfYesterday = () => subDays(startOfDay(new Date()), 1);

const dateFns = Object.freeze({ __proto__: null, format: dateFormat, parse: dateParse });

// util.parseDate: natural-language cursor values.
function parseDate(d, startDate) {
  try {
    if (d === 'start') return startDate;
    if (d === 'now' || d === 'end') return new Date();
    if (d === 'today') return startOfToday();
    if (d === 'yesterday') return startOfYesterday();
    if (/(hours? ago)$/.test(d)) {
      const [diff] = d.match(/\d+/);
      return subHours(new Date(), diff);
    }
    if (/(days? ago)$/.test(d)) {
      const [diff] = d.match(/\d+/);
      return startOfDay(subDays(new Date(), diff));
    }
  } catch (e) {
    adaptorLog('log', `Error converting ${d} into a date`);
  }
  return d;
}

// ---------------------------------------------------------------------------
// CSV (csv-parse with the options parseCsv allows)
// ---------------------------------------------------------------------------

class CsvError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

function csvRecords(text, opts) {
  let input = String(text);
  if (opts.bom && input.charCodeAt(0) === 0xfeff) input = input.slice(1);
  const delim = opts.delimiter || ',';
  const quote = opts.quote === false || opts.quote === null ? '' : opts.quote || '"';
  const escape = opts.escape === false || opts.escape === null ? '' : opts.escape || '"';
  const ltrim = !!(opts.trim || opts.ltrim);
  const rtrim = !!(opts.trim || opts.rtrim);
  const isWs = ch => ch === ' ' || ch === '\t';
  const records = [];
  let record = [];
  let field = '';
  let quoted = false;
  let inQuotes = false;
  let afterQuote = false;
  let line = 1;
  let i = 0;
  const pushField = () => {
    let v = field;
    if (!quoted) {
      if (ltrim) v = v.replace(/^[ \t]+/, '');
      if (rtrim) v = v.replace(/[ \t]+$/, '');
    }
    record.push(v);
    field = '';
    quoted = false;
    afterQuote = false;
  };
  const pushRecord = () => {
    pushField();
    const empty = record.length === 1 && record[0] === '' && !quotedSeen;
    if (!(opts.skip_empty_lines && empty)) records.push({ fields: record, line });
    record = [];
    quotedSeen = false;
  };
  let quotedSeen = false;
  while (i < input.length) {
    const ch = input[i];
    if (inQuotes) {
      if (escape && ch === escape && input[i + 1] === quote && escape !== quote) {
        field += quote;
        i += 2;
        continue;
      }
      if (ch === quote) {
        if (escape === quote && input[i + 1] === quote) {
          field += quote;
          i += 2;
          continue;
        }
        inQuotes = false;
        afterQuote = true;
        i++;
        continue;
      }
      if (ch === '\n') line++;
      field += ch;
      i++;
      continue;
    }
    if (input.startsWith(delim, i)) {
      pushField();
      i += delim.length;
      continue;
    }
    if (ch === '\r' || ch === '\n') {
      pushRecord();
      i += ch === '\r' && input[i + 1] === '\n' ? 2 : 1;
      line++;
      continue;
    }
    if (quote && ch === quote && !afterQuote && (field === '' || (ltrim && field.trim() === ''))) {
      inQuotes = true;
      quoted = true;
      quotedSeen = true;
      field = '';
      i++;
      continue;
    }
    if (afterQuote) {
      if (isWs(ch) && rtrim) { i++; continue; }
      throw new CsvError('CSV_INVALID_CLOSING_QUOTE',
        `Invalid Closing Quote: got "${ch}" at line ${line} instead of delimiter, record delimiter, trimable character (if activated) or comment`);
    }
    if (quote && ch === quote) {
      // csv-parse names the field by its column when columns are known
      let name = record.length;
      if (Array.isArray(opts.columns)) name = opts.columns[record.length];
      else if (opts.columns === true && records.length) name = records[0].fields[record.length];
      throw new CsvError('INVALID_OPENING_QUOTE', `Invalid Opening Quote: a quote is found on field ${JSON.stringify(name)} at line ${line}, value is ${JSON.stringify(field)}`);
    }
    field += ch;
    i++;
  }
  if (inQuotes) throw new CsvError('CSV_QUOTE_NOT_CLOSED', `Quote Not Closed: the parsing is finished with an opening quote at line ${line}`);
  if (field !== '' || record.length > 0 || quoted) pushRecord();
  return records;
}

function parseCsvText(text, opts) {
  const rows = csvRecords(text, opts);
  let columns = opts.columns;
  if (!columns) return rows.map(r => r.fields);
  const out = [];
  let start = 0;
  if (columns === true || typeof columns === 'function') {
    if (!rows.length) return out;
    const header = rows[0].fields;
    columns = typeof columns === 'function' ? columns(header) : header;
    start = 1;
  }
  const names = columns.map(c => (c && typeof c === 'object' ? c.name : c));
  for (let r = start; r < rows.length; r++) {
    const { fields, line } = rows[r];
    if (fields.length !== names.length) {
      throw new CsvError('CSV_RECORD_INCONSISTENT_COLUMNS',
        `Invalid Record Length: columns length is ${names.length}, got ${fields.length} on line ${line}`);
    }
    const obj = {};
    names.forEach((name, idx) => {
      if (name === undefined || name === null || name === false) return;
      obj[name] = fields[idx];
    });
    out.push(obj);
  }
  return out;
}

// ---------------------------------------------------------------------------
// util: references, base64, uuid, errors
// ---------------------------------------------------------------------------

function expandReference(state, value) {
  if (value instanceof RegExp || typedArrayBytes(value)) return value;
  if (Array.isArray(value)) return value.map(v => expandReference(state, v));
  if (typeof value === 'object' && value !== null && !(value instanceof FormBody)) {
    // (OpenFn rebuilds the object with a spread per key; a loop gives the
    // same object without the quadratic cost on large payloads.)
    const out = {};
    for (const key of Object.keys(value)) out[key] = expandReference(state, value[key]);
    return out;
  }
  if (typeof value === 'function') return expandReference(state, value(state));
  return value;
}

function expandReferences(state, ...args) {
  return args.map(value => expandReference(state, value));
}

function encode(data, options = { parseJson: true }) {
  let str = data;
  if (typeof data !== 'string' && options.parseJson) {
    try {
      str = JSON.stringify(str);
    } catch (e) {
      adaptorLog('log', e.message);
    }
  }
  const bytes = typedArrayBytes(str);
  return bytes ? bytesToBase64(bytes) : toBase64(String(str));
}

function decode(base64Data, options = { parseJson: true }) {
  let value = fromBase64(base64Data);
  if ((value.startsWith('[') || value.startsWith('{')) && options.parseJson) {
    try {
      value = JSON.parse(value);
    } catch (e) {
      adaptorLog('log', e.message);
    }
  }
  return value;
}

function uuid() {
  const b = [];
  for (let i = 0; i < 16; i++) b.push(Math.floor(Math.random() * 256));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = b.map(x => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function throwError(code, { description, fix, ...extras } = {}) {
  const message = description ? `${code}: ${description}` : code;
  const e = new Error(message);
  e.code = code;
  if (description) e.description = description;
  if (fix) e.fix = fix;
  for (const key in extras) e[key] = extras[key];
  throw e;
}

function normalizeOauthConfig(configuration) {
  const { access_token, accessToken } = configuration;
  if (access_token && accessToken) {
    throw new Error('Both "accessToken" & "access_token" keys found in configuration; please use only "access_token" for OAuth2 credentials.');
  }
  if (access_token) return { ...configuration, accessToken: access_token };
  adaptorLog('log', 'Key "access_token" not found in state.configuration;', 'is this a standard OAuth 2.0 JSON credential?');
  if (accessToken) adaptorLog('log', 'Using "accessToken" from state.configuration');
  return configuration;
}

// ---------------------------------------------------------------------------
// HTTP core (util.request and friends), over the native httpRequest
// ---------------------------------------------------------------------------

// Reason phrases as the `http-status-codes` package gives them (this is
// what OpenFn reports as statusMessage, not the server's phrase).
const REASON_PHRASES = {
  100: 'Continue', 101: 'Switching Protocols', 102: 'Processing', 103: 'Early Hints',
  200: 'OK', 201: 'Created', 202: 'Accepted', 203: 'Non Authoritative Information', 204: 'No Content',
  205: 'Reset Content', 206: 'Partial Content', 207: 'Multi-Status',
  300: 'Multiple Choices', 301: 'Moved Permanently', 302: 'Moved Temporarily', 303: 'See Other',
  304: 'Not Modified', 305: 'Use Proxy', 307: 'Temporary Redirect', 308: 'Permanent Redirect',
  400: 'Bad Request', 401: 'Unauthorized', 402: 'Payment Required', 403: 'Forbidden', 404: 'Not Found',
  405: 'Method Not Allowed', 406: 'Not Acceptable', 407: 'Proxy Authentication Required',
  408: 'Request Timeout', 409: 'Conflict', 410: 'Gone', 411: 'Length Required', 412: 'Precondition Failed',
  413: 'Request Entity Too Large', 414: 'Request-URI Too Long', 415: 'Unsupported Media Type',
  416: 'Requested Range Not Satisfiable', 417: 'Expectation Failed', 418: "I'm a teapot",
  419: 'Insufficient Space on Resource', 420: 'Method Failure', 421: 'Misdirected Request',
  422: 'Unprocessable Entity', 423: 'Locked', 424: 'Failed Dependency', 426: 'Upgrade Required',
  428: 'Precondition Required', 429: 'Too Many Requests', 431: 'Request Header Fields Too Large',
  451: 'Unavailable For Legal Reasons', 500: 'Internal Server Error', 501: 'Not Implemented',
  502: 'Bad Gateway', 503: 'Service Unavailable', 504: 'Gateway Timeout',
  505: 'HTTP Version Not Supported', 507: 'Insufficient Storage', 511: 'Network Authentication Required',
};

function getReasonPhrase(code) {
  if (hasOwn(REASON_PHRASES, code)) return REASON_PHRASES[code];
  throw new Error(`Status code does not exist: ${code}`);
}

const makeBasicAuthHeader = (username, password) => ({
  Authorization: `Basic ${toBase64(`${username}:${password}`)}`,
});

function logResponse(response) {
  const { method, url, statusCode, duration, query } = response || {};
  if (method && url && duration && statusCode) {
    const qs = querystringStringify(query || {});
    const urlWithQuery = Object.keys(query || {}).length ? `${url}?${qs}` : url;
    const message = `${method} ${urlWithQuery} - ${statusCode} in ${duration}ms`;
    if (response instanceof Error) {
      adaptorLog('error', message);
      adaptorLog('error', 'response body: ');
      adaptorLog('error', response.body || '[no body]');
    } else {
      adaptorLog('info', message);
    }
  }
  return response;
}

// Node's querystring.stringify.
function qsEscape(v) {
  return encodeURIComponent(v);
}
function qsPrimitive(v) {
  if (typeof v === 'string') return v;
  if (typeof v === 'number' && Number.isFinite(v)) return String(v);
  if (typeof v === 'bigint' || typeof v === 'boolean') return String(v);
  return '';
}
function querystringStringify(obj) {
  if (!isObjectLike(obj)) return '';
  const parts = [];
  for (const k of Object.keys(obj)) {
    const v = obj[k];
    const ks = `${qsEscape(qsPrimitive(k) || k)}=`;
    if (Array.isArray(v)) {
      for (const item of v) parts.push(ks + qsEscape(qsPrimitive(item)));
    } else {
      parts.push(ks + qsEscape(qsPrimitive(v)));
    }
  }
  return parts.join('&');
}

// Node's querystring.parse of a URL's search: repeated keys become arrays.
function querystringParse(pairs) {
  const out = {};
  for (const [k, v] of pairs) {
    if (hasOwn(out, k)) out[k] = Array.isArray(out[k]) ? [...out[k], v] : [out[k], v];
    else out[k] = v;
  }
  return out;
}

// path.posix.join + normalize.
function posixJoin(...parts) {
  const joined = parts.filter(p => p !== '').join('/');
  if (joined === '') return '.';
  const absolute = joined.startsWith('/');
  const trailing = joined.endsWith('/');
  const out = [];
  for (const seg of joined.split('/')) {
    if (seg === '' || seg === '.') continue;
    if (seg === '..') {
      if (out.length && out[out.length - 1] !== '..') out.pop();
      else if (!absolute) out.push('..');
    } else out.push(seg);
  }
  let res = out.join('/');
  if (!res && !absolute) res = '.';
  if (res && trailing) res += '/';
  return (absolute ? '/' : '') + res;
}

// WHATWG URL parsing through the host (the url crate); throws a TypeError
// "Invalid URL" as Node does.
function parseURL(input) {
  const urlParse = requireHost('urlParse');
  return urlParse(String(input));
}

const ERROR_ABSOLUTE_URL = 'Absolute URLs not supported';
const ERROR_URL_MISMATCH = 'Target origin does not match baseUrl origin';

function assertRelativeUrl(path) {
  if (/https?:\/\//.test(path)) {
    const e = new Error('UNEXPECTED_ABSOLUTE_URL');
    e.code = 'UNEXPECTED_ABSOLUTE_URL';
    e.description = 'An absolute URL was provided (https://...) but only a path (/a/b/c) is supported';
    e.url = path;
    e.fix = 'Remove the protocol, domain and origin from the provided URL. Maybe you need to use the generic HTTP helper functions instead?';
    throw e;
  }
}

function parseUrl(pathOrUrl = '', baseUrl) {
  let fullUrl;
  if (/https?:\/\//.test(pathOrUrl)) {
    fullUrl = parseURL(pathOrUrl);
    if (baseUrl) {
      const base = parseURL(baseUrl);
      if (fullUrl.origin !== base.origin) {
        const e = new Error(ERROR_URL_MISMATCH);
        e.code = 'BASE_URL_MISMATCH';
        e.description = 'A request was attempted to an absolute URL, but a different base URL was specified. This is a potential security violation.';
        e.target = pathOrUrl;
        e.baseUrl = baseUrl;
        e.fix = 'Try using a generic HTTP function to access the target URL';
        throw e;
      }
    }
  } else if (baseUrl) {
    fullUrl = parseURL(posixJoin(baseUrl, pathOrUrl));
  } else {
    parseURL(pathOrUrl);
  }
  return {
    url: fullUrl.href,
    baseUrl: fullUrl.origin,
    path: fullUrl.pathname,
    query: querystringParse(fullUrl.searchParams),
  };
}

// A multipart/form-data body (util.encodeFormBody).
class FormBody {
  constructor() {
    this.entries = [];
  }
  append(name, value) {
    this.entries.push([String(name), value]);
  }
  encode() {
    // same length as undici's boundary, so Content-Length matches OpenFn's
    let boundary = '----formdata-gabbro-';
    for (let i = 0; i < 12; i++) boundary += Math.floor(Math.random() * 10);
    let body = '';
    for (const [name, value] of this.entries) {
      const esc = s => s.replace(/\n/g, '%0A').replace(/\r/g, '%0D').replace(/"/g, '%22');
      body += `--${boundary}\r\nContent-Disposition: form-data; name="${esc(name)}"\r\n\r\n${value}\r\n`;
    }
    body += `--${boundary}--\r\n`;
    return { body, contentType: `multipart/form-data; boundary=${boundary}` };
  }
}

function encodeFormBody(data) {
  const form = new FormBody();
  for (const [key, value] of Object.entries(data || {})) {
    if (value === null || value === undefined) continue;
    form.append(key, typeof value === 'object' ? JSON.stringify(value) : String(value));
  }
  return form;
}

// Returns {body?, bodyBase64?, contentType?} for the native request.
function encodeRequestBody(body) {
  if (!body) return {};
  if (typeof body === 'string') return { body };
  if (body instanceof FormBody) {
    const { body: text, contentType } = body.encode();
    return { body: text, contentType };
  }
  const bytes = typedArrayBytes(body);
  if (bytes) return { bodyBase64: bytesToBase64(bytes) };
  if (typeof body === 'object') {
    // undici sends any iterable (arrays included) chunk by chunk, and each
    // chunk must be a string or bytes: an array of strings is concatenated,
    // anything else fails as in Node.
    if (Symbol.iterator in Object(body)) {
      let text = '';
      for (const chunk of body) {
        if (typeof chunk === 'string') text += chunk;
        else if (typedArrayBytes(chunk)) text += utf8Decode(typedArrayBytes(chunk));
        else throw invalidChunkType(chunk);
      }
      return { body: text };
    }
    return { body: JSON.stringify(body) };
  }
  throw new Error('Unsupported body type');
}

// Node's ERR_INVALID_ARG_TYPE for a body chunk that is not a string/bytes.
function invalidChunkType(v) {
  let received;
  if (v === null) received = 'null';
  else if (v === undefined) received = 'undefined';
  else if (typeof v === 'function') received = `function ${v.name}`;
  else if (typeof v === 'object') received = `an instance of ${v.constructor && v.constructor.name ? v.constructor.name : 'Object'}`;
  else {
    let shown = typeof v === 'string' ? `'${v}'` : String(v);
    if (shown.length > 28) shown = `${shown.slice(0, 25)}...`;
    received = `type ${typeof v} (${shown})`;
  }
  const e = new TypeError(`The "string" argument must be of type string or an instance of Buffer or ArrayBuffer. Received ${received}`);
  e.code = 'ERR_INVALID_ARG_TYPE';
  return e;
}

function headerPairs(headers) {
  const pairs = [];
  for (const key of Object.keys(headers || {})) {
    const v = headers[key];
    if (v === undefined || v === null) continue;
    if (Array.isArray(v)) for (const item of v) pairs.push([key, String(item)]);
    else pairs.push([key, String(v)]);
  }
  return pairs;
}

// Node's TLS options that the native client understands: `ca` (replaces the
// default roots), `rejectUnauthorized: false`, `cert` + `key` (PEM).
function nativeTls(tls) {
  if (!isObjectLike(tls)) return undefined;
  const out = {};
  const pem = v => (typeof v === 'string' ? v : typedArrayBytes(v) ? utf8Decode(typedArrayBytes(v)) : undefined);
  if (tls.ca !== undefined) {
    const list = (Array.isArray(tls.ca) ? tls.ca : [tls.ca]).map(pem).filter(x => x !== undefined);
    if (list.length) out.ca = list;
  }
  if (tls.rejectUnauthorized === false) out.rejectUnauthorized = false;
  if (pem(tls.cert) && pem(tls.key)) {
    out.cert = pem(tls.cert);
    out.key = pem(tls.key);
  }
  return Object.keys(out).length ? out : undefined;
}

const REDIRECT_STATUSES = [300, 301, 302, 303, 304, 305, 307, 308];

// Failures of the native client. Socket-level errors (refused, reset, DNS)
// come from Node's core in OpenFn, outside any adaptor frame, so the runtime
// reports them as JobError: they are rethrown untouched (thrown from native
// code, they carry no adaptor frame either). undici's own errors (timeouts)
// are AdaptorErrors there, so they are re-created here, inside adaptor code,
// with the own properties undici sets (name, code, message).
const SOCKET_ERROR_CODES = ['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND'];

function networkError(e) {
  if (!e || SOCKET_ERROR_CODES.includes(e.code)) return e;
  const err = new Error(e.message !== undefined ? e.message : String(e));
  if (e.name && e.name !== 'Error') err.name = e.name;
  if (e.code) err.code = e.code;
  if (/^UND_ERR_/.test(e.code || '')) err.message = e.message;
  return err;
}

// One exchange, following up to `maxRedirections` redirects like undici's
// redirect interceptor (without a limit, 3xx responses are returned).
async function sendWithRedirects(method, url, headers, encoded, timeout, maxRedirections, responseType, tls) {
  const httpRequest = requireHost('httpRequest');
  let currentUrl = url;
  let currentMethod = method;
  let currentBody = encoded;
  let pairs = headers;
  let remaining = maxRedirections || 0;
  for (;;) {
    let res;
    try {
      res = await httpRequest({
        method: currentMethod,
        url: currentUrl,
        headers: pairs,
        body: currentBody.body,
        bodyBase64: currentBody.bodyBase64,
        timeout,
        responseType,
        tls,
      });
    } catch (e) {
      throw networkError(e);
    }
    const location = res.headers.location;
    if (remaining > 0 && [300, 301, 302, 303, 307, 308].includes(res.status) && location) {
      remaining--;
      const next = requireHost('urlParse')(String(location), currentUrl);
      const sameOrigin = next.origin === parseURL(currentUrl).origin;
      let removeContent = false;
      if (res.status === 303 && currentMethod !== 'HEAD') {
        currentMethod = 'GET';
        currentBody = {};
        removeContent = true;
      } else if ((res.status === 301 || res.status === 302) && currentMethod === 'POST') {
        currentMethod = 'GET';
        currentBody = {};
        removeContent = true;
      }
      pairs = pairs.filter(([k]) => {
        const lk = k.toLowerCase();
        if (lk === 'host') return false;
        if (removeContent && lk.startsWith('content-')) return false;
        if (!sameOrigin && (lk === 'authorization' || lk === 'cookie' || lk === 'proxy-authorization')) return false;
        return true;
      });
      currentUrl = next.href;
      continue;
    }
    return res;
  }
}

function readResponseBody(res, parseAs) {
  let contentLength = -1;
  if ('content-length' in res.headers) contentLength = parseInt(res.headers['content-length'], 10);
  const contentType = res.headers['content-type'];
  if (contentLength === 0 || !contentType || res.status === 204) return undefined;
  try {
    switch (parseAs) {
      case 'json':
        return JSON.parse(res.body);
      case 'text':
        return res.body;
      case 'stream':
        return res.body;
      case 'base64':
        return res.body;
      default:
        return contentType && contentType.includes('application/json') ? JSON.parse(res.body) : res.body;
    }
  } catch (error) {
    return throwError(res.status, {
      description: 'Error parsing the response body',
      parseAs,
      contentType,
      bodyLength: contentLength,
      // QuickJS appends " (line L column C)" to what V8 reports
      error: String(error.message).replace(/ \(line \d+ column \d+\)$/, ''),
    });
  }
}

function assertOK(res, parsedBody, errorMap, fullUrl, method, startTime) {
  if (errorMap === false) return;
  const map = errorMap || {};
  const errMapMessage = map[res.status];
  const isError = typeof errMapMessage === 'boolean' ? errMapMessage : errMapMessage || res.status >= 400;
  if (isError) {
    const statusText = getReasonPhrase(res.status);
    const defaultErrorMessage = `${method} to ${fullUrl} returned ${res.status}: ${statusText}`;
    const duration = Date.now() - startTime;
    const response = responseForCallbacks(res, parsedBody);
    const errMessage = typeof errMapMessage === 'function' ? errMapMessage(response) : errMapMessage || defaultErrorMessage;
    const error = new Error(errMessage);
    error.statusCode = res.status;
    error.statusMessage = statusText;
    error.url = fullUrl;
    error.duration = duration;
    error.method = method;
    error.body = parsedBody;
    error.headers = res.headers;
    throw error;
  }
}

function responseForCallbacks(res, body) {
  return { statusCode: res.status, statusMessage: getReasonPhrase(res.status), headers: res.headers, body };
}

async function commonRequest(method, fullUrlOrPath, options = {}) {
  const startTime = Date.now();
  const { url, baseUrl, path, query: urlQuery } = parseUrl(fullUrlOrPath, options.baseUrl);
  const {
    headers = {},
    query: optionQuery = {},
    body,
    errors = {},
    timeout = 3e5,
    parseAs = 'auto',
    maxRedirections,
    throwOnUnhandledRedirect = true,
    tls,
  } = options;
  const queryParams = { ...optionQuery, ...urlQuery };
  const qs = querystringStringify(queryParams);
  const target = `${baseUrl}${path}${qs ? `?${qs}` : ''}`;
  const encoded = encodeRequestBody(body);
  // undici sends `content-length: 0` for bodyless methods that expect one
  if (encoded.body === undefined && encoded.bodyBase64 === undefined && ['PUT', 'POST', 'PATCH'].includes(String(method).toUpperCase())) {
    encoded.body = '';
  }
  const pairs = headerPairs(headers);
  if (encoded.contentType && !pairs.some(([k]) => k.toLowerCase() === 'content-type')) {
    pairs.push(['content-type', encoded.contentType]);
  }
  const res = await sendWithRedirects(method, target, pairs, encoded, timeout, maxRedirections, parseAs === 'base64' ? 'base64' : 'text', nativeTls(tls));
  const statusText = getReasonPhrase(res.status);
  if (errors !== false) {
    const map = errors || {};
    const mapped = map[res.status];
    const isError = typeof mapped === 'boolean' ? mapped : mapped || res.status >= 400;
    if (isError) {
      assertOK(res, readResponseBody(res), errors, url, method, startTime);
    }
  }
  const hasRedirectStatus = REDIRECT_STATUSES.includes(res.status);
  if (hasRedirectStatus && maxRedirections === undefined && throwOnUnhandledRedirect) {
    throwError(res.status, {
      statusMessage: statusText,
      description: "Response has redirect status, but 'maxRedirections' is not set",
      fix: `Set 'maxRedirections' to enable auto-redirect.Example: request('GET', '${fullUrlOrPath}', { maxRedirections: 5 })`,
    });
  }
  const responseBody = readResponseBody(res, parseAs);
  const duration = Date.now() - startTime;
  const requestResponse = {
    url,
    method,
    statusCode: res.status,
    statusMessage: statusText,
    headers: res.headers,
    body: responseBody,
    duration,
  };
  if (Object.keys(queryParams).length > 0) requestResponse.query = queryParams;
  return requestResponse;
}

const utilGet = (url, options) => commonRequest('GET', url, options);
const utilPost = (url, body, options) => commonRequest('POST', url, { body, ...options });
const utilPut = (url, body, options) => commonRequest('PUT', url, { body, ...options });
const utilDel = (url, body, options) => commonRequest('DELETE', url, { body, ...options });

// ---------------------------------------------------------------------------
// Operations (language-common's Adaptor.js API)
// ---------------------------------------------------------------------------

function commonExecute(...operations) {
  return state => {
    const start = Promise.resolve(state);
    return operations.reduce((acc, operation) => acc.then(operation), start);
  };
}

function fn(func) {
  return state => func(state);
}

function alterState(func) {
  return fn(func);
}

function fnIf(condition, operation) {
  return state => {
    const [resolvedCondition] = expandReferences(state, condition);
    return resolvedCondition ? operation(state) : state;
  };
}

function jsonValue(obj, path) {
  return JSONPath({ path, json: obj })[0];
}

function sourceValue(path) {
  return state => JSONPath({ path, json: state })[0];
}

function source(path) {
  return state => JSONPath({ path, json: state });
}

function dataPath(path) {
  const cleanPath = path.match(/^[$.]*(.+)/)[1];
  return '$.data.'.concat(cleanPath);
}

function dataValue(path) {
  return sourceValue(dataPath(path));
}

function referencePath(path) {
  const cleanPath = path.match(/^[$.]*(.+)/)[1];
  return '$.references'.concat(cleanPath);
}

function lastReferenceValue(path) {
  return sourceValue(referencePath('[0]'.concat('.', path)));
}

function map(path, callback) {
  return async state => {
    const results = [];
    const values = typeof path === 'string' ? source(path)(state) : path;
    let i = 0;
    for (const item of values) {
      results.push(await callback(item, i++, state));
    }
    return { ...state, data: results };
  };
}

function asData(data, state) {
  switch (typeof data) {
    case 'string':
      return source(data)(state);
    case 'object':
      return data;
    case 'function':
      return data(state);
    default:
      return undefined;
  }
}

function each(dataSource, operation) {
  if (!dataSource) throw new TypeError('dataSource argument for each operation is invalid.');
  return state =>
    asData(dataSource, state).reduce((acc, data, index) => {
      if (acc.then) return acc.then(s => operation({ ...s, data, index }));
      return operation({ ...acc, data, index });
    }, state);
}

// language-common 3.3.4: each operation gets a shallow copy; promises are
// awaited in order.
function combineAwaiting(...operations) {
  return state =>
    operations.reduce((acc, operation) => {
      if (acc.then) return acc.then(s => operation({ ...s }));
      return operation({ ...acc });
    }, state);
}

// language-common 3.3.1 (bundled by language-http 7.2.10): each result is
// spread over the state synchronously, so a promise result is not awaited.
function combineMerging(...operations) {
  return state =>
    operations.reduce((acc, operation) => {
      if (acc.then) return acc.then(s => ({ ...s, ...operation(s) }));
      return { ...acc, ...operation(acc) };
    }, state);
}

function join(targetPath, sourcePath, targetKey) {
  return state => source(targetPath)(state).map(i => ({ [targetKey]: sourceValue(sourcePath)(state), ...i }));
}

function field(key, value) {
  return [key, value];
}

function fields(...pairs) {
  return lodashFns.fromPairs(pairs);
}

function merge(dataSource, extra) {
  return state => {
    const initialData = source(dataSource)(state);
    const [additionalData] = expandReferences(state, extra);
    return initialData.map(item => ({ ...item, ...additionalData }));
  };
}

function group(arrayOfObjects, keyPath, callback = s => s) {
  return state => {
    const [resolvedArray, resolvedKeyPath] = expandReferences(state, arrayOfObjects, keyPath);
    const results = lodashFns.groupBy(resolvedArray, item => getPath(item, resolvedKeyPath));
    return callback({ ...state, data: lodashFns.omit(results, [undefined]) });
  };
}

function index() {
  return state => state.index;
}

function arrayToString(arr, separator) {
  // Array.apply(null, arr) as OpenFn, without QuickJS's argument-count limit
  return (isObjectLike(arr) ? Array.from(arr) : Array.apply(null, arr)).join(separator);
}

function toArray(arg) {
  return [].concat(arg);
}

function composeNextState(state, response) {
  if (!state.references) state.references = [];
  return { ...state, data: response, references: [...state.references, state.data] };
}

function humanProper(str) {
  if (typeof str === 'string') {
    return str.replace(/[_-]/g, ' ').replace(/\w\S*/g, txt => txt.charAt(0).toUpperCase() + txt.substr(1).toLowerCase());
  }
  return str;
}

function splitKeys(obj, keys) {
  return Object.keys(obj).reduce(
    ([keep, split], key) => {
      const value = obj[key];
      if (keys.includes(key)) return [keep, { ...split, [key]: value }];
      return [{ ...keep, [key]: value }, split];
    },
    [{}, {}],
  );
}

function scrubEmojis(text, replacementChars) {
  if (!text) return text;
  if (replacementChars == '') { // eslint-disable-line eqeqeq
    adaptorLog('warn', 'Removing characters from a string may create injection vulnerabilities;',
      "It's better to replace than remove.",
      'See https://www.unicode.org/reports/tr36/#Deletion_of_Noncharacters');
  }
  const newChars = replacementChars || replacementChars == '' ? replacementChars : '\uFFFD'; // eslint-disable-line eqeqeq
  const emojis = /(\uFE0F|\u00a9|\u00ae|[\u2000-\u3300]|\ud83c[\ud000-\udfff]|\ud83d[\ud000-\udfff]|\ud83e[\ud000-\udfff])/g;
  return text.replace(emojis, newChars);
}

function chunk(array, chunkSize) {
  const output = [];
  for (let i = 0, len = array.length; i < len; i += chunkSize) output.push(array.slice(i, i + chunkSize));
  return output;
}

const CSV_DEFAULTS = {
  delimiter: ',',
  quote: '"',
  escape: '"',
  columns: true,
  bom: true,
  trim: true,
  ltrim: true,
  rtrim: true,
  chunkSize: Infinity,
  skip_empty_lines: true,
};

function parseCsv(csvData, parsingOptions = {}, callback) {
  return async state => {
    const [resolvedCsvData, resolvedParsingOptions] = expandReferences(state, csvData, parsingOptions);
    const filtered = Object.fromEntries(Object.entries(resolvedParsingOptions || {}).filter(([key]) => key in CSV_DEFAULTS));
    const options = { ...CSV_DEFAULTS, ...filtered };
    if (options.chunkSize < 1) throw new Error('chunkSize must be at least 1');
    let text = resolvedCsvData;
    const bytes = typedArrayBytes(text);
    if (bytes) text = utf8Decode(bytes);
    if (typeof text !== 'string') throw new TypeError('parseCsv: the CSV data must be a string');
    const records = parseCsvText(text, options);
    let result = state;
    for (let i = 0; i < records.length; i += options.chunkSize === Infinity ? records.length : options.chunkSize) {
      const buffer = records.slice(i, options.chunkSize === Infinity ? records.length : i + options.chunkSize);
      result = callback ? await callback(result, buffer) : composeNextState(result, buffer);
    }
    return result;
  };
}

// JSON-schema validation (a subset of ajv's draft-07 keywords).
// Stops at the first failure, as ajv does by default (allErrors: false).
// Keywords are checked in ajv's order: $ref, type, the keywords for any type,
// then those of the data's type.
function validateAgainst(schema, data, path, errors, schemaPath = '#', root = schema) {
  if (schema === true || schema === undefined) return true;
  if (schema === false) {
    errors.push({ instancePath: path, schemaPath, keyword: 'false schema', params: {}, message: 'boolean schema is false' });
    return false;
  }
  const typeOf = v => (v === null ? 'null' : Array.isArray(v) ? 'array' : Number.isInteger(v) ? 'integer' : typeof v);
  const fail = (keyword, message, params = {}) => {
    errors.push({ instancePath: path, schemaPath: `${schemaPath}/${keyword}`, keyword, params, message });
    return false;
  };
  const sub = (subSchema, subData, subPath, subSchemaPath) => validateAgainst(subSchema, subData, subPath, errors, subSchemaPath, root);
  const quiet = (subSchema, subData) => validateAgainst(subSchema, subData, path, [], schemaPath, root);
  if (typeof schema.$ref === 'string') {
    const m = /^#(\/.*)?$/.exec(schema.$ref);
    if (!m) throw new Error(`can't resolve reference ${schema.$ref} from id #`);
    const target = (m[1] || '').split('/').slice(1).reduce((o, k) => (o === undefined ? o : o[k.replace(/~1/g, '/').replace(/~0/g, '~')]), root);
    if (target === undefined) throw new Error(`can't resolve reference ${schema.$ref} from id #`);
    if (!sub(target, data, path, schema.$ref)) return false;
  }
  if (schema.type) {
    const types = Array.isArray(schema.type) ? schema.type : [schema.type];
    const t = typeOf(data);
    const ok = types.some(x => x === t || (x === 'number' && t === 'integer'));
    if (!ok) return fail('type', `must be ${types.join(',')}`, { type: schema.type });
  }
  if (schema.format !== undefined) {
    throw new Error(`unknown format "${schema.format}" ignored in schema at path "${schemaPath}"`);
  }
  if ('const' in schema && !isEqual(schema.const, data)) return fail('const', 'must be equal to constant', { allowedValue: schema.const });
  if (schema.enum && !schema.enum.some(v => isEqual(v, data))) return fail('enum', 'must be equal to one of the allowed values', { allowedValues: schema.enum });
  if (schema.not !== undefined && quiet(schema.not, data)) return fail('not', 'must NOT be valid');
  if (Array.isArray(schema.anyOf)) {
    const branchErrors = [];
    const ok = schema.anyOf.some((sch, i) => validateAgainst(sch, data, path, branchErrors, `${schemaPath}/anyOf/${i}`, root));
    if (!ok) {
      pushAll(errors, branchErrors);
      return fail('anyOf', 'must match a schema in anyOf');
    }
  }
  if (Array.isArray(schema.oneOf)) {
    const passing = [];
    const branchErrors = [];
    schema.oneOf.forEach((sch, i) => {
      if (validateAgainst(sch, data, path, branchErrors, `${schemaPath}/oneOf/${i}`, root)) passing.push(i);
    });
    if (passing.length !== 1) {
      if (!passing.length) pushAll(errors, branchErrors);
      return fail('oneOf', 'must match exactly one schema in oneOf', { passingSchemas: passing.length ? passing.slice(0, 2) : null });
    }
  }
  if (Array.isArray(schema.allOf)) {
    for (let i = 0; i < schema.allOf.length; i++) if (!sub(schema.allOf[i], data, path, `${schemaPath}/allOf/${i}`)) return false;
  }
  if (typeof data === 'number') {
    if (schema.maximum !== undefined && !(data <= schema.maximum)) return fail('maximum', `must be <= ${schema.maximum}`, { comparison: '<=', limit: schema.maximum });
    if (schema.minimum !== undefined && !(data >= schema.minimum)) return fail('minimum', `must be >= ${schema.minimum}`, { comparison: '>=', limit: schema.minimum });
    if (typeof schema.exclusiveMaximum === 'number' && !(data < schema.exclusiveMaximum)) return fail('exclusiveMaximum', `must be < ${schema.exclusiveMaximum}`, { comparison: '<', limit: schema.exclusiveMaximum });
    if (typeof schema.exclusiveMinimum === 'number' && !(data > schema.exclusiveMinimum)) return fail('exclusiveMinimum', `must be > ${schema.exclusiveMinimum}`, { comparison: '>', limit: schema.exclusiveMinimum });
    if (schema.multipleOf !== undefined) {
      const q = data / schema.multipleOf;
      if (Math.abs(Math.round(q) - q) > 1e-9) return fail('multipleOf', `must be multiple of ${schema.multipleOf}`, { multipleOf: schema.multipleOf });
    }
  }
  if (typeof data === 'string') {
    const len = Array.from(data).length;
    if (schema.maxLength !== undefined && len > schema.maxLength) return fail('maxLength', `must NOT have more than ${schema.maxLength} characters`, { limit: schema.maxLength });
    if (schema.minLength !== undefined && len < schema.minLength) return fail('minLength', `must NOT have fewer than ${schema.minLength} characters`, { limit: schema.minLength });
    if (schema.pattern !== undefined && !new RegExp(schema.pattern, 'u').test(data)) return fail('pattern', `must match pattern "${schema.pattern}"`, { pattern: schema.pattern });
  }
  if (Array.isArray(data)) {
    if (schema.maxItems !== undefined && data.length > schema.maxItems) return fail('maxItems', `must NOT have more than ${schema.maxItems} items`, { limit: schema.maxItems });
    if (schema.minItems !== undefined && data.length < schema.minItems) return fail('minItems', `must NOT have fewer than ${schema.minItems} items`, { limit: schema.minItems });
    if (schema.items !== undefined && !Array.isArray(schema.items)) {
      for (let i = 0; i < data.length; i++) if (!sub(schema.items, data[i], `${path}/${i}`, `${schemaPath}/items`)) return false;
    }
    if (schema.uniqueItems === true) {
      // ajv's two loops: by value for scalar item types, pairwise otherwise
      const itemTypes = schema.items && schema.items.type !== undefined ? [].concat(schema.items.type) : [];
      const scalar = itemTypes.length > 0 && itemTypes.every(t => ['number', 'integer', 'string', 'boolean', 'null'].includes(t));
      if (scalar) {
        const seen = new Map();
        for (let i = data.length - 1; i >= 0; i--) {
          const key = `${typeof data[i]}:${data[i]}`;
          if (seen.has(key)) {
            const j = seen.get(key);
            return fail('uniqueItems', `must NOT have duplicate items (items ## ${j} and ${i} are identical)`, { i, j });
          }
          seen.set(key, i);
        }
      } else {
        for (let i = data.length - 1; i > 0; i--) {
          for (let j = i - 1; j >= 0; j--) {
            if (isEqual(data[i], data[j])) return fail('uniqueItems', `must NOT have duplicate items (items ## ${j} and ${i} are identical)`, { i, j });
          }
        }
      }
    }
  }
  if (isPlainObject(data)) {
    const n = Object.keys(data).length;
    if (schema.maxProperties !== undefined && n > schema.maxProperties) return fail('maxProperties', `must NOT have more than ${schema.maxProperties} properties`, { limit: schema.maxProperties });
    if (schema.minProperties !== undefined && n < schema.minProperties) return fail('minProperties', `must NOT have fewer than ${schema.minProperties} properties`, { limit: schema.minProperties });
    for (const req of schema.required || []) {
      if (!hasOwn(data, req)) return fail('required', `must have required property '${req}'`, { missingProperty: req });
    }
    const props = schema.properties || {};
    const patterns = Object.keys(schema.patternProperties || {});
    if (schema.additionalProperties !== undefined && schema.additionalProperties !== true) {
      for (const k of Object.keys(data)) {
        if (hasOwn(props, k) || patterns.some(pt => new RegExp(pt, 'u').test(k))) continue;
        if (schema.additionalProperties === false) return fail('additionalProperties', 'must NOT have additional properties', { additionalProperty: k });
        if (!sub(schema.additionalProperties, data[k], `${path}/${k}`, `${schemaPath}/additionalProperties`)) return false;
      }
    }
    for (const k of Object.keys(props)) {
      if (hasOwn(data, k) && !sub(props[k], data[k], `${path}/${k}`, `${schemaPath}/properties/${k}`)) return false;
    }
    for (const pt of patterns) {
      const re = new RegExp(pt, 'u');
      for (const k of Object.keys(data)) {
        if (re.test(k) && !sub(schema.patternProperties[pt], data[k], `${path}/${k}`, `${schemaPath}/patternProperties/${encodeURIComponent(pt.replace(/~/g, '~0').replace(/\//g, '~1'))}`)) return false;
      }
    }
  }
  return true;
}

const schemaCache = {};

function validate(schema = 'schema', data = 'data') {
  return async state => {
    if (!state.validationErrors) state.validationErrors = [];
    const [d] = expandReferences(state, data);
    const resolvedData = typeof d === 'string' ? JSONPath({ path: d, json: state })[0] : d;
    let [resolvedSchema] = expandReferences(state, schema);
    if (typeof resolvedSchema === 'string') {
      if (/^https?:\/\//.test(resolvedSchema)) {
        const res = await commonRequest('GET', resolvedSchema, { parseAs: 'json' });
        resolvedSchema = res.body;
      } else {
        resolvedSchema = JSONPath({ path: resolvedSchema, json: state })[0];
      }
    }
    // OpenFn caches the compiled schema under its $id, or "schema" when it
    // has none, for the rest of the run: a later schema without $id is
    // ignored in favour of the first one. Reproduced.
    const schemaId = (resolvedSchema && resolvedSchema.$id) || 'schema';
    if (!hasOwn(schemaCache, schemaId)) schemaCache[schemaId] = resolvedSchema;
    const errors = [];
    if (!validateAgainst(schemaCache[schemaId], resolvedData, '', errors)) {
      state.validationErrors.push({ data: state.data, errors });
    }
    return state;
  };
}

let cursorStart;
let cursorKey = 'cursor';

function cursor(value, options = {}) {
  return state => {
    const { format, ...optionsWithoutFormat } = options;
    const [resolvedValue, resolvedOptions] = expandReferences(state, value, optionsWithoutFormat);
    const { defaultValue, key } = resolvedOptions;
    if (key) cursorKey = key;
    if (!cursorStart) cursorStart = new Date();
    const c = resolvedValue ?? defaultValue;
    if (typeof c === 'string') {
      const date = parseDate(c, cursorStart);
      if (date instanceof Date) {
        state[cursorKey] = format?.(date) ?? date.toISOString();
        const formatted = format ? state[cursorKey] : dateFormat(date, 'HH:mm d MMM yyyy (OOO)');
        adaptorLog('info', `Setting ${cursorKey} "${c}" to: ${formatted}`);
        return state;
      }
    }
    state[cursorKey] = format?.(c) ?? c;
    adaptorLog('info', `Setting ${cursorKey} to:`, state[cursorKey]);
    return state;
  };
}

function assert(expression, errorMessage) {
  return state => {
    const [resolvedValue, resolvedErrorMessage] = expandReferences(state, expression, errorMessage);
    if (!resolvedValue) {
      throw new Error(resolvedErrorMessage || `assertion statement failed with ${resolvedValue}`);
    }
    return state;
  };
}

function log(...args) {
  return state => {
    const [resolvedArgs] = expandReferences(state, args);
    adaptorLog('info', ...resolvedArgs);
    return state;
  };
}

function debug(...args) {
  return state => {
    const [resolvedArgs] = expandReferences(state, args);
    adaptorLog('debug', ...resolvedArgs);
    return state;
  };
}

function as(key, operation) {
  return async state => {
    const [resolvedKey] = expandReferences(state, key);
    const prevState = state.data;
    const result = await operation(state);
    const { data, ...rest } = result;
    state[resolvedKey] = data;
    state.data = prevState;
    return { ...state, ...rest };
  };
}

// beta.each: like each, but restores the original data afterwards.
function betaEach(dataSource, operation) {
  if (!dataSource) throw new TypeError('dataSource argument for each operation is invalid.');
  return prevState => {
    const items = asData(dataSource, prevState);
    const nextState = items.reduce((acc, data, i) => {
      if (acc.then) return acc.then(s => operation({ ...s, data, index: i }));
      return operation({ ...acc, data, index: i });
    }, prevState);
    if (nextState.then) return nextState.then(s => ({ ...s, data: prevState.data }));
    return { ...nextState, data: prevState.data };
  };
}

const beta = Object.freeze({ __proto__: null, each: betaEach });

// language-common's `http` namespace: absolute URLs, results to data and
// response, references untouched.
const httpHelpers = {
  json() { setPath(this, 'headers.Content-Type', 'application/json'); return this; },
  basic(username, password) { setPath(this, 'headers.Authorization', `Basic ${toBase64(`${username}:${password}`)}`); return this; },
  bearer(token) { setPath(this, 'headers.Authorization', `Bearer ${token}`); return this; },
  oauth(token) { setPath(this, 'headers.Authorization', `Bearer ${token}`); return this; },
};

function httpOptions(opts = {}) {
  for (const h of Object.keys(httpHelpers)) {
    Object.defineProperty(opts, h, { enumerable: false, value: httpHelpers[h] });
  }
  return opts;
}

function httpReq(method, url, options) {
  return async state => {
    const [resolvedMethod, resolvedUrl, resolvedOptions] = expandReferences(state, method, url, options);
    const { body, ...responseWithoutBody } = await commonRequest(resolvedMethod, resolvedUrl, resolvedOptions);
    return { ...state, response: responseWithoutBody, data: body };
  };
}

const http = Object.freeze({
  __proto__: null,
  request: httpReq,
  get: (url, options) => httpReq('GET', url, options),
  post: (url, data, options) => httpReq('POST', url, { body: data, ...options }),
  options: httpOptions,
});

const commonUtil = Object.freeze({
  __proto__: null,
  ERROR_ABSOLUTE_URL,
  ERROR_URL_MISMATCH,
  assertRelativeUrl,
  decode,
  del: utilDel,
  encode,
  encodeFormBody,
  expandReferences,
  get: utilGet,
  logResponse,
  makeBasicAuthHeader,
  normalizeOauthConfig,
  parseDate,
  parseUrl,
  post: utilPost,
  put: utilPut,
  request: commonRequest,
  throwError,
  uuid,
});
