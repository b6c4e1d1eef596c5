// Package client is tokenbroker's Go library for programs that hold their own
// OAuth 2.0 tokens: a [TokenSource] that keeps one grant's tokens fresh and a
// [Transport] that puts them on HTTP requests.
//
// It fills two gaps of golang.org/x/oauth2: every token fetch takes a
// context (x/oauth2 issue #84), and a rotated token is handed to
// [Config.Save] before anyone may use it (issue #262), so a crash or a failed
// validation right after a refresh cannot lose the only live refresh token.
//
// # TokenSource
//
// A [TokenSource] answers [TokenSource.Token] from memory without locking
// while the access token is fresh. When it is due (expired, within
// [Config.RefreshWindow] of expiry, or rejected by the API through
// [TokenSource.Refresh]) exactly one refresh runs per source; every caller
// that needs a new token joins it and waits with its own context. The shared
// refresh is detached from the caller that started it, so one caller giving
// up does not fail the others.
//
// Failures come from the [Refresher] as [*oauth.Error]. Terminal ones
// (errors.Is(err, [oauth.ErrReauthRequired])) are sticky: the source never
// calls the provider again and [Config.OnFailure] is called once. Transient
// ones back off; meanwhile a token that has not yet expired is still handed
// out (stale-while-revalidate).
//
//	ts, err := client.NewTokenSource(client.Config{
//		Refresher: endpoint, // *oauth.Endpoint
//		Token:     stored,
//		Save:      func(ctx context.Context, t *oauth.Token) error { return db.SaveToken(ctx, id, t) },
//	})
//	if err != nil { ... }
//	ts.StartBackground(ctx)
//	defer ts.Close()
//	httpClient := &http.Client{Transport: &client.Transport{Source: ts}}
//
// # Transport
//
// [Transport] sets the Authorization header (RFC 6750 §2.1) on a copy of
// each request. When the API answers with a status that means "stale token"
// (401 by default) it invalidates exactly the token it sent, joins or starts
// the source's refresh, and replays the request once.
//
// A WWW-Authenticate Bearer challenge with error="invalid_token" counts as
// stale too, whatever the status ([Transport.IgnoreInvalidToken]); one with
// error="insufficient_scope" is never refreshed and comes back as an
// [*oauth.InsufficientScopeError] (a step-up).
//
// # golang.org/x/oauth2
//
// [ToOAuth2] and [FromOAuth2] convert tokens both ways, [NewOAuth2Refresher]
// starts from an oauth2.Config, and [TokenSource.OAuth2] is an
// oauth2.TokenSource. oauth2.NewClient cannot refresh and replay on a 401;
// [Transport] can. [Config.RefreshParams] adds resource, scope or any other
// parameter to every refresh.
//
// # Modules
//
// This package and client/remote are the module
// github.com/tokenbroker/tokenbroker/client, which needs only the oauth
// module and golang.org/x/oauth2 (docs/library.md). Package
// [github.com/tokenbroker/tokenbroker/client/remote] is the Go client of a
// tokenbroker server, with a token source backed by it.
package client
