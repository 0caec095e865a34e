// The executor's JavaScript side, loaded once per run as the module
// `gabbro:glue` (job code cannot import it). It mirrors what OpenFn's runtime
// does around a job: console and timers for the sandbox, the operation
// wrapper, the error classes and their classification, state clean-up, and
// edge conditions. Rust calls the exported functions; see engine/mod.rs.

const NULL_STATE = Symbol('null_state');
const OriginalFunction = Function;
let host = null;

// ------------------------------------------------------------------ logging

function toLoggable(value, seen) {
  if (value === undefined) return 'undefined';
  if (typeof value === 'string') return value;
  if (typeof value === 'function') return `[Function: ${value.name || 'anonymous'}]`;
  if (typeof value === 'bigint') return value.toString();
  if (typeof value === 'symbol') return value.toString();
  if (value instanceof Error) {
    const out = { name: value.name, message: value.message };
    for (const k of Object.keys(value)) out[k] = value[k];
    return out;
  }
  return value;
}

function safeJson(args) {
  const seen = new WeakSet();
  try {
    return JSON.stringify(args.map((a) => toLoggable(a)), (_k, v) => {
      if (typeof v === 'object' && v !== null) {
        if (seen.has(v)) return '[Circular]';
        seen.add(v);
      }
      if (typeof v === 'bigint') return v.toString();
      if (typeof v === 'function') return `[Function: ${v.name || 'anonymous'}]`;
      return v;
    });
  } catch (e) {
    return JSON.stringify(args.map((a) => String(a)));
  }
}

function makeConsole(source) {
  const emit = (level) => (...args) => host.log(level, source, safeJson(args));
  return {
    log: emit('info'),
    info: emit('info'),
    warn: emit('warn'),
    error: emit('error'),
    debug: emit('debug'),
    trace: emit('debug'),
    success: emit('success'),
    always: emit('always'),
  };
}

/// Logging for adaptors (exported by `gabbro:host` as `log(level, ...args)`).
export function adaptorLog(level, ...args) {
  const lvl = level === 'log' ? 'info' : String(level);
  host.log(lvl, 'ADA', safeJson(args));
}

// ------------------------------------------------------------------ Buffer

