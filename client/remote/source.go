package remote

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenbroker/tokenbroker/client"
	"github.com/tokenbroker/tokenbroker/oauth"
	"github.com/tokenbroker/tokenbroker/oauth/lifecycle"
)

// DefaultCallTimeout bounds one shared call of a [TokenSource] to the
// server, however long its callers are willing to wait.
const DefaultCallTimeout = 60 * time.Second

// SourceConfig configures a [TokenSource]. Client and ConnectionID are
// required.
type SourceConfig struct {
	Client       *Client
	ConnectionID string
	// Policy decides how long a token read from the server is used before
	// it is read again: until [lifecycle.Policy.DueAt] of its expiry,
	// counting its lifetime from when it was read. Use the provider's
	// refresh window here to match the server. The zero value is the
	// default 5-minute window.
	Policy lifecycle.Policy
	// CallTimeout bounds one shared call to the server; zero means
	// DefaultCallTimeout.
	CallTimeout time.Duration
	// Now is the clock. Nil means time.Now.
	Now func() time.Time
}

// TokenSource is a [client.Source] whose tokens live in tokenbroker. Token
// reads the connection's token from the server and keeps it in memory until
// it is due (the lifecycle rule the server follows, docs/architecture.md);
// Refresh reports a token an API rejected to the server, which refreshes it
// once for every caller, process and replica that reports it. Concurrent
// callers in one process share one call to the server. It is safe for
// concurrent use.
type TokenSource struct {
	api     *Client
	id      string
	policy  lifecycle.Policy
	timeout time.Duration
	now     func() time.Time

	cur atomic.Pointer[cached]

	mu       sync.Mutex
	flight   map[string]*flight // by the access token being replaced; "" for a plain read
	rejected string             // the last token reported stale
}

var _ client.Source = (*TokenSource)(nil)

type cached struct {
	tok   *oauth.Token
	due   time.Time // zero: never due by time
	stale bool      // an API rejected it
}

type flight struct {
	done chan struct{}
	tok  *oauth.Token
	err  error
}

