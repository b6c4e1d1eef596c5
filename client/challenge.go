package client

import (
	"io"
	"net/http"

	"github.com/tokenbroker/tokenbroker/oauth"
)

// judge reads an API's answer: stale means refresh and replay; a non-nil
// stepUp means the token lacks scope, and resp has been closed.
func (t *Transport) judge(resp *http.Response) (stale bool, stepUp error) {
	stale = t.refreshOn(resp.StatusCode)
	if _, has := resp.Header["Www-Authenticate"]; !has {
		return stale, nil
	}
	c, ok := oauth.ParseBearerChallenge(resp.Header)
	if !ok {
		return stale, nil
	}
	switch c.Error {
	case oauth.ChallengeInsufficientScope:
		if t.PassInsufficientScope {
			return false, nil
		}
		_, _ = io.CopyN(io.Discard, resp.Body, maxDrain)
		resp.Body.Close()
		return false, &oauth.InsufficientScopeError{StatusCode: resp.StatusCode, Challenge: c}
	case oauth.ChallengeInvalidToken:
		return stale || !t.IgnoreInvalidToken, nil
	}
	return stale, nil
}
