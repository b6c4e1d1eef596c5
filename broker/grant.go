package broker

import (
	"time"

	"github.com/tokenbroker/tokenbroker/oauth"
	"github.com/tokenbroker/tokenbroker/oauth/lifecycle"
	"github.com/tokenbroker/tokenbroker/store"
)

// grantOf is the lifecycle rules' view of row c: its state and token facts,
// without the sealed token values.
func grantOf(c *store.Connection) lifecycle.Grant {
	return lifecycle.Grant{
		Status:               c.Status,
		HasAccessToken:       len(c.AccessToken) > 0,
		HasRefreshToken:      len(c.RefreshToken) > 0,
		TokenType:            c.TokenType,
		Scope:                c.Scope,
		IssuedAt:             c.IssuedAt,
		ExpiresAt:            c.ExpiresAt,
		ExpiryDefaulted:      c.ExpiryDefaulted,
		RefreshExpiresAt:     c.RefreshExpiresAt,
		RefreshHardExpiresAt: c.RefreshHardExpiresAt,
		LastRefreshAt:        c.LastRefreshAt,
		OnErrorRefreshAt:     c.OnErrorRefreshAt,
		NextRefreshAt:        c.NextRefreshAt,
		Failure:              c.Failure,
	}
}

// withGrant is row c with g's state and token facts; the sealed token
// values are left as they are.
func withGrant(c store.Connection, g lifecycle.Grant) store.Connection {
	c.Status = g.Status
	c.TokenType, c.Scope = g.TokenType, g.Scope
	c.IssuedAt, c.ExpiresAt, c.ExpiryDefaulted = g.IssuedAt, g.ExpiresAt, g.ExpiryDefaulted
	c.RefreshExpiresAt, c.RefreshHardExpiresAt = g.RefreshExpiresAt, g.RefreshHardExpiresAt
	c.LastRefreshAt, c.NextRefreshAt, c.OnErrorRefreshAt = g.LastRefreshAt, g.NextRefreshAt, g.OnErrorRefreshAt
	c.Failure = g.Failure
	return c
}

// land puts tok, which the provider issued, into row c by
// [lifecycle.Apply], sealing the tokens that change. It is the only way a
// provider's answer reaches a row: import, re-import, the connect flow,
// refresh, client-credentials renewal and the introspection follow-up all
// come through here. c.ID must be set: it binds the sealed values to the
// row.
func (b *Broker) land(c store.Connection, origin lifecycle.Origin, tok *oauth.Token, p Provider, now time.Time) (store.Connection, error) {
	g, src, err := lifecycle.Apply(grantOf(&c), origin, tok, p.Policy, now, b.rand())
	if err != nil {
		return c, err
	}
	if origin != lifecycle.Introspected {
		if c.AccessToken, err = b.seal(c.ID, "access", tok.AccessToken); err != nil {
			return c, err
		}
	}
	switch src {
	case lifecycle.RefreshFromAnswer:
		if c.RefreshToken, err = b.seal(c.ID, "refresh", tok.RefreshToken); err != nil {
			return c, err
		}
	case lifecycle.RefreshNone:
		c.RefreshToken = nil
	}
	return withGrant(c, g), nil
}

// failed records cause, a failed renewal, in row c by [lifecycle.Fail],
// and returns the events the change causes and the error as the policy
// classifies it.
func (b *Broker) failed(c store.Connection, cause error, p Provider, now time.Time) (store.Connection, []Event, error) {
	g, verdict, classified := lifecycle.Fail(grantOf(&c), cause, p.Policy, now, b.rand())
	next := withGrant(c, g)
	var events []Event
	switch {
	case verdict == lifecycle.NeedsReauth && c.Status != store.StatusNeedsReauth:
		events = []Event{b.event(EventReauthRequired, &next, g.Failure.Code)}
	case verdict == lifecycle.CoolingDown:
		events = []Event{b.event(EventRefreshFailed, &next, g.Failure.Code)}
	}
	return next, events, classified
}

// ExpiringSoonWithin is how far ahead a refresh token's end is reported.
const ExpiringSoonWithin = 14 * 24 * time.Hour

// RefreshExpiringSoon reports whether c's refresh token (or its chain's hard
// limit) ends within ExpiringSoonWithin of now: a person will have to
// reconnect the user.
func RefreshExpiringSoon(c *store.Connection, now time.Time) bool {
	g := grantOf(c)
	return lifecycle.RefreshEndsWithin(&g, now, ExpiringSoonWithin)
}