// OpenFn's sandbox has a `Buffer` whose constructor throws but whose
// `Buffer.from(...)` works; jobs use it for base64 (basic auth headers).
// This is the common subset: utf8, base64, hex, latin1/binary, ascii.
function utf8Encode(str) {
  const out = [];
  for (let i = 0; i < str.length; i++) {
    let c = str.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < str.length) {
      const d = str.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
      } else c = 0xfffd;
    } else if (c >= 0xd800 && c <= 0xdfff) c = 0xfffd;
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
    let c, n;
    if (b < 0x80) { c = b; n = 1; }
    else if (b >= 0xc2 && b < 0xe0) { c = b & 31; n = 2; }
    else if (b >= 0xe0 && b < 0xf0) { c = b & 15; n = 3; }
    else if (b >= 0xf0 && b < 0xf5) { c = b & 7; n = 4; }
    else { out += '\ufffd'; i++; continue; }
    let ok = i + n <= bytes.length;
    for (let k = 1; ok && k < n; k++) {
      if ((bytes[i + k] & 0xc0) !== 0x80) ok = false;
      else c = (c << 6) | (bytes[i + k] & 63);
    }
    if (!ok) { out += '\ufffd'; i++; continue; }
    out += String.fromCodePoint(c);
    i += n;
  }
  return out;
}
const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
function base64Encode(bytes) {
  let out = '';
  for (let i = 0; i < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | ((bytes[i + 1] || 0) << 8) | (bytes[i + 2] || 0);
    out += B64[(n >> 18) & 63] + B64[(n >> 12) & 63];
    out += i + 1 < bytes.length ? B64[(n >> 6) & 63] : '=';
    out += i + 2 < bytes.length ? B64[n & 63] : '=';
  }
  return out;
}
function base64Decode(str) {
  const clean = String(str).replace(/[^A-Za-z0-9+/\-_]/g, '').replace(/-/g, '+').replace(/_/g, '/');
  const out = [];
  let bits = 0, acc = 0;
  for (const ch of clean) {
    acc = (acc << 6) | B64.indexOf(ch);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push((acc >> bits) & 255);
    }
  }
  return out;
}
class Buffer extends Uint8Array {
  static from(value, encoding, length) {
    let bytes;
    if (typeof value === 'string') {
      const enc = String(encoding || 'utf8').toLowerCase();
      if (enc === 'base64' || enc === 'base64url') bytes = base64Decode(value);
      else if (enc === 'hex') {
        bytes = [];
        for (let i = 0; i + 1 < value.length; i += 2) {
          const b = parseInt(value.slice(i, i + 2), 16);
          if (Number.isNaN(b)) break;
          bytes.push(b);
        }
      } else if (enc === 'latin1' || enc === 'binary' || enc === 'ascii') {
        bytes = Array.from(value, (c) => c.charCodeAt(0) & 255);
      } else bytes = utf8Encode(value);
    } else if (value instanceof ArrayBuffer) {
      bytes = new Uint8Array(value, encoding || 0, length);
    } else if (value && typeof value === 'object' && value.type === 'Buffer' && Array.isArray(value.data)) {
      bytes = value.data;
    } else bytes = Array.from(value || []);
    // Build a Buffer without running its (throwing) constructor.
    return Reflect.construct(Uint8Array, [bytes], Buffer);
  }
  static alloc(size, fill) {
    const b = Reflect.construct(Uint8Array, [size], Buffer);
    if (fill !== undefined) b.fill(typeof fill === 'number' ? fill : Buffer.from(String(fill))[0]);
    return b;
  }
  static isBuffer(b) { return b instanceof Buffer; }
  // slice/map/filter make plain Uint8Arrays (the constructor throws).
  static get [Symbol.species]() { return Uint8Array; }
  static byteLength(s, enc) { return typeof s === 'string' ? Buffer.from(s, enc).length : s.byteLength; }
  static concat(list) {
    const total = list.reduce((n, b) => n + b.length, 0);
    const out = Buffer.alloc(total);
    let at = 0;
    for (const b of list) { out.set(b, at); at += b.length; }
    return out;
  }
  constructor() {
    super(0);
    throw new Error('Buffer() is deprecated; use Buffer.from, Buffer.alloc');
  }
  toString(encoding = 'utf8') {
    const enc = String(encoding).toLowerCase();
    if (enc === 'base64') return base64Encode(this);
    if (enc === 'base64url') return base64Encode(this).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
    if (enc === 'hex') return Array.from(this, (b) => b.toString(16).padStart(2, '0')).join('');
    if (enc === 'latin1' || enc === 'binary' || enc === 'ascii') {
      let out = '';
      for (let i = 0; i < this.length; i += 8192) out += String.fromCharCode(...this.subarray(i, i + 8192));
      return out;
    }
    return utf8Decode(this);
  }
  toJSON() { return { type: 'Buffer', data: Array.from(this) }; }
  equals(other) { return this.length === other.length && this.every((b, i) => b === other[i]); }
}

// ------------------------------------------------------------------ sandbox

