// Package remote is the Go client of a tokenbroker server's HTTP API
// (/v1/openapi.json): [Client] has one method per route, and [TokenSource]
// is a token source backed by the server.
//
// It is not the in-process library: package client keeps one grant's
// tokens in your program and calls the provider itself. Package remote
// leaves the tokens in tokenbroker, so that every replica of a program
// shares the server's single refresh per connection. Use a
// [TokenSource] under [client.Transport] and a provider's 401 is refreshed
// once for all replicas, and each rejected request is replayed once:
//
//	api, err := remote.New(remote.Config{BaseURL: "http://127.0.0.1:8080", APIKey: os.Getenv("TOKENBROKER_API_KEY")})
//	src, err := remote.NewTokenSource(remote.SourceConfig{Client: api, ConnectionID: "alice-github"})
//	httpClient := &http.Client{Transport: &client.Transport{Source: src}}
//
// Errors of the API are [*Error]s that match the library's sentinels:
// errors.Is(err, [oauth.ErrReauthRequired]) for reauth_required,
// errors.Is(err, [oauth.ErrTransient]) and [oauth.RetryAfter] for
// provider_unavailable, and [ErrNotFound], [ErrAlreadyExists],
// [ErrUnauthenticated], [ErrForbidden], [ErrInvalidRequest] for the rest.
// Requests that are safe to repeat (reads, PUT, DELETE and the report of a
// stale token) are retried on network errors and 503; others never are.
//
// See docs/library.md.
package remote
