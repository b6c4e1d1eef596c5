package broker_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/authztest"
	"github.com/tokenbroker/tokenbroker/internal/fakeclock"
	"github.com/tokenbroker/tokenbroker/oauth"
	"github.com/tokenbroker/tokenbroker/oauth/lifecycle"
	"github.com/tokenbroker/tokenbroker/seal"
	"github.com/tokenbroker/tokenbroker/store"
	"github.com/tokenbroker/tokenbroker/store/sqlite"
)

// ccEndpoint is the real endpoint with its client-credentials calls counted.
type ccEndpoint struct {
	*oauth.Endpoint
	ccCalls atomic.Int64
}

func (e *ccEndpoint) ClientCredentials(ctx context.Context, scopes ...string) (*oauth.Token, error) {
	e.ccCalls.Add(1)
	return e.Endpoint.ClientCredentials(ctx, scopes...)
}

type connectEnv struct {
	srv    *authztest.Server
	store  *sqlite.Store
	ep     *ccEndpoint
	broker *broker.Broker
	clock  *fakeclock.Clock
	events *recorder
}

func newConnectEnv(t *testing.T) *connectEnv {
	t.Helper()
	return newConnectEnvWith(t, nil)
}

// newConnectEnvWith is newConnectEnv with the broker's store wrapped by
// wrap, when not nil.
func newConnectEnvWith(t *testing.T, wrap func(store.Backend) broker.Store) *connectEnv {
	t.Helper()
	srv := authztest.New(t, authztest.Options{})
	dir := t.TempDir()
	clk := fakeclock.New(time.Now().UTC())
	st, err := sqlite.Open(t.Context(), filepath.Join(dir, "tb.db"), sqlite.Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ring, _, err := seal.LoadOrCreate(filepath.Join(dir, "keys"))
	if err != nil {
		t.Fatal(err)
	}
	ep, err := oauth.NewEndpoint(oauth.Config{
		ClientID: srv.ClientID, ClientSecret: srv.ClientSecret,
		TokenURL: srv.TokenURL(), AuthorizeURL: srv.AuthorizeURL(), IntrospectionURL: srv.IntrospectionURL(),
		Retry: oauth.Backoff{MaxAttempts: 1}, Now: clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	e := &connectEnv{srv: srv, store: st, ep: &ccEndpoint{Endpoint: ep}, clock: clk, events: &recorder{}}
	// A second provider whose endpoint can refresh but do nothing else.
	plain := newCountingEndpoint(t, srv)
	var bs broker.Store = st
	if wrap != nil {
		bs = wrap(st)
	}
	e.broker, err = broker.New(broker.Options{
		Store:  bs,
		Sealer: ring,
		Providers: map[string]broker.Provider{
			"acme":  {Endpoint: e.ep, Policy: lifecycle.Policy{Window: time.Minute}, Scopes: []string{"offline"}, AuthParams: map[string]string{"prompt": "consent"}},
			"other": {Endpoint: plain, Policy: lifecycle.Policy{Window: time.Minute}},
		},
		Now:    clk.Now,
		Events: e.events,
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// authorize follows the authorization URL at the test server (which
// consents at once) and returns the callback's query.
func authorize(t *testing.T, authURL string) url.Values {
	t.Helper()
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(authURL)
	if err != nil {
		t.Fatalf("authorize: %v", err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusSeeOther && resp.StatusCode != http.StatusFound || err != nil {
		t.Fatalf("authorize: status %d, want a redirect", resp.StatusCode)
	}
	return loc.Query()
}

// connect runs the flow for id up to the callback and returns its state and
// code.
func (e *connectEnv) begin(t *testing.T, id, provider string) (state, code string) {
	t.Helper()
	s, err := e.broker.CreateConnectSession(t.Context(), broker.ConnectRequest{ConnectionID: id, Provider: provider, Scopes: []string{"read"}})
	if err != nil {
		t.Fatalf("CreateConnectSession: %v", err)
	}
	authURL, err := e.broker.BeginConnect(t.Context(), s.ID, e.srv.RedirectURI())
	if err != nil {
		t.Fatalf("BeginConnect: %v", err)
	}
	u, _ := url.Parse(authURL)
	q := u.Query()
	if q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" || q.Get("scope") != "offline read" ||
		q.Get("prompt") != "consent" || q.Get("redirect_uri") != e.srv.RedirectURI() {
		t.Errorf("authorization request lacks PKCE, merged scopes, auth params or redirect_uri: %v", q.Encode())
	}
	cb := authorize(t, authURL)
	if cb.Get("state") != q.Get("state") || cb.Get("code") == "" {
		t.Fatalf("callback has no code or a different state")
	}
	return cb.Get("state"), cb.Get("code")
}

func TestConnectFlowCreatesConnection(t *testing.T) {
	e := newConnectEnv(t)
	ctx := t.Context()
	state, code := e.begin(t, "conn-1", "acme")
	res, err := e.broker.CompleteConnect(ctx, state, code, e.srv.RedirectURI())
	if err != nil {
		t.Fatalf("CompleteConnect: %v", err)
	}
	c := res.Connection
	if res.Reconnected || c.ID != "conn-1" || c.Status != store.StatusActive || len(c.RefreshToken) == 0 || c.Grant != "" {
		t.Errorf("connection = {id %q status %s refresh %t grant %q reconnected %t}", c.ID, c.Status, len(c.RefreshToken) > 0, c.Grant, res.Reconnected)
	}
	tok, err := e.broker.GetToken(ctx, "conn-1")
	if err != nil {
		t.Fatal(err)
	}
	if !e.srv.Active(t, tok.AccessToken) {
		t.Errorf("the stored access token is not active at the provider")
	}
	if n := e.events.count(broker.EventCreated); n != 1 {
		t.Errorf("%d created events, want 1", n)
	}
	// The callback cannot be replayed.
	if _, err := e.broker.CompleteConnect(ctx, state, code, e.srv.RedirectURI()); !errors.Is(err, broker.ErrConnectSessionNotFound) {
		t.Errorf("replayed callback: %v, want ErrConnectSessionNotFound", err)
	}
}

func TestReconnectRestoresNeedsReauth(t *testing.T) {
	e := newConnectEnv(t)
	ctx := t.Context()
	access, refresh, _ := e.srv.IssueTokens(t, "read")
	if _, err := e.broker.CreateConnection(ctx, broker.Import{ID: "dead", Provider: "acme", AccessToken: access, RefreshToken: refresh,
		ExpiresIn: time.Hour, Metadata: []byte(`{"tenant":"t1"}`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.UpdateConnection(ctx, "dead", func(c store.Connection) (store.Connection, []store.Event, error) {
		c.Status = store.StatusNeedsReauth
		c.Failure = &store.Failure{Code: "invalid_grant", Attempts: 1, FirstAt: e.clock.Now()}
		return c, nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.broker.GetToken(ctx, "dead"); !errors.Is(err, oauth.ErrReauthRequired) {
		t.Fatalf("before reconnecting: %v, want reauth required", err)
	}
	state, code := e.begin(t, "dead", "acme")
	res, err := e.broker.CompleteConnect(ctx, state, code, e.srv.RedirectURI())
	if err != nil {
		t.Fatalf("CompleteConnect: %v", err)
	}
	c, _ := e.store.GetConnection(ctx, "dead")
	if !res.Reconnected || c.Status != store.StatusActive || c.Failure != nil || string(c.Metadata) != `{"tenant":"t1"}` {
		t.Errorf("after reconnect: reconnected %t status %s failure %v metadata kept %t", res.Reconnected, c.Status, c.Failure != nil, string(c.Metadata) == `{"tenant":"t1"}`)
	}
	if n := e.events.count(broker.EventRecovered); n != 1 {
		t.Errorf("%d recovered events, want 1", n)
	}
	tok, err := e.broker.GetToken(ctx, "dead")
	if err != nil || tok.AccessToken == access || !e.srv.Active(t, tok.AccessToken) {
		t.Errorf("after reconnect the token is not the new grant's (err %v)", err)
	}
}

func TestConnectFailuresCreateNothing(t *testing.T) {
	e := newConnectEnv(t)
	ctx := t.Context()

	t.Run("expired", func(t *testing.T) {
		state, code := e.begin(t, "late", "acme")
		e.clock.Advance(broker.ConnectSessionTTL + time.Second)
		defer e.clock.Advance(-broker.ConnectSessionTTL - time.Second)
		if _, err := e.broker.CompleteConnect(ctx, state, code, e.srv.RedirectURI()); !errors.Is(err, broker.ErrConnectSessionExpired) {
			t.Errorf("late callback: %v, want ErrConnectSessionExpired", err)
		}
		if _, err := e.store.GetConnection(ctx, "late"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("a connection was created: %v", err)
		}
	})
	t.Run("bad code", func(t *testing.T) {
		state, _ := e.begin(t, "badcode", "acme")
		_, err := e.broker.CompleteConnect(ctx, state, "not-a-real-code", e.srv.RedirectURI())
		var oe *oauth.Error
		if !errors.As(err, &oe) {
			t.Errorf("bad code: %v, want the provider's error", err)
		}
		if _, err := e.store.GetConnection(ctx, "badcode"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("a connection was created: %v", err)
		}
		if _, err := e.broker.CompleteConnect(ctx, state, "again", e.srv.RedirectURI()); !errors.Is(err, broker.ErrConnectSessionNotFound) {
			t.Errorf("the session survived a failed exchange: %v", err)
		}
	})
	t.Run("unknown state", func(t *testing.T) {
		if _, err := e.broker.CompleteConnect(ctx, "made-up-state", "code", e.srv.RedirectURI()); !errors.Is(err, broker.ErrConnectSessionNotFound) {
			t.Errorf("unknown state: %v", err)
		}
	})
	t.Run("aborted", func(t *testing.T) {
		state, code := e.begin(t, "denied", "acme")
		if _, err := e.broker.AbortConnect(ctx, state); err != nil {
			t.Fatalf("AbortConnect: %v", err)
		}
		if _, err := e.broker.CompleteConnect(ctx, state, code, e.srv.RedirectURI()); !errors.Is(err, broker.ErrConnectSessionNotFound) {
			t.Errorf("completed an aborted session: %v", err)
		}
	})
	t.Run("provider mismatch at callback", func(t *testing.T) {
		state, code := e.begin(t, "taken", "acme")
		access, refresh, _ := e.srv.IssueTokens(t, "read")
		if _, err := e.broker.CreateConnection(ctx, broker.Import{ID: "taken", Provider: "other", AccessToken: access, RefreshToken: refresh}); err != nil {
			t.Fatal(err)
		}
		before, _ := e.store.GetConnection(ctx, "taken")
		if _, err := e.broker.CompleteConnect(ctx, state, code, e.srv.RedirectURI()); !errors.Is(err, broker.ErrProviderMismatch) {
			t.Errorf("mismatch: %v, want ErrProviderMismatch", err)
		}
		if after, _ := e.store.GetConnection(ctx, "taken"); after.Version != before.Version {
			t.Errorf("the other provider's connection was changed")
		}
	})
	t.Run("begin unknown or consumed session", func(t *testing.T) {
		if _, err := e.broker.BeginConnect(ctx, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", e.srv.RedirectURI()); !errors.Is(err, broker.ErrConnectSessionNotFound) {
			t.Errorf("unknown session: %v", err)
		}
		if _, err := e.broker.BeginConnect(ctx, "../x", e.srv.RedirectURI()); !errors.Is(err, broker.ErrConnectSessionNotFound) {
			t.Errorf("malformed session id: %v", err)
		}
	})
}

func TestCreateConnectSessionValidation(t *testing.T) {
	e := newConnectEnv(t)
	access, refresh, _ := e.srv.IssueTokens(t, "read")
	if _, err := e.broker.CreateConnection(t.Context(), broker.Import{ID: "owned", Provider: "other", AccessToken: access, RefreshToken: refresh}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		req   broker.ConnectRequest
		field string
	}{
		{"bad id", broker.ConnectRequest{ConnectionID: "../x", Provider: "acme"}, "connection_id"},
		{"no provider", broker.ConnectRequest{ConnectionID: "a"}, "provider"},
		{"unknown provider", broker.ConnectRequest{ConnectionID: "a", Provider: "nope"}, "provider"},
		{"provider without auth code", broker.ConnectRequest{ConnectionID: "a", Provider: "other"}, "provider"},
		{"relative redirect", broker.ConnectRequest{ConnectionID: "a", Provider: "acme", RedirectURL: "/done"}, "redirect_url"},
		{"javascript redirect", broker.ConnectRequest{ConnectionID: "a", Provider: "acme", RedirectURL: "javascript:alert(1)"}, "redirect_url"},
		{"redirect with fragment", broker.ConnectRequest{ConnectionID: "a", Provider: "acme", RedirectURL: "https://app.example/#x"}, "redirect_url"},
		{"scope with space", broker.ConnectRequest{ConnectionID: "a", Provider: "acme", Scopes: []string{"a b"}}, "scopes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.broker.CreateConnectSession(t.Context(), tc.req)
			var ve *broker.ValidationError
			if !errors.As(err, &ve) || ve.Field != tc.field {
				t.Errorf("error %v, want a validation error on %s", err, tc.field)
			}
		})
	}
	_, err := e.broker.CreateConnectSession(t.Context(), broker.ConnectRequest{ConnectionID: "owned", Provider: "acme"})
	if !errors.Is(err, broker.ErrProviderMismatch) {
		t.Errorf("session for another provider's connection: %v, want ErrProviderMismatch", err)
	}
	s, err := e.broker.CreateConnectSession(t.Context(), broker.ConnectRequest{ConnectionID: "ok", Provider: "acme", RedirectURL: "https://app.example/done"})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.ID) < 22 || !s.ExpiresAt.Equal(e.clock.Now().Add(broker.ConnectSessionTTL)) {
		t.Errorf("session id of %d characters, expiry %v", len(s.ID), s.ExpiresAt.Sub(e.clock.Now()))
	}
}

func TestClientCredentialsConnection(t *testing.T) {
	e := newConnectEnv(t)
	ctx := t.Context()
	c, err := e.broker.CreateClientCredentialsConnection(ctx, broker.ClientCredentialsImport{ID: "svc", Provider: "acme", Scopes: []string{"read"}})
	if err != nil {
		t.Fatalf("CreateClientCredentialsConnection: %v", err)
	}
	if c.Grant != store.GrantClientCredentials || len(c.RefreshToken) != 0 || c.Status != store.StatusActive || c.ExpiresAt.IsZero() {
		t.Errorf("connection = {grant %q refresh %t status %s expires %v}", c.Grant, len(c.RefreshToken) > 0, c.Status, c.ExpiresAt)
	}
	if e.ep.ccCalls.Load() != 1 {
		t.Errorf("%d client-credentials calls, want 1", e.ep.ccCalls.Load())
	}
	first, err := e.broker.GetToken(ctx, "svc")
	if err != nil || !e.srv.Active(t, first.AccessToken) {
		t.Fatalf("token of the new connection is not usable (err %v)", err)
	}
	if e.ep.ccCalls.Load() != 1 {
		t.Errorf("a valid token was renewed")
	}

	// Near expiry, concurrent callers share one renewal, which asks again.
	e.clock.Advance(time.Hour)
	var wg sync.WaitGroup
	toks := make([]broker.Token, 8)
	errs := make([]error, 8)
	for i := range toks {
		wg.Go(func() { toks[i], errs[i] = e.broker.GetToken(ctx, "svc") })
	}
	wg.Wait()
	for i := range toks {
		if errs[i] != nil || toks[i].AccessToken != toks[0].AccessToken {
			t.Fatalf("caller %d: err %v or a different token", i, errs[i])
		}
	}
	if n := e.ep.ccCalls.Load(); n != 2 {
		t.Errorf("%d client-credentials calls after expiry, want 2 (one shared renewal)", n)
	}
	if toks[0].AccessToken == first.AccessToken || !e.srv.Active(t, toks[0].AccessToken) {
		t.Errorf("the renewed token is the old one or not active")
	}
	if got, _ := e.store.GetConnection(ctx, "svc"); got.Grant != store.GrantClientCredentials || len(got.RefreshToken) != 0 {
		t.Errorf("renewal lost the grant or stored a refresh token")
	}

	// Forced refresh also asks again.
	if _, err := e.broker.RefreshConnection(ctx, "svc", nil); err != nil || e.ep.ccCalls.Load() != 3 {
		t.Errorf("forced refresh: err %v, %d calls", err, e.ep.ccCalls.Load())
	}

	if _, err := e.broker.CreateClientCredentialsConnection(ctx, broker.ClientCredentialsImport{ID: "svc", Provider: "acme"}); !errors.Is(err, store.ErrAlreadyExists) {
		t.Errorf("existing id: %v, want ErrAlreadyExists", err)
	}
	if n := e.ep.ccCalls.Load(); n != 3 {
		t.Errorf("the provider was called for an existing id")
	}
	_, err = e.broker.CreateClientCredentialsConnection(ctx, broker.ClientCredentialsImport{ID: "x", Provider: "other"})
	var ve *broker.ValidationError
	if !errors.As(err, &ve) || ve.Field != "grant" {
		t.Errorf("provider without client credentials: %v", err)
	}
}

func TestClientCredentialsFailureIsRecorded(t *testing.T) {
	e := newConnectEnv(t)
	ctx := t.Context()
	if _, err := e.broker.CreateClientCredentialsConnection(ctx, broker.ClientCredentialsImport{ID: "svc", Provider: "acme"}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(2 * time.Hour)
	e.srv.FailNext(1, http.StatusUnauthorized, http.Header{"Content-Type": {"application/json"}}, `{"error":"invalid_client"}`)
	_, err := e.broker.GetToken(ctx, "svc")
	if !errors.Is(err, oauth.ErrReauthRequired) {
		t.Fatalf("renewal refused with invalid_client: %v, want reauth required", err)
	}
	c, _ := e.store.GetConnection(ctx, "svc")
	if c.Status != store.StatusNeedsReauth || c.Failure == nil || !strings.Contains(c.Failure.Code, "invalid_client") {
		t.Errorf("after invalid_client: status %s failure %+v", c.Status, c.Failure)
	}
}