/// Installs console and timers. `nativeLog(level, source, json)`,
/// `nativeSleep(ms) -> Promise`.
export function install(nativeLog, nativeSleep) {
  host = { log: nativeLog, sleep: nativeSleep };
  const live = new Set();
  let nextId = 1;
  const delay = (ms) => Math.max(0, Number(ms) || 0);
  // A callback that throws is reported as a JOB error line (nothing else
  // would see it: the timer's promise has no handler).
  const call = (cb, args) => {
    if (typeof cb !== 'function') return;
    try {
      cb(...args);
    } catch (e) {
      nativeLog('error', 'JOB', safeJson([`Uncaught error in timer callback: ${e && e.name ? e.name + ': ' : ''}${messageOf(e) || String(e)}`]));
    }
  };
  globalThis.console = makeConsole('JOB');
  globalThis.Buffer = Buffer;
  globalThis.setTimeout = function setTimeout(cb, ms, ...args) {
    const id = nextId++;
    live.add(id);
    nativeSleep(delay(ms)).then(() => {
      if (live.delete(id)) call(cb, args);
    });
    return id;
  };
  globalThis.clearTimeout = function clearTimeout(id) {
    live.delete(id);
  };
  globalThis.setInterval = function setInterval(cb, ms, ...args) {
    const id = nextId++;
    live.add(id);
    const tick = () =>
      nativeSleep(Math.max(1, delay(ms))).then(() => {
        if (live.has(id)) {
          call(cb, args);
          tick();
        }
      });
    tick();
    return id;
  };
  globalThis.clearInterval = globalThis.clearTimeout;
  globalThis.setImmediate = (cb, ...args) => globalThis.setTimeout(cb, 0, ...args);
  globalThis.clearImmediate = globalThis.clearTimeout;
}

/// After the adaptors are loaded: refuse code generation from strings, as
/// OpenFn's sandbox does (`codeGeneration: {strings: false}` → EvalError).
export function lockdown() {
  const refuse = () => {
    throw new EvalError('Code generation from strings disallowed for this context');
  };
  // A method, because a function may not be named `eval` in strict code.
  const evalStub = { eval() { return refuse(); } }.eval;
  const FunctionStub = function Function() { return refuse(); };
  FunctionStub.prototype = OriginalFunction.prototype;
  const protos = [
    OriginalFunction.prototype,
    Object.getPrototypeOf(async function () {}),
    Object.getPrototypeOf(function* () {}),
    Object.getPrototypeOf(async function* () {}),
  ];
  for (const proto of protos) {
    const stub = function () { return refuse(); };
    stub.prototype = proto;
    Object.defineProperty(proto, 'constructor', { value: stub, writable: false, configurable: false });
  }
  Object.defineProperty(globalThis, 'eval', { value: evalStub, writable: false, configurable: false });
  Object.defineProperty(globalThis, 'Function', { value: FunctionStub, writable: false, configurable: false });
}

// ------------------------------------------------------------------ errors (OpenFn's classes)

class RTError extends Error {
  constructor() {
    super();
    this.source = 'runtime';
    this.name = 'Error';
  }
}
class InvalidExportsError extends RTError {
  constructor() {
    super();
    this.severity = 'crash';
    this.name = 'ValidationError';
    this.message = 'Invalid exports in job expression: exports must be an array';
  }
}
class InvalidOperationError extends RTError {
  constructor(idx) {
    super();
    this.severity = 'crash';
    this.name = 'ValidationError';
    this.message = `Invalid operation at statement ${idx}`;
  }
}
class ImportError extends RTError {
  constructor(message) {
    super();
    this.severity = 'crash';
    this.name = 'ImportError';
    this.message = message;
  }
}

const ctorName = (e) => {
  try {
    return (e !== null && e !== undefined && e.constructor && e.constructor.name) || '';
  } catch (_) {
    return '';
  }
};
// QuickJS words some TypeErrors differently from V8; users compare these
// messages with OpenFn's, so report V8's wording.
const v8Wording = (msg) =>
  msg
    .replace(/^cannot read property '(.*)' of (undefined|null)$/, "Cannot read properties of $2 (reading '$1')")
    .replace(/^cannot set property '(.*)' of (undefined|null)$/, "Cannot set properties of $2 (setting '$1')");

const messageOf = (e) => {
  if (typeof e === 'string') return e;
  try {
    if (!e || !e.message) return '';
    const msg = String(e.message);
    return e instanceof TypeError ? v8Wording(msg) : msg;
  } catch (_) {
    return '';
  }
};

