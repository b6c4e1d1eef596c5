package oauth

import (
	"log/slog"
	"strings"
	"time"
)

// Token is one grant's tokens as the authorization server issued them.
//
// The access token and the refresh token have independent lifetimes: an
// expired access token says nothing about the refresh token, which is why
// nothing in tokenbroker discards a Token because [Token.Expiry] has passed.
//
// Token's String and LogValue methods redact the secrets, so a Token can be
// logged or printed with %v without leaking them.
type Token struct {
	// AccessToken is the bearer credential sent to the provider's API.
	AccessToken string
	// TokenType is the RFC 6749 §7.1 token type, "Bearer" when the provider
	// did not say.
	TokenType string
	// RefreshToken is the credential used to obtain a new access token. Empty
	// when the provider issued none.
	RefreshToken string
	// Expiry is when the access token stops working. Zero means unknown: the
	// provider sent no lifetime and the caller configured no default.
	Expiry time.Time
	// ExpiryDefaulted is true when Expiry came from the caller's default
	// lifetime rather than from the provider, so the broker may learn the real
	// one by introspection (RFC 7662).
	ExpiryDefaulted bool
	// RefreshExpiry is when the refresh token stops working, from
	// refresh_token_expires_in or x_refresh_token_expires_in. Zero means
	// unknown.
	RefreshExpiry time.Time
	// RefreshHardExpiry is an absolute limit on the refresh token chain
	// (Intuit's x_refresh_token_hard_expires_in). Zero means unknown.
	RefreshHardExpiry time.Time
	// Scope is the granted scope (RFC 6749 §5.1), space separated; empty when
	// the provider did not say.
	Scope string
	// IDToken is the OpenID Connect ID token, when one came back.
	IDToken string
	// IssuedAt is when tokenbroker received the token.
	IssuedAt time.Time
}

// CanonicalTokenType spells a token type the way APIs expect it in an
// Authorization header: some providers answer "bearer", but APIs reject
// anything but "Bearer" (as golang.org/x/oauth2 does). Empty is Bearer
// (RFC 6750); unknown types are kept as they are.
func CanonicalTokenType(typ string) string {
	switch {
	case typ == "" || strings.EqualFold(typ, "bearer"):
		return "Bearer"
	case strings.EqualFold(typ, "mac"):
		return "MAC"
	case strings.EqualFold(typ, "basic"):
		return "Basic"
	}
	return typ
}

// Valid reports whether the access token is present and will not expire
// within window of now. A token whose expiry is unknown is valid: the only
// way to learn otherwise is a provider answering with a stale-token status.
//
// Deprecated: the window here is taken as is, so a token shorter than the
// window is never valid. Use lifecycle.Policy.Fresh, the rule the library
// and the server follow, which caps the window at half the token's
// lifetime.
func (t *Token) Valid(now time.Time, window time.Duration) bool {
	if t == nil || t.AccessToken == "" {
		return false
	}
	if t.Expiry.IsZero() {
		return true
	}
	return now.Add(window).Before(t.Expiry)
}

// Expired reports whether the access token's expiry is known and has passed.
func (t *Token) Expired(now time.Time) bool {
	return t != nil && !t.Expiry.IsZero() && !now.Before(t.Expiry)
}

// CanRefresh reports whether the token carries a refresh token that is not
// known to have expired. Sending a refresh token that is known to be dead
// only earns an invalid_grant and, at some providers, a rate-limit strike.
//
// Deprecated: use lifecycle.CanRefresh, the one rule the library and the
// server follow for a refresh token's end.
func (t *Token) CanRefresh(now time.Time) bool {
	if t == nil || t.RefreshToken == "" {
		return false
	}
	if !t.RefreshExpiry.IsZero() && !now.Before(t.RefreshExpiry) {
		return false
	}
	if !t.RefreshHardExpiry.IsZero() && !now.Before(t.RefreshHardExpiry) {
		return false
	}
	return true
}

// Clone returns a copy of t that the caller may change.
func (t *Token) Clone() *Token {
	if t == nil {
		return nil
	}
	c := *t
	return &c
}

// String describes the token without its secrets.
//
// String, GoString and LogValue have value receivers so that a Token value
// (not only a *Token) is redacted too: with pointer receivers, %v of a
// Token, of a struct holding one, or slog.Any("token", tok) printed the
// secrets. fmt prints a nil *Token as "<nil>".
func (t Token) String() string {
	s := "oauth.Token{type=" + t.TokenType + " access=" + redact(t.AccessToken) + " refresh=" + redact(t.RefreshToken)
	if !t.Expiry.IsZero() {
		s += " expiry=" + t.Expiry.UTC().Format(time.RFC3339)
	}
	return s + "}"
}

// GoString keeps %#v from printing the secrets.
func (t Token) GoString() string { return t.String() }

// LogValue implements [slog.LogValuer] without the secrets.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("type", t.TokenType),
		slog.String("access_token", redact(t.AccessToken)),
		slog.String("refresh_token", redact(t.RefreshToken)),
		slog.Time("expiry", t.Expiry),
	)
}

func redact(secret string) string {
	if secret == "" {
		return "<none>"
	}
	return "<redacted>"
}
