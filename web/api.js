// The HTTP API, as a client sees it: JSON in and out, bearer tokens, RFC 9457
// problems, and the refresh-token rotation a client must follow.
//
// Everything here uses only the documented API (docs/openapi.json,
// docs/errors.md). Read this file first if you write a client of your own:
//
// - Every request carries `Authorization: Bearer <access token>`.
// - An access token is short-lived. When a call answers 401 the client
//   exchanges its refresh token (POST /v1/auth/refresh) ONCE and retries.
//   Refresh tokens rotate: each refresh returns a new pair and the old refresh
//   token is dead; presenting it again revokes the whole device session, so
//   two refreshes must never run at the same time (see `refreshOnce`).
// - Errors are `application/problem+json` with a stable `code`; show the
//   `detail` (or `title`) to the person, branch on `code` in code.
// - 429 and 503 carry `Retry-After`; idempotent calls may be retried after it.

/** An error answer of the API (an RFC 9457 problem), or the network failing. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status; // HTTP status; 0 when the network failed
    this.code = problem.code || "network-error"; // stable kind: branch on this
    this.problem = problem; // the whole problem body (errors[], retry_after, ...)
  }

  /** True when the same request may succeed later (network down, 503, 429). */
  get retryable() {
    return this.status === 0 || this.status === 503 || this.status === 429;
  }
}

/** Where a signed-in session keeps its tokens: this tab only (sessionStorage). */
const SESSION_KEY = "whatschat.session";

export class Api {
  /**
   * @param {string} base the API origin ("" for the page's own origin)
   * @param {(session: object|null) => void} onSession called when the session
   *   changes (login, refresh, logout, or the refresh token being rejected)
   */
  constructor(base = "", onSession = () => {}) {
    this.base = base;
    this.onSession = onSession;
    this.session = loadSession(); // {access_token, refresh_token, user, ...} or null
    this._refreshing = null; // the in-flight refresh, shared by every caller
  }

  get user() {
    return this.session ? this.session.user : null;
  }

  get accessToken() {
    return this.session ? this.session.access_token : null;
  }

  // --- accounts ----------------------------------------------------------

  async register(username, displayName, password) {
    const answer = await this.request("POST", "/v1/auth/register", {
      body: { username, display_name: displayName, password },
      auth: false,
    });
    this._setSession(answer);
    return answer;
  }

  async login(username, password) {
    const answer = await this.request("POST", "/v1/auth/login", {
      body: { username, password, device_name: deviceName() },
      auth: false,
    });
    this._setSession(answer);
    return answer;
  }

  async logout() {
    const session = this.session;
    this._setSession(null);
    if (session && session.refresh_token) {
      // Revokes this device's refresh family; ignore failures (we forget it anyway).
      await this.request("POST", "/v1/auth/logout", {
        body: { refresh_token: session.refresh_token },
        auth: false,
      }).catch(() => {});
    }
  }

  /**
   * Exchange the refresh token for a new pair, at most one exchange at a time:
   * concurrent callers (several 401s at once, the gateway reconnecting) share
   * the same promise, because a rotated refresh token must never be reused.
   */
  refreshOnce() {
    if (!this._refreshing) {
      const token = this.session && this.session.refresh_token;
      this._refreshing = (async () => {
        if (!token) throw new ApiError(401, { code: "unauthorized", title: "Signed out" });
        try {
          const answer = await this.request("POST", "/v1/auth/refresh", {
            body: { refresh_token: token },
            auth: false,
          });
          // A refresh answer may omit the user; keep the one we have.
          this._setSession({ user: this.user, ...answer });
          return answer;
        } catch (error) {
          if (error.status === 401) this._setSession(null); // family revoked or expired
          throw error;
        }
      })().finally(() => {
        this._refreshing = null;
      });
    }
    return this._refreshing;
  }

  // --- the generic call ----------------------------------------------------

  /**
   * One API call. Returns the parsed JSON body (null for 204), throws ApiError.
   * With `auth` (the default) a 401 triggers one refresh and one retry.
   */
  async request(method, path, { body, query, auth = true, retried = false } = {}) {
    let url = this.base + path;
    if (query) {
      const params = new URLSearchParams();
      for (const [key, value] of Object.entries(query)) {
        if (value !== undefined && value !== null) params.set(key, String(value));
      }
      const text = params.toString();
      if (text) url += `?${text}`;
    }
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (auth && this.accessToken) headers.Authorization = `Bearer ${this.accessToken}`;
    let response;
    try {
      response = await fetch(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (error) {
      throw new ApiError(0, { code: "network-error", title: "The server cannot be reached" });
    }
    if (response.status === 401 && auth && !retried && this.session) {
      await this.refreshOnce();
      return this.request(method, path, { body, query, auth, retried: true });
    }
    if (response.status === 204) return null;
    const type = response.headers.get("Content-Type") || "";
    const data = type.includes("json") ? await response.json().catch(() => ({})) : {};
    if (!response.ok) {
      const problem = { ...data };
      const retryAfter = response.headers.get("Retry-After");
      if (retryAfter && problem.retry_after === undefined) problem.retry_after = Number(retryAfter);
      throw new ApiError(response.status, problem);
    }
    return data;
  }

  _setSession(answer) {
    if (answer && answer.access_token) {
      this.session = {
        access_token: answer.access_token,
        refresh_token: answer.refresh_token,
        expires_at: Date.now() + 1000 * (answer.expires_in || 0),
        user: answer.user || (this.session && this.session.user) || null,
      };
    } else {
      this.session = null;
    }
    saveSession(this.session);
    this.onSession(this.session);
  }

  /** Replace the stored user (after PATCH /v1/me). */
  setUser(user) {
    if (!this.session) return;
    this.session = { ...this.session, user };
    saveSession(this.session);
  }
}

function loadSession() {
  try {
    return JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
  } catch {
    return null;
  }
}

function saveSession(session) {
  if (session) sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  else sessionStorage.removeItem(SESSION_KEY);
}

/** A human name for this device in "logged-in devices" lists. */
function deviceName() {
  const agent = navigator.userAgent;
  const browser = /Firefox\//.test(agent) ? "Firefox" : /Chrom/.test(agent) ? "Chromium" : "Browser";
  return `${browser} (web client)`;
}