// Stack frames: QuickJS writes `    at name (file:line:col)` or `    at file:line:col`.
function frames(stack) {
  const out = [];
  for (const raw of String(stack || '').split('\n')) {
    const line = raw.trim();
    if (!line.startsWith('at ')) continue;
    const m = line.match(/\(([^()]*):(\d+):(\d+)\)$/) || line.match(/^at ([^ ]*):(\d+):(\d+)$/);
    if (m) out.push({ file: m[1], line: Number(m[2]), column: Number(m[3]) });
    else out.push({ file: '', line: NaN, column: NaN });
  }
  return out;
}
const isJob = (f) => f.file.startsWith('job:');
const isAdaptor = (f) => f.file.startsWith('@openfn/');
const isOurs = (f) => f.file.startsWith('gabbro:');
const stackOf = (e) => {
  try {
    return e && typeof e === 'object' ? e.stack : undefined;
  } catch (_) {
    return undefined;
  }
};

// Column shifts of the compiled job (see CompiledJob::column_shifts).
let currentShifts = [];

function userColumn(line, column) {
  let col = column - 1;
  const onLine = currentShifts.filter(([l]) => l === line).sort((a, b) => b[1] - a[1]);
  for (const [, at, len] of onLine) {
    if (col >= at + len) col -= len;
    else if (col >= at) col = at;
  }
  return col + 1;
}

function position(e, jobOnly) {
  for (const f of frames(stackOf(e))) {
    if (jobOnly && !isJob(f)) continue;
    if (!Number.isNaN(f.line)) {
      return isJob(f) ? { line: f.line, column: userColumn(f.line, f.column) } : { line: f.line, column: f.column };
    }
  }
  return undefined;
}

function ownProps(e) {
  const seen = new WeakSet();
  try {
    return JSON.parse(JSON.stringify(e, (_k, v) => {
      if (typeof v === 'object' && v !== null) {
        if (seen.has(v)) return '[Circular]';
        seen.add(v);
      }
      return v;
    })) || {};
  } catch (_) {
    return {};
  }
}

function adaptorError(e, operation) {
  const err = { source: 'runtime', name: 'AdaptorError', severity: 'fail', message: '' };
  if (operation) {
    if (operation.name !== undefined && operation.name !== null) err.operationName = operation.name;
    err.line = operation.line;
  } else {
    const pos = position(e, true);
    if (pos) err.pos = pos;
  }
  const own = typeof e === 'object' && e !== null ? ownProps(e) : {};
  err.details = Object.assign({ message: messageOf(e) }, own);
  err.message = messageOf(e);
  err.__adaptor = true;
  return err;
}

/// What OpenFn's operation wrapper does with a thrown error: an error whose
/// first relevant stack frame is adaptor code becomes an AdaptorError.
function wrapOperation(fn, index, operations) {
  return async (state) => {
    if (state !== null && typeof state === 'object' && state[NULL_STATE] === true) {
      delete state[NULL_STATE];
    }
    let result;
    try {
      result = await fn(state);
    } catch (e) {
      const fs = frames(stackOf(e));
      if (fs.length) {
        const containsJobFrame = fs.some(isJob);
        let first;
        for (const f of fs) {
          if (isOurs(f)) break;
          if (isAdaptor(f) || isJob(f)) {
            first = f;
            break;
          }
        }
        if (first && !isJob(first)) {
          throw adaptorError(e, containsJobFrame ? undefined : operations[index]);
        }
      }
      throw e;
    }
    if (!result) result = { [NULL_STATE]: true };
    return result;
  };
}

function classify(e, stepName) {
  if (e && e.__adaptor === true) {
    delete e.__adaptor;
    return e;
  }
  const name = ctorName(e);
  if (e && e.name === 'ImportError' && e.source === 'runtime') return e;
  if (/RangeError|TypeError/.test(name)) {
    const err = { source: 'runtime', name: 'RuntimeError', severity: 'fail', subtype: name, message: `${name}: ${messageOf(e)}` };
    const pos = position(e, true) || position(e, false);
    if (pos) {
      err.pos = pos;
      err.step = stepName;
    }
    return err;
  }
  let severity;
  try {
    severity = e && e.severity;
  } catch (_) {}
  if (severity === 'crash' || /ReferenceError|SyntaxError/.test(name)) {
    const subtype = e instanceof InvalidOperationError ? 'InvalidOperationError'
      : e instanceof InvalidExportsError ? 'InvalidExportsError' : name;
    return { source: 'runtime', name: 'RuntimeCrash', severity: 'crash', subtype, message: `${subtype}: ${messageOf(e)}` };
  }
  if (name === 'EvalError') {
    return { source: 'runtime', name: 'SecurityError', severity: 'kill', message: 'Illegal eval statement detected' };
  }
  return { source: 'runtime', name: 'JobError', severity: 'fail', message: messageOf(e) };
}

