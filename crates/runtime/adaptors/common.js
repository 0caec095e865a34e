// @openfn/language-common 3.3.4 exports (appended to common-core.js).

const execute = commonExecute;
const combine = combineAwaiting;

export {
  _,
  alterState,
  arrayToString,
  as,
  asData,
  assert,
  beta,
  chunk,
  combine,
  composeNextState,
  cursor,
  dataPath,
  dataValue,
  dateFns,
  debug,
  each,
  execute,
  field,
  fields,
  fn,
  fnIf,
  group,
  http,
  humanProper,
  index,
  join,
  jsonValue,
  lastReferenceValue,
  log,
  map,
  merge,
  parseCsv,
  referencePath,
  scrubEmojis,
  source,
  sourceValue,
  splitKeys,
  toArray,
  commonUtil as util,
  validate,
};

export default {
  alterState, arrayToString, as, asData, assert, chunk, combine, composeNextState, cursor,
  dataPath, dataValue, debug, each, execute, field, fields, fn, fnIf, group, humanProper, index,
  join, jsonValue, lastReferenceValue, log, map, merge, parseCsv, referencePath, scrubEmojis,
  source, sourceValue, splitKeys, toArray, validate, _,
};