// NewTokenSource returns a source for one connection. It makes no request.
func NewTokenSource(cfg SourceConfig) (*TokenSource, error) {
	switch {
	case cfg.Client == nil:
		return nil, errors.New("remote: SourceConfig.Client is nil")
	case cfg.ConnectionID == "":
		return nil, errors.New("remote: SourceConfig.ConnectionID is empty")
	case cfg.CallTimeout < 0:
		return nil, fmt.Errorf("remote: SourceConfig.CallTimeout is negative (%v)", cfg.CallTimeout)
	}
	if err := cfg.Policy.Validate(); err != nil {
		return nil, fmt.Errorf("remote: SourceConfig.Policy: %w", err)
	}
	s := &TokenSource{api: cfg.Client, id: cfg.ConnectionID, policy: cfg.Policy, timeout: cfg.CallTimeout,
		now: cfg.Now, flight: map[string]*flight{}}
	if s.timeout == 0 {
		s.timeout = DefaultCallTimeout
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s, nil
}

// Token returns the connection's access token: from memory while it is not
// due, else from the server (one request for all concurrent callers).
// Errors are [*Error]s: errors.Is(err, [oauth.ErrReauthRequired]) when a
// person must reconnect, errors.Is(err, [oauth.ErrTransient]) when the
// provider is unavailable. The returned token is shared: do not modify it.
func (s *TokenSource) Token(ctx context.Context) (*oauth.Token, error) {
	if c := s.cur.Load(); c != nil && !c.stale && (c.due.IsZero() || s.now().Before(c.due)) {
		return c.tok, nil
	}
	return s.join(ctx, "")
}

// Refresh reports that an API rejected stale and returns a valid token. If
// stale is no longer the token in memory (someone already got a new one),
// that one is returned without asking the server. Otherwise the server is
// told (one request for all concurrent callers with the same stale token)
// and refreshes once for everyone, or answers with the token another
// replica already got. A nil stale reports the token in memory, if any.
// Errors are as for [TokenSource.Token].
func (s *TokenSource) Refresh(ctx context.Context, stale *oauth.Token) (*oauth.Token, error) {
	c := s.cur.Load()
	if stale == nil && c != nil {
		stale = c.tok
	}
	if stale == nil || stale.AccessToken == "" {
		return s.join(ctx, "")
	}
	if c != nil && c.tok.AccessToken != stale.AccessToken && !c.stale {
		return s.Token(ctx) // the one in memory, unless it is due too
	}
	s.mu.Lock()
	s.rejected = stale.AccessToken
	s.mu.Unlock()
	s.markStale(stale.AccessToken)
	return s.join(ctx, stale.AccessToken)
}

// markStale keeps Token from handing out the rejected token again.
func (s *TokenSource) markStale(access string) {
	for {
		c := s.cur.Load()
		if c == nil || c.tok.AccessToken != access || c.stale {
			return
		}
		n := *c
		n.stale = true
		if s.cur.CompareAndSwap(c, &n) {
			return
		}
	}
}

// join starts or joins the call that replaces stale ("" for a plain read)
// and waits for it with ctx.
func (s *TokenSource) join(ctx context.Context, stale string) (*oauth.Token, error) {
	s.mu.Lock()
	// A call that ended while this caller was on its way here has already
	// stored its answer (before it left the flight table).
	if c := s.cur.Load(); c != nil && !c.stale {
		fresh := c.due.IsZero() || s.now().Before(c.due)
		if (stale == "" && fresh) || (stale != "" && c.tok.AccessToken != stale) {
			s.mu.Unlock()
			return c.tok, nil
		}
	}
	f := s.flight[stale]
	if f == nil {
		f = &flight{done: make(chan struct{})}
		s.flight[stale] = f
		go s.run(context.WithoutCancel(ctx), f, stale)
	}
	s.mu.Unlock()
	select {
	case <-f.done:
		return f.tok, f.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *TokenSource) run(ctx context.Context, f *flight, stale string) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	read := s.now()
	var t *Token
	var err error
	if stale == "" {
		t, err = s.api.Token(ctx, s.id)
	} else {
		t, err = s.api.ReportStale(ctx, s.id, stale)
	}
	if err == nil && (t == nil || t.AccessToken == "") {
		err = &Error{Op: "token", Code: oauth.CodeInvalidResponse, Message: "the server answered without an access token"}
	}
	if err == nil {
		f.tok = s.keep(t, read, stale)
	}
	f.err = err
	s.mu.Lock()
	delete(s.flight, stale)
	s.mu.Unlock()
	close(f.done)
}

// keep converts t, read at read in answer to a report of stale (or a plain
// read, ""), and makes it the token in memory.
func (s *TokenSource) keep(t *Token, read time.Time, stale string) *oauth.Token {
	tok := &oauth.Token{AccessToken: t.AccessToken, TokenType: t.TokenType, IssuedAt: read}
	switch {
	case t.ExpiresAt != nil:
		tok.Expiry = *t.ExpiresAt
	case t.ExpiresIn != nil:
		tok.Expiry = read.Add(time.Duration(*t.ExpiresIn) * time.Second)
	}
	// The lifetime that matters here is what was left when it was read:
	// the server already refreshes by the token's real issue time.
	c := &cached{tok: tok, due: s.policy.DueAt(read, tok.Expiry)}
	s.mu.Lock()
	switch {
	case stale != "" && tok.AccessToken == stale:
		// The server kept the reported token (its on-error budget:
		// docs/architecture.md): it is the token to use, and the caller
		// passes the API's answer on.
		s.rejected = ""
	case stale == "":
		// A read that started before a stale report may answer with the
		// rejected token after the report's answer arrived.
		c.stale = tok.AccessToken == s.rejected
	}
	s.cur.Store(c)
	s.mu.Unlock()
	return tok
}
