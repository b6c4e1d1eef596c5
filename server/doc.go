// Package server is tokenbroker's HTTP API (the route table in README.md):
// the connection routes, API-key authentication and the proxy that calls a
// provider's API with a connection's token.
//
// # Routes
//
//	POST   /v1/connections                 admin          import a connection (201; 409 already_exists)
//	GET    /v1/connections                 admin          list: ?provider= &status= &limit= &after=
//	GET    /v1/connections/{id}            admin, tokens  status, never tokens
//	GET    /v1/connections/{id}/token      admin, tokens  a valid access token (Cache-Control: no-store)
//	POST   /v1/connections/{id}/token      admin, tokens  report a rejected token ({"stale_token"}); a valid one back
//	POST   /v1/connections/{id}/refresh    admin          refresh now
//	DELETE /v1/connections/{id}            admin          delete, revoking at the provider where it can
//	ANY    /v1/proxy/{id}/{path...}        admin, tokens  call the provider's API with the token
//	GET    /healthz, /readyz               no key         process alive; ready to serve
//
// Errors are {"error":{"code":"…","message":"…"}}, marked with a
// Tokenbroker-Error header carrying the code, so that a proxy caller can
// tell tokenbroker's answer from the provider's. The codes a caller can
// act on: unauthenticated (401, with a WWW-Authenticate: Bearer challenge),
// forbidden (403), not_found (404), already_exists (409), invalid_request
// (400, naming the field or parameter; 413 for an oversized body),
// reauth_required (409: a person must reconnect), provider_unavailable
// (503 with Retry-After; also when the database is unreachable); and
// method_not_allowed (405), bad_gateway (502, proxy only), internal (500,
// details in the log only).
//
// The provider's own error text reaches admin keys only; tokens-scope keys
// get the error code and a fixed sentence. No message carries a token.
//
// # Authentication
//
// Every route but /healthz and /readyz needs "Authorization: Bearer <key>".
// Keys are "tbk_" followed by 32 random bytes in base64url
// ([GenerateAPIKey]); only their SHA-256 is stored ([HashAPIKey]). A
// presented key is hashed, looked up by hash and compared in constant time.
// A key's role says which routes it may call (the route table in
// server.go): "admin" everything; "tokens" a connection's status, its token
// and the proxy; "proxy" the status and the proxy, never a raw token;
// "connect" connect sessions. Other routes answer 403 forbidden. A key may
// also be limited to connection-id patterns and providers ([KeySpec]); a
// connection outside them is answered exactly as a missing one (404), on
// every route (scope.go, docs/security.md).
//
// Successful lookups are cached in memory for [Options.KeyCacheTTL]
// (default 10 seconds, at most 1024 keys), so the token and proxy routes do
// not query the database on every call. [Server.ForgetKeys] drops the
// cache; the app calls it when PostgreSQL announces a revocation.
//
// Every token hand-out, proxied call, refresh, import, delete and connect
// is passed to [Options.Audit] (audit.go), which must not block.
//
// # Proxy
//
// /v1/proxy/{id}/{path...} sends the request to the connection's provider
// at its api_base_url joined with path, and the query string as given. The
// path is refused (400) rather than cleaned when it holds an empty segment,
// a "." or ".." segment in any spelling (%2e%2e, "..;", percent-encoded
// twice), an encoded slash or backslash (%2F, %5C), a backslash or a control
// character; a clean path joined under the base path cannot leave it or
// reach another host.
//
// The caller's Authorization, Proxy-Authorization, Cookie, Refresh-On,
// Forwarded, X-Forwarded-* and X-Real-Ip headers are not forwarded, and
// nothing about the caller's address is added. A [client.Transport]
// injects the connection's token; when the provider answers with one of the
// provider's refresh_on statuses (default 401), or those of the request's
// Refresh-On header (4xx statuses, such as "401,403"), it refreshes the token
// that failed — once, shared with concurrent callers — and replays the
// request once. Bodies up to [Options.MaxReplayBody] are kept in memory for
// the replay; larger ones stream through once and are not replayed. If the
// refresh fails, the caller gets reauth_required or provider_unavailable,
// never the provider's stale 401. Responses stream back as they arrive.
//
// # Logging
//
// One line per request: method, route pattern (never the URL: query strings
// may hold secrets), status, duration, connection id, API key id and error
// code. Never headers, bodies, tokens or keys. A panic in a handler becomes
// a 500 and is logged with its type and stack, without request data.
package server
