// Calls to the recon-serve HTTP API. URLs are relative, so the viewer also works behind a path prefix.
// Every error body is {"error": code, "detail": message}; it becomes an ApiError with both.

export class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

async function request(method, path, body) {
  const init = { method, headers: { Accept: 'application/json' } };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['Content-Type'] = 'application/json';
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, 'network_error', `the server could not be reached (${err.message})`);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    if (data && typeof data === 'object' && data.error) {
      throw new ApiError(response.status, String(data.error), String(data.detail ?? ''));
    }
    const snippet = text.trim().slice(0, 200) || response.statusText;
    throw new ApiError(response.status, 'http_error', `HTTP ${response.status}: ${snippet}`);
  }
  return data;
}

// A shape query: a File (multipart `file` + options) or a stored shape id (search only).
function shapeForm(file, fields) {
  const form = new FormData();
  form.append('file', file, file.name);
  for (const [key, value] of Object.entries(fields)) {
    if (value !== undefined && value !== null && value !== '') form.append(key, String(value));
  }
  return form;
}

export const api = {
  models: () => request('GET', 'v1/models'),
  ready: () => request('GET', 'readyz').catch((err) => {
    if (err instanceof ApiError && err.status === 503) return { ready: false };
    throw err;
  }),
  classify: (file, { upAxis, k = 5 }) => request('POST', 'v1/classify', shapeForm(file, { up_axis: upAxis, k })),
  segment: (file, { upAxis, nPoints }) =>
    request('POST', 'v1/segment', shapeForm(file, { up_axis: upAxis, n_points: nPoints })),
  // labels go as one JSON-list form field, so a label may contain any character, commas included
  zeroShot: (file, labels, { upAxis }) =>
    request('POST', 'v1/zero-shot', shapeForm(file, { up_axis: upAxis, labels: JSON.stringify(labels) })),
  searchText: (text, k) => request('POST', 'v1/search/text', { text, k }),
  searchByFile: (file, k, { upAxis }) => request('POST', 'v1/search/shape', shapeForm(file, { up_axis: upAxis, k })),
  searchById: (id, k) => request('POST', 'v1/search/shape', { id, k }),
  shape: (id) => request('GET', `v1/shapes/${encodeURIComponent(id)}`),
};
