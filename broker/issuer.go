package broker

import (
	"context"

	"github.com/tokenbroker/tokenbroker/oauth"
	"github.com/tokenbroker/tokenbroker/store"
)

// AuthorizationResponse is what the provider sent to the redirect URI
// (RFC 6749 §4.1.2, RFC 9207 §2).
type AuthorizationResponse struct {
	State string
	Code  string
	// Iss is the iss parameter; IssPresent tells an empty one from none.
	Iss        string
	IssPresent bool
}

// checkResponseIssuer refuses an authorization response from another
// authorization server than the session's provider (a mix-up attack,
// RFC 9207 §2.4), before its code is sent anywhere.
func (b *Broker) checkResponseIssuer(ctx context.Context, s store.ConnectSession, ep AuthCodeEndpoint, resp AuthorizationResponse) error {
	expected, required := ep.ResponseIssuer(ctx)
	if err := oauth.CheckResponseIssuer(expected, required, resp.Iss, resp.IssPresent); err != nil {
		b.log.WarnContext(ctx, "connect flow: authorization response refused", "connection", s.ConnectionID,
			"provider", s.Provider, "error", err)
		return err
	}
	return nil
}

// CheckErrorResponseIssuer applies the same check to an error response of
// the provider (RFC 9207 §2.4 covers both), for the page shown; the session
// ends either way.
func (b *Broker) CheckErrorResponseIssuer(ctx context.Context, s store.ConnectSession, iss string, present bool) error {
	_, ep, err := b.authCodeProvider(s.Provider)
	if err != nil {
		return err
	}
	expected, required := ep.ResponseIssuer(ctx)
	return oauth.CheckResponseIssuer(expected, required, iss, present)
}
