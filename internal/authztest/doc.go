// Package authztest runs a real OAuth 2.0 authorization server in-process for
// tests: github.com/ory/fosite behind an [net/http/httptest.Server] on
// 127.0.0.1, with one confidential client and knobs for the provider
// behaviours tokenbroker must survive (see docs/provider-quirks.md).
//
// Every test that needs a provider starts one with [New]:
//
//	srv := authztest.New(t, authztest.Options{})
//	access, refresh, _ := srv.IssueTokens(t, "read")
//	// … point the code under test at srv.TokenURL() with srv.ClientID and
//	// srv.ClientSecret, then assert on srv.RefreshCalls(), srv.Active(t, access) …
//
// What the server does:
//
//   - Authorization code grant with PKCE (RFC 7636, S256 only, required), at
//     [Server.AuthorizeURL]. The endpoint consents on the spot for [Subject]
//     and grants the requested scopes, unless [Server.DenyConsent] is on.
//   - Refresh (RFC 6749 §6) with rotation on every use: the used refresh
//     token and the access token issued with it stop working. Replaying a used
//     refresh token is reuse (RFC 9700 §4.14.2): the whole grant is revoked,
//     as ORY Hydra and Auth0 do. [Options.ReuseGrace] opens a window in which
//     a replay gets a fresh pair instead.
//   - Client credentials grant, introspection (RFC 7662), revocation
//     (RFC 7009; revoking either token of a grant revokes the grant).
//   - Authorization server metadata (RFC 8414) and the same document at the
//     OpenID Connect discovery path. No ID tokens are issued.
//
// Token-endpoint requests are processed one at a time, so concurrent use of
// one refresh token is deterministic: the first wins, every other one is a
// replay and kills the grant — the worst case a broker must avoid.
//
// Time: fosite reads the wall clock (time.Now) itself, so the server cannot
// take an injected clock. Tests that need a token to have expired at the
// provider call [Server.Expire] instead of waiting.
//
// Tokens and the client secret never appear in the messages this package
// writes to a test log.
package authztest
