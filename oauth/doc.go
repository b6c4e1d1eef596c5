// Package oauth is tokenbroker's OAuth 2.0 protocol core.
//
// It knows how token endpoints really answer (see docs/provider-quirks.md in
// the repository) and turns those answers into either a [Token] or an [*Error]
// that says whether a person must reconnect ([ErrReauthRequired]) or the
// caller may try again later. It also speaks the smaller protocols around the
// token endpoint: authorization server discovery (RFC 8414 and OpenID Connect
// Discovery), introspection (RFC 7662), revocation (RFC 7009) and the
// authorization code grant with PKCE (RFC 7636).
//
// The package holds no tokens of its own and no global state: every call takes
// a context, and the HTTP client and clock are injected. Policy (when to
// refresh, who may refresh) belongs to the callers in package client and the
// broker.
package oauth
