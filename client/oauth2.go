package client

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/oauth"
)

// OAuth2 adapts s to [oauth2.TokenSource] for code written against
// golang.org/x/oauth2.
//
// oauth2.TokenSource has no context, so the adapter's Token uses
// context.Background: a caller cannot abandon a refresh early (the refresh
// itself is still bounded by [Config.RefreshTimeout]). Prefer [Transport]
// and [TokenSource.Token] where a context is at hand.
//
// oauth2.NewClient(ctx, s.OAuth2()) injects the token and refreshes it when
// it is due, but it cannot refresh and replay when an API answers 401: x/oauth2's
// Transport returns that answer as it is and has no hook to report a
// rejected token. For that, use &http.Client{Transport: &client.Transport{Source: s}}.
//
// The returned tokens are [ToOAuth2] of the source's; they are shared: do
// not modify them. Errors are those of [TokenSource.Token].
func (s *TokenSource) OAuth2() oauth2.TokenSource { return oauth2Source{s} }

type oauth2Source struct{ s *TokenSource }

func (a oauth2Source) Token() (*oauth2.Token, error) {
	st, err := a.s.current(context.Background())
	if err != nil {
		return nil, err
	}
	return st.o2, nil
}

// Keys of the extra fields [ToOAuth2] sets on an [oauth2.Token], read back by
// [FromOAuth2]. "id_token" and "scope" are the token response's own names
// (OpenID Connect Core §3.1.3.3, RFC 6749 §5.1); the others carry what
// [oauth.Token] knows beyond x/oauth2's fields, as time.Time values.
const (
	ExtraIDToken               = "id_token"
	ExtraScope                 = "scope"
	ExtraIssuedAt              = "tokenbroker_issued_at"
	ExtraExpiryDefaulted       = "tokenbroker_expiry_defaulted"
	ExtraRefreshExpiresAt      = "tokenbroker_refresh_token_expires_at"
	ExtraRefreshHardExpiresAt  = "tokenbroker_refresh_token_hard_expires_at"
	extraRefreshExpiresIn      = "refresh_token_expires_in"        // GitHub
	extraXRefreshExpiresIn     = "x_refresh_token_expires_in"      // Intuit
	extraXRefreshHardExpiresIn = "x_refresh_token_hard_expires_in" // Intuit
)

// ToOAuth2 converts tok to an [oauth2.Token]: the access and refresh tokens,
// token type and expiry in x/oauth2's fields, everything else in extra
// fields (see the Extra constants) so that [FromOAuth2] gives tok back.
// A nil tok gives nil.
func ToOAuth2(tok *oauth.Token) *oauth2.Token {
	if tok == nil {
		return nil
	}
	t := &oauth2.Token{
		AccessToken:  tok.AccessToken,
		TokenType:    tok.TokenType,
		RefreshToken: tok.RefreshToken,
		Expiry:       tok.Expiry,
	}
	extra := make(map[string]any, 6)
	putString := func(k, v string) {
		if v != "" {
			extra[k] = v
		}
	}
	putTime := func(k string, v time.Time) {
		if !v.IsZero() {
			extra[k] = v
		}
	}
	putString(ExtraIDToken, tok.IDToken)
	putString(ExtraScope, tok.Scope)
	putTime(ExtraIssuedAt, tok.IssuedAt)
	putTime(ExtraRefreshExpiresAt, tok.RefreshExpiry)
	putTime(ExtraRefreshHardExpiresAt, tok.RefreshHardExpiry)
	if tok.ExpiryDefaulted {
		extra[ExtraExpiryDefaulted] = true
	}
	if len(extra) == 0 {
		return t
	}
	return t.WithExtra(extra)
}

