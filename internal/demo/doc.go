// Package demo is the sandbox behind `tokenbroker serve --demo`: a small
// OAuth 2.0 authorization server and API that run inside the tokenbroker
// process on loopback, so a new user can try the whole product (connect
// link, consent, tokens, proxy, refresh, a revoked grant) without
// registering an application anywhere.
//
// It is deliberately tiny, stdlib-only and clearly labelled: every page
// says it is a sandbox, it answers loopback clients only, and the serve
// command refuses --demo on a non-loopback address. It implements what
// tokenbroker needs from a real provider, to the same specifications:
// authorization code with PKCE S256 (RFC 6749 §4.1, RFC 7636), refresh
// with rotation (RFC 6749 §6; a spent refresh token is refused with
// invalid_grant), revocation (RFC 7009), short-lived access tokens and a
// bearer-protected API answering 401 with WWW-Authenticate (RFC 6750 §3).
// See docs/demo.md.
package demo
