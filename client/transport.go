package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"

	"github.com/tokenbroker/tokenbroker/oauth"
)

// Source supplies tokens to a [Transport]. [*TokenSource] satisfies it.
//
// Token returns a valid token. Refresh is told that an API rejected stale
// and returns a newer token, sharing one refresh among concurrent callers;
// if stale is no longer current it returns the current token. Both must be
// safe for concurrent use, and both report a dead grant with an error
// matching [oauth.ErrReauthRequired].
type Source interface {
	Token(ctx context.Context) (*oauth.Token, error)
	Refresh(ctx context.Context, stale *oauth.Token) (*oauth.Token, error)
}

var _ Source = (*TokenSource)(nil)

// maxDrain bounds how much of a rejected response body is read so its
// connection can be reused; a larger body costs the connection instead.
const maxDrain = 64 << 10

// Transport is an [http.RoundTripper] that authorizes requests with tokens
// from Source (RFC 6750 §2.1) and, when the API answers that the token is
// stale, refreshes it and replays the request once.
//
// Like x/oauth2's Transport it never modifies the caller's request: it sends
// a shallow copy with its own Header map (the header values are shared with
// the caller's request, read-only).
type Transport struct {
	// Source supplies the tokens. Required.
	Source Source

	// Base sends the requests. Nil means [http.DefaultTransport].
	Base http.RoundTripper

	// RefreshOn lists the response statuses that mean "token stale": on
	// one, the token that was sent is refreshed and the request replayed
	// once. Nil means {401} (RFC 6750 §3.1, invalid_token); an empty
	// non-nil slice disables refresh on status.
	RefreshOn []int

	// IgnoreInvalidToken stops a WWW-Authenticate Bearer challenge with
	// error="invalid_token" (RFC 6750 §3.1) from counting as "token
	// stale" on its own; RefreshOn still applies. By default such an
	// answer is refreshed and replayed once whatever its status.
	//
	// An answer whose challenge says error="insufficient_scope" is never
	// refreshed, whatever its status: a new token would have the same
	// scope. RoundTrip returns an [*oauth.InsufficientScopeError] for it
	// (errors.Is(err, [oauth.ErrInsufficientScope])), naming the scope
	// the resource needs, so the program can ask a person to consent to
	// more (a step-up).
	IgnoreInvalidToken bool

	// PassInsufficientScope returns an insufficient_scope answer as the
	// response instead of an error, for a proxy that passes the challenge
	// on to its own caller. It is still never refreshed.
	PassInsufficientScope bool
}

// RoundTrip implements [http.RoundTripper].
//
// On a RefreshOn status it closes that response and calls Source.Refresh
// with the token it sent, then replays the request with the same method,
// headers and body (from req.GetBody) and returns the second response
// whatever its status. A request whose body cannot be replayed (GetBody nil)
// is not retried: the first response is returned untouched. If the refresh
// fails, RoundTrip returns an error wrapping the Source's error, so
// errors.Is(err, [oauth.ErrReauthRequired]) tells whether a person must
// re-authenticate.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.Source == nil {
		closeBody(req)
		return nil, errors.New("client: Transport.Source is nil")
	}
	ctx := req.Context()
	tok, auth, err := t.token(ctx)
	if err != nil {
		closeBody(req)
		return nil, fmt.Errorf("client: token for request: %w", err)
	}
	base := t.base()
	// The base RoundTripper closes req.Body from here on.
	resp, err := base.RoundTrip(withAuth(req, req.Body, auth))
	if err != nil {
		return resp, err
	}
	stale, stepUp := t.judge(resp)
	if stepUp != nil {
		return nil, stepUp
	}
	if !stale || !replayable(req) {
		return resp, nil
	}

	status := resp.StatusCode
	fresh, auth, err := t.refresh(ctx, tok)
	if err == nil && fresh.AccessToken == tok.AccessToken {
		// The source kept the token: its on-error budget is spent (a
		// rejection already caused a refresh moments ago). The API's
		// answer is the answer; replaying would only earn it again.
		return resp, nil
	}
	_, _ = io.CopyN(io.Discard, resp.Body, maxDrain)
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("client: refresh after HTTP %d: %w", status, err)
	}
	body := req.Body
	if body != nil && body != http.NoBody {
		if body, err = req.GetBody(); err != nil {
			return nil, fmt.Errorf("client: replay request body: %w", err)
		}
	}
	resp, err = base.RoundTrip(withAuth(req, body, auth))
	if err != nil {
		return resp, err
	}
	if _, stepUp := t.judge(resp); stepUp != nil {
		return nil, stepUp
	}
	return resp, nil
}

// token returns the token to send and its Authorization header value. A
// [*TokenSource] has the value precomputed, so the fast path allocates
// nothing.
func (t *Transport) token(ctx context.Context) (*oauth.Token, []string, error) {
	if ts, ok := t.Source.(*TokenSource); ok {
		st, err := ts.current(ctx)
		if err != nil {
			return nil, nil, err
		}
		return st.tok, st.auth, nil
	}
	tok, err := t.Source.Token(ctx)
	return checked(tok, err)
}

func (t *Transport) refresh(ctx context.Context, stale *oauth.Token) (*oauth.Token, []string, error) {
	if ts, ok := t.Source.(*TokenSource); ok {
		st, err := ts.refresh(ctx, stale)
		if err != nil {
			return nil, nil, err
		}
		return st.tok, st.auth, nil
	}
	tok, err := t.Source.Refresh(ctx, stale)
	return checked(tok, err)
}

func checked(tok *oauth.Token, err error) (*oauth.Token, []string, error) {
	if err != nil {
		return nil, nil, err
	}
	if tok == nil || tok.AccessToken == "" {
		return nil, nil, errors.New("client: Source returned no access token")
	}
	return tok, []string{authValue(tok)}, nil
}

func (t *Transport) base() http.RoundTripper {
	if t.Base != nil {
		return t.Base
	}
	return http.DefaultTransport
}

func (t *Transport) refreshOn(status int) bool {
	if t.RefreshOn == nil {
		return status == http.StatusUnauthorized
	}
	for _, s := range t.RefreshOn {
		if s == status {
			return true
		}
	}
	return false
}

func replayable(req *http.Request) bool {
	return req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
}

// withAuth returns a shallow copy of req with body and a new Header map
// carrying auth. The caller's header value slices are shared, not copied
// (nothing below a RoundTripper may modify a request), which makes this
// three allocations where req.Clone takes five or more; maps.Clone copies
// the map without rehashing every key.
func withAuth(req *http.Request, body io.ReadCloser, auth []string) *http.Request {
	r := new(http.Request)
	*r = *req
	r.Body = body
	h := maps.Clone(req.Header)
	if h == nil {
		h = make(http.Header, 1)
	}
	h["Authorization"] = auth
	r.Header = h
	return r
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}