// ------------------------------------------------------------------ steps

const defaultExecute = (...operations) => (state) =>
  operations.reduce((acc, operation) => acc.then(operation), Promise.resolve(state));

/// OpenFn's prepareFinalState: no state for a null state, else remove the
/// given keys and JSON-clone (as a JSON string).
function finalJson(state, remove) {
  if (state === null || state === undefined) return undefined;
  if (typeof state === 'object' && state[NULL_STATE] === true) return undefined;
  if (typeof state === 'object') {
    for (const key of remove) {
      if (Object.prototype.hasOwnProperty.call(state, key)) delete state[key];
    }
  }
  return JSON.stringify(state);
}

/// Runs one step: imports the compiled job module, runs its operations on
/// `state` through the adaptor's `execute`, and returns
/// `{json, error}`: the cleaned output state as JSON text (undefined for no
/// state) and, on failure, `{severity, name, type, message}`.
export async function runStep(moduleName, stepId, stepName, state, meta, remove) {
  const operations = meta.ops;
  currentShifts = meta.shifts || [];
  let result;
  try {
    let ns;
    try {
      ns = await import(moduleName);
    } catch (e) {
      if (messageOf(e).includes('gabbro-import:')) {
        throw new ImportError(messageOf(e).replace(/.*gabbro-import: */, ''));
      }
      throw e;
    }
    const ops = ns.default;
    if (!Array.isArray(ops)) throw new InvalidExportsError();
    ops.forEach((op, idx) => {
      if (typeof op !== 'function') throw new InvalidOperationError(idx);
    });
    const execute = typeof ns.execute === 'function' ? ns.execute : defaultExecute;
    const reducer = execute(...ops.map((op, idx) => wrapOperation(op, idx, operations)));
    result = await reducer(state);
  } catch (e) {
    const error = classify(e, stepName);
    const report = { severity: error.severity, name: error.name, type: error.subtype || error.name, message: error.message };
    if (error.severity !== 'fail') return { json: undefined, error: report };
    let out;
    try {
      const json = finalJson(state, remove);
      out = json === undefined ? {} : JSON.parse(json);
    } catch (_) {
      out = {};
    }
    if (out === null || typeof out !== 'object') out = {};
    if (!out.errors || typeof out.errors !== 'object') out.errors = {};
    out.errors[stepId] = error;
    return { json: JSON.stringify(out), error: report };
  }
  return { json: finalJson(result, remove), error: undefined };
}

// ------------------------------------------------------------------ edges

const edgeFunctions = new Map();

/// Compiles an edge condition (a JS expression over `state`); returns an
/// error message, or undefined when it compiled.
export function compileEdge(key, expression) {
  try {
    edgeFunctions.set(key, new OriginalFunction('state', 'upstreamStepId', `return ${expression}`));
    return undefined;
  } catch (e) {
    return messageOf(e);
  }
}

/// Evaluates a compiled edge on a step's output (JSON text or undefined):
/// `{ok: bool}` or `{error: message}`.
export function evalEdge(key, json, upstreamStepId) {
  try {
    const state = json === undefined ? undefined : JSON.parse(json);
    return { ok: Boolean(edgeFunctions.get(key)(state, upstreamStepId)) };
  } catch (e) {
    return { error: messageOf(e) };
  }
}

/// `defer` for compiled promise chains (served as `gabbro:runtime`).
export function defer(fn, complete = (p) => p, error = (e, _state) => {
  throw e;
}) {
  return (state) => {
    try {
      return complete(Promise.resolve(fn(state)).catch((e) => error(e, state)));
    } catch (e) {
      return error(e, state);
    }
  };
}
