// @openfn/language-http 7.2.10 (appended to common-core.js). 7.2.10 bundles
// language-common 3.3.1: no `_` export and a `combine` that merges results
// without awaiting them.

const combine = combineMerging;

// Seeds references and data, then runs the operations on a shallow copy of
// the input state (so top-level keys set before a failure are lost).
function execute(...operations) {
  const initialState = { references: [], data: null };
  return state => commonExecute(...operations)({ ...initialState, ...state });
}

function addAuth(configuration, headers) {
  if (headers.Authorization) return;
  const { username, password, access_token } = configuration ?? {};
  if (access_token) {
    Object.assign(headers, { Authorization: `Bearer ${access_token}` });
  } else if (username && password) {
    Object.assign(headers, makeBasicAuthHeader(username, password));
  }
}

function getTLSOptions(state, requestOptions) {
  const { tls: tlsConfig } = state.configuration || {};
  return requestOptions.tls ?? requestOptions.agentOptions ?? tlsConfig;
}

function assertUrl(pathOrUrl, baseUrl) {
  if (!baseUrl && pathOrUrl && !/^https?:\/\//.test(pathOrUrl)) {
    const e = new Error('UNEXPECTED_RELATIVE_URL');
    e.code = 'UNEXPECTED_RELATIVE_URL';
    e.description = "You passed a relative URL but didn't set baseUrl";
    e.url = pathOrUrl;
    e.fix = `Set the baseUrl on state.configuration or use an absolute URL, like https://example.com/api/${pathOrUrl}`;
    throw e;
  }
  if (!baseUrl && !pathOrUrl) {
    const e = new Error('NO_URL');
    e.code = 'NO_URL';
    e.description = 'No URL provided';
    e.fix = 'Make sure to pass a URL string into the request. You may need to set a baseURL on state.configuration.';
    throw e;
  }
}

const CONTENT_TYPES = {
  xml: 'application/xml',
  json: 'application/json',
  string: 'text/plain',
};

function httpRequestOperation(method, path, params) {
  return state => {
    const [resolvedPath, resolvedParams = {}] = expandReferences(state, path, params);
    let { body, contentType = 'json', headers = {}, parseAs } = resolvedParams;
    const contentTypeHeader = Object.keys(headers).find(key => key.toLowerCase() === 'content-type');
    if (contentType === 'form') {
      delete headers[contentTypeHeader];
      headers = { ...headers };
      body = encodeFormBody(body);
    } else if (contentTypeHeader) {
      headers = { ...headers };
    } else {
      headers = { ...headers, 'Content-Type': CONTENT_TYPES[contentType] || 'application/json' };
    }
    const baseUrl = state.configuration?.baseUrl;
    assertUrl(resolvedPath, baseUrl);
    if (baseUrl) addAuth(state.configuration, headers);
    const maxRedirections = resolvedParams.maxRedirections ?? (resolvedParams.followAllRedirects === false ? 0 : 5);
    const tls = getTLSOptions(state, resolvedParams);
    if (resolvedParams.agentOptions) {
      adaptorLog('warn', 'WARNING: The `agentOptions` option has been deprecated. Add `tls` to state.configuration instead.');
    }
    const options = { ...resolvedParams, headers, baseUrl, body, tls, maxRedirections, parseAs };
    return commonRequest(method, resolvedPath, options)
      .then(response => {
        const { body: responseBody, ...responseWithoutBody } = response;
        logResponse(response);
        return { ...composeNextState(state, responseBody), response: responseWithoutBody };
      })
      .catch(err => {
        logResponse(err);
        throw err;
      });
  };
}

function request(method, path, options) {
  return httpRequestOperation(method, path, options);
}

function get(path, options) {
  return httpRequestOperation('GET', path, options);
}

function post(path, data, options) {
  return httpRequestOperation('POST', path, { body: data, ...options });
}

function put(path, data, options) {
  return httpRequestOperation('PUT', path, { body: data, ...options });
}

function patch(path, data, options) {
  return httpRequestOperation('PATCH', path, { body: data, ...options });
}

function del(path, options) {
  return httpRequestOperation('DELETE', path, options);
}

// parseXML needs an HTML/XML DOM (cheerio in OpenFn), which gabbro does not
// ship: it fails with a clear message.
function xmlParser(body, _script) {
  return state => {
    expandReferences(state, body);
    throw new Error('parseXML is not supported by gabbro\'s language-http (no XML/HTML parser is bundled)');
  };
}

function parseXML(data, script) {
  return xmlParser({ body: data }, script);
}

const util = Object.freeze({
  __proto__: null,
  CONTENT_TYPES,
  decode,
  encode,
  getTLSOptions,
  request: httpRequestOperation,
  uuid,
  xmlParser,
});

export {
  alterState,
  arrayToString,
  as,
  chunk,
  combine,
  cursor,
  dataPath,
  dataValue,
  dateFns,
  del,
  each,
  execute,
  field,
  fields,
  fn,
  fnIf,
  get,
  group,
  humanProper,
  lastReferenceValue,
  map,
  merge,
  parseCsv,
  parseXML,
  patch,
  post,
  put,
  request,
  scrubEmojis,
  sourceValue,
  splitKeys,
  toArray,
  util,
};

export default {
  alterState, arrayToString, as, chunk, combine, cursor, dataPath, dataValue, dateFns, del, each,
  execute, field, fields, fn, fnIf, get, group, humanProper, lastReferenceValue, map, merge,
  parseCsv, parseXML, patch, post, put, request, scrubEmojis, sourceValue, splitKeys, toArray,
};