// FromOAuth2 converts an [oauth2.Token] to an [oauth.Token]. It reads back
// what [ToOAuth2] stored, and from a token x/oauth2 fetched itself the
// token response's id_token, scope and refresh-token lifetimes
// (refresh_token_expires_in, x_refresh_token_expires_in,
// x_refresh_token_hard_expires_in), counted from the issue time that
// Expiry and ExpiresIn imply. A nil t gives nil.
func FromOAuth2(t *oauth2.Token) *oauth.Token {
	if t == nil {
		return nil
	}
	tok := &oauth.Token{
		AccessToken:  t.AccessToken,
		TokenType:    t.TokenType,
		RefreshToken: t.RefreshToken,
		Expiry:       t.Expiry,
	}
	tok.IDToken, _ = t.Extra(ExtraIDToken).(string)
	tok.Scope, _ = t.Extra(ExtraScope).(string)
	tok.IssuedAt = extraTime(t, ExtraIssuedAt)
	if tok.IssuedAt.IsZero() && t.ExpiresIn > 0 && !t.Expiry.IsZero() {
		tok.IssuedAt = t.Expiry.Add(-time.Duration(t.ExpiresIn) * time.Second)
	}
	tok.ExpiryDefaulted, _ = t.Extra(ExtraExpiryDefaulted).(bool)
	tok.RefreshExpiry = extraTime(t, ExtraRefreshExpiresAt)
	tok.RefreshHardExpiry = extraTime(t, ExtraRefreshHardExpiresAt)
	if !tok.IssuedAt.IsZero() {
		if tok.RefreshExpiry.IsZero() {
			tok.RefreshExpiry = extraAfter(t, tok.IssuedAt, extraRefreshExpiresIn, extraXRefreshExpiresIn)
		}
		if tok.RefreshHardExpiry.IsZero() {
			tok.RefreshHardExpiry = extraAfter(t, tok.IssuedAt, extraXRefreshHardExpiresIn)
		}
	}
	return tok
}

// extraTime reads a time ToOAuth2 stored, or one stored as RFC 3339 text
// (a token that went through JSON).
func extraTime(t *oauth2.Token, key string) time.Time {
	switch v := t.Extra(key).(type) {
	case time.Time:
		return v
	case string:
		if ts, err := time.Parse(time.RFC3339Nano, v); err == nil {
			return ts
		}
	}
	return time.Time{}
}

// extraAfter is issued plus the first of keys that holds a positive number
// of seconds (a JSON number, or a numeric string as some providers send).
func extraAfter(t *oauth2.Token, issued time.Time, keys ...string) time.Time {
	for _, k := range keys {
		var secs float64
		switch v := t.Extra(k).(type) {
		case float64:
			secs = v
		case int64:
			secs = float64(v)
		case int:
			secs = float64(v)
		case string:
			secs, _ = strconv.ParseFloat(v, 64)
		}
		if secs > 0 {
			return issued.Add(time.Duration(secs) * time.Second)
		}
	}
	return time.Time{}
}

// toOAuth2 is ToOAuth2, run once per token so the adapter allocates nothing
// per call.
func toOAuth2(tok *oauth.Token) *oauth2.Token { return ToOAuth2(tok) }

// NewOAuth2Refresher returns a refresher for the client that cfg describes:
// an [*oauth.Endpoint] with cfg's client ID, secret, token and authorization
// URLs and auth style, and everything else from base (HTTP client, clock,
// retries, default lifetime). Unlike x/oauth2's own refresh it honours the
// caller's context, and through [Config.RefreshParams] it can send extra
// parameters such as resource or scope on every refresh.
//
// The client secret is read from cfg; load it from the environment or a
// file, never from source code.
func NewOAuth2Refresher(cfg *oauth2.Config, base oauth.Config) (*oauth.Endpoint, error) {
	if cfg == nil {
		return nil, errors.New("client: oauth2.Config is nil")
	}
	if cfg.Endpoint.TokenURL == "" {
		return nil, errors.New("client: oauth2.Config.Endpoint.TokenURL is empty")
	}
	base.ClientID = cfg.ClientID
	base.ClientSecret = cfg.ClientSecret
	base.TokenURL = cfg.Endpoint.TokenURL
	if base.AuthorizeURL == "" {
		base.AuthorizeURL = cfg.Endpoint.AuthURL
	}
	switch cfg.Endpoint.AuthStyle {
	case oauth2.AuthStyleAutoDetect:
		base.AuthStyle = oauth.AuthStyleAuto
	case oauth2.AuthStyleInHeader:
		base.AuthStyle = oauth.AuthStyleHeader
	case oauth2.AuthStyleInParams:
		base.AuthStyle = oauth.AuthStyleParams
	default:
		return nil, fmt.Errorf("client: oauth2.Config.Endpoint.AuthStyle %d is not a known style", cfg.Endpoint.AuthStyle)
	}
	ep, err := oauth.NewEndpoint(base)
	if err != nil {
		return nil, fmt.Errorf("client: endpoint from oauth2.Config: %w", err)
	}
	return ep, nil
}
