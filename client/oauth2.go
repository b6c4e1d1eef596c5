package client

import (
	"context"

	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/oauth"
)

// OAuth2 adapts s to [oauth2.TokenSource] for code written against
// golang.org/x/oauth2, for example oauth2.NewClient(ctx, s.OAuth2()).
//
// oauth2.TokenSource has no context, so the adapter's Token uses
// context.Background: a caller cannot abandon a refresh early (the refresh
// itself is still bounded by [Config.RefreshTimeout]). Prefer [Transport]
// and [TokenSource.Token] where a context is at hand.
//
// The returned tokens carry Expiry, RefreshToken and TokenType, and the
// extras "id_token" and "scope" when set. They are shared: do not modify
// them. Errors are those of [TokenSource.Token].
func (s *TokenSource) OAuth2() oauth2.TokenSource { return oauth2Source{s} }

type oauth2Source struct{ s *TokenSource }

func (a oauth2Source) Token() (*oauth2.Token, error) {
	st, err := a.s.current(context.Background())
	if err != nil {
		return nil, err
	}
	return st.o2, nil
}

// toOAuth2 converts once per token, so the adapter allocates nothing per call.
func toOAuth2(tok *oauth.Token) *oauth2.Token {
	t := &oauth2.Token{
		AccessToken:  tok.AccessToken,
		TokenType:    tok.TokenType,
		RefreshToken: tok.RefreshToken,
		Expiry:       tok.Expiry,
	}
	if tok.IDToken == "" && tok.Scope == "" {
		return t
	}
	extra := make(map[string]any, 2)
	if tok.IDToken != "" {
		extra["id_token"] = tok.IDToken
	}
	if tok.Scope != "" {
		extra["scope"] = tok.Scope
	}
	return t.WithExtra(extra)
}
