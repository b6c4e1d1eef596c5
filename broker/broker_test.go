package broker_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/authztest"
	"github.com/tokenbroker/tokenbroker/oauth"
	"github.com/tokenbroker/tokenbroker/oauth/lifecycle"
	"github.com/tokenbroker/tokenbroker/seal"
	"github.com/tokenbroker/tokenbroker/store"
	"github.com/tokenbroker/tokenbroker/store/sqlite"
)

// env is one broker on a real SQLite file with a real key ring, talking to
// a real authorization server.
type env struct {
	t       testing.TB
	srv     *authztest.Server
	store   store.Backend
	ring    *seal.KeyRing
	ep      *countingEndpoint
	broker  *broker.Broker
	events  *recorder
	logs    *bytes.Buffer
	dbPath  string
	keyPath string
}

type envOptions struct {
	authz    authztest.Options
	provider func(*broker.Provider)
	store    func(store.Backend) store.Backend
}

func newEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	ctx := context.Background()
	srv := authztest.New(t, o.authz)
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "tb.db")
	st, err := sqlite.Open(ctx, dbPath, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	keyPath := filepath.Join(dir, "keys")
	ring, _, err := seal.LoadOrCreate(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, srv: srv, store: st, ring: ring, events: &recorder{}, logs: &bytes.Buffer{}, dbPath: dbPath, keyPath: keyPath}
	e.ep = newCountingEndpoint(t, srv)
	var s store.Backend = st
	if o.store != nil {
		s = o.store(st)
	}
	e.broker = e.newBroker(s, "replica-a", o.provider)
	return e
}

func (e *env) newBroker(s store.Backend, owner string, tweak func(*broker.Provider)) *broker.Broker {
	e.t.Helper()
	p := broker.Provider{
		Name:          "acme",
		Endpoint:      e.ep,
		Policy:        lifecycle.Policy{Window: time.Minute},
		CanIntrospect: true,
		CanRevoke:     true,
	}
	if tweak != nil {
		tweak(&p)
	}
	b, err := broker.New(broker.Options{
		Store:     s,
		Sealer:    e.ring,
		Providers: map[string]broker.Provider{"acme": p},
		Owner:     owner,
		LeaseTTL:  2 * time.Second,
		Logger:    slog.New(slog.NewTextHandler(&lockedWriter{w: e.logs}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Events:    e.events,
		Backoff:   oauth.Backoff{Base: time.Minute, Max: time.Hour},
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// importExpired stores a real grant from the authorization server whose
// access token the broker believes has expired.
func (e *env) importExpired(id string) (access, refresh string) {
	e.t.Helper()
	access, refresh, _ = e.srv.IssueTokens(e.t, "offline")
	_, err := e.broker.CreateConnection(context.Background(), broker.Import{
		ID: id, Provider: "acme", AccessToken: access, RefreshToken: refresh,
		ExpiresAt: time.Now().Add(-time.Minute),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return access, refresh
}

// countingEndpoint is the real oauth.Endpoint, counted.
type countingEndpoint struct {
	ep          *oauth.Endpoint
	refreshes   atomic.Int64
	introspects atomic.Int64
	revokes     atomic.Int64
	// refreshGate, when set, holds refreshes until it is closed.
	refreshGate chan struct{}
}

func newCountingEndpoint(t testing.TB, srv *authztest.Server) *countingEndpoint {
	ep, err := oauth.NewEndpoint(oauth.Config{
		ClientID: srv.ClientID, ClientSecret: srv.ClientSecret,
		TokenURL: srv.TokenURL(), IntrospectionURL: srv.IntrospectionURL(), RevocationURL: srv.RevocationURL(),
		Retry: oauth.Backoff{MaxAttempts: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	return &countingEndpoint{ep: ep}
}

func (c *countingEndpoint) Refresh(ctx context.Context, rt string) (*oauth.Token, error) {
	c.refreshes.Add(1)
	if c.refreshGate != nil {
		<-c.refreshGate
	}
	return c.ep.Refresh(ctx, rt)
}

func (c *countingEndpoint) Introspect(ctx context.Context, tok, hint string) (*oauth.Introspection, error) {
	c.introspects.Add(1)
	return c.ep.Introspect(ctx, tok, hint)
}

func (c *countingEndpoint) Revoke(ctx context.Context, tok, hint string) error {
	c.revokes.Add(1)
	return c.ep.Revoke(ctx, tok, hint)
}

type recorder struct {
	mu     sync.Mutex
	events []broker.Event
}

func (r *recorder) Emit(_ context.Context, e broker.Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *recorder) count(typ string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.events {
		if e.Type == typ {
			n++
		}
	}
	return n
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestConcurrentCallersShareOneRefresh(t *testing.T) {
	e := newEnv(t, envOptions{})
	oldAccess, oldRefresh := e.importExpired("c1")

	const callers = 200
	var wg sync.WaitGroup
	tokens := make([]string, callers)
	errs := make([]error, callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := e.broker.GetToken(context.Background(), "c1")
			tokens[i], errs[i] = tok.AccessToken, err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("caller %d: %v", i, err)
		}
		if tokens[i] != tokens[0] {
			t.Fatalf("caller %d got a different token than caller 0", i)
		}
	}
	if tokens[0] == oldAccess {
		t.Fatal("callers got the expired token back")
	}
	if got := e.srv.RefreshCalls(); got != 1 {
		t.Fatalf("authorization server saw %d refreshes, want 1", got)
	}
	if e.srv.ReuseDetected() != 0 {
		t.Fatal("a refresh token was replayed: the chain was revoked")
	}
	if !e.srv.Active(t, tokens[0]) {
		t.Fatal("the new access token is not active at the provider")
	}
	// The rotated refresh token was saved: the next refresh works.
	c, err := e.store.GetConnection(context.Background(), "c1")
	if err != nil {
		t.Fatal(err)
	}
	rt, err := e.ring.Open(c.RefreshToken, []byte("conn:c1:refresh"))
	if err != nil {
		t.Fatal(err)
	}
	if string(rt) == oldRefresh {
		t.Fatal("the rotated refresh token was not saved")
	}
	if _, err := e.broker.RefreshConnection(context.Background(), "c1", nil); err != nil {
		t.Fatalf("refresh with the saved rotated token: %v", err)
	}
	if e.srv.ReuseDetected() != 0 {
		t.Fatal("reuse detected after the second refresh")
	}
}

func TestTwoBrokersOnOneStoreRefreshOnce(t *testing.T) {
	// Two brokers with their own single-flight and lease owner, sharing one
	// SQLite file as two replicas would share a database: the lease alone
	// must keep them to one refresh.
	e := newEnv(t, envOptions{})
	e.importExpired("c1")
	st2, err := sqlite.Open(context.Background(), e.dbPath, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st2.Close() })
	b2 := e.newBroker(st2, "replica-b", nil)

	gate := make(chan struct{})
	e.ep.refreshGate = gate
	var wg sync.WaitGroup
	results := make(chan string, 100)
	for i := range 100 {
		b := e.broker
		if i%2 == 1 {
			b = b2
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := b.GetToken(context.Background(), "c1")
			if err != nil {
				t.Error(err)
				return
			}
			results <- tok.AccessToken
		}()
	}
	// Let the winner's refresh through once everyone is waiting on it.
	time.Sleep(100 * time.Millisecond)
	close(gate)
	wg.Wait()
	close(results)
	first := ""
	for tok := range results {
		if first == "" {
			first = tok
		}
		if tok != first {
			t.Fatal("replicas handed out different tokens")
		}
	}
	if got := e.srv.RefreshCalls(); got != 1 {
		t.Fatalf("authorization server saw %d refreshes, want 1", got)
	}
	if e.srv.ReuseDetected() != 0 {
		t.Fatal("reuse detected")
	}
}

func TestTerminalFailureMarksNeedsReauthAndStopsCalling(t *testing.T) {
	e := newEnv(t, envOptions{})
	_, refresh := e.importExpired("c1")
	// Revoke the grant at the provider: the next refresh is invalid_grant.
	if err := e.ep.ep.Revoke(context.Background(), refresh, "refresh_token"); err != nil {
		t.Fatal(err)
	}
	_, err := e.broker.GetToken(context.Background(), "c1")
	if !errors.Is(err, oauth.ErrReauthRequired) {
		t.Fatalf("GetToken = %v, want ErrReauthRequired", err)
	}
	c, _ := e.store.GetConnection(context.Background(), "c1")
	if c.Status != store.StatusNeedsReauth || c.Failure == nil || c.Failure.Code != "invalid_grant" {
		t.Fatalf("status %q failure %+v, want needs_reauth/invalid_grant", c.Status, c.Failure)
	}
	calls := e.ep.refreshes.Load()
	for range 50 {
		if _, err := e.broker.GetToken(context.Background(), "c1"); !errors.Is(err, oauth.ErrReauthRequired) {
			t.Fatalf("later GetToken = %v, want ErrReauthRequired", err)
		}
	}
	if _, err := e.broker.RefreshConnection(context.Background(), "c1", nil); !errors.Is(err, oauth.ErrReauthRequired) {
		t.Fatalf("forced refresh = %v, want ErrReauthRequired", err)
	}
	if got := e.ep.refreshes.Load(); got != calls {
		t.Fatalf("provider called %d more times after needs_reauth", got-calls)
	}
	if n := e.events.count(broker.EventReauthRequired); n != 1 {
		t.Fatalf("%d reauth_required events, want 1", n)
	}
}

func TestTransientFailureCoolsDown(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.importExpired("c1")
	e.srv.FailNext(1, 503, map[string][]string{"Retry-After": {"120"}}, "<html>maintenance</html>")
	_, err := e.broker.GetToken(context.Background(), "c1")
	if !errors.Is(err, oauth.ErrTransient) {
		t.Fatalf("GetToken = %v, want ErrTransient", err)
	}
	if ra := oauth.RetryAfter(err); ra < 120*time.Second {
		t.Fatalf("RetryAfter = %v, want at least the provider's 120s", ra)
	}
	calls := e.ep.refreshes.Load()
	// During the cooldown callers get the failure at once.
	_, err = e.broker.GetToken(context.Background(), "c1")
	if !errors.Is(err, oauth.ErrTransient) || oauth.RetryAfter(err) <= 0 {
		t.Fatalf("GetToken in cooldown = %v, want transient with Retry-After", err)
	}
	if e.ep.refreshes.Load() != calls {
		t.Fatal("provider called during the cooldown")
	}
	c, _ := e.store.GetConnection(context.Background(), "c1")
	if c.Status != store.StatusActive || c.Failure == nil || c.Failure.Attempts != 1 || c.Failure.Code != "http_503" {
		t.Fatalf("status %q failure %+v, want active with one http_503 attempt", c.Status, c.Failure)
	}
	if n := e.events.count(broker.EventRefreshFailed); n != 1 {
		t.Fatalf("%d refresh_failed events, want 1", n)
	}
}

func TestNoRefreshTokenServedUntilExpiryThenReauth(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	access, _, _ := e.srv.IssueTokens(t, "offline")
	_, err := e.broker.CreateConnection(ctx, broker.Import{ID: "valid", Provider: "acme", AccessToken: access, ExpiresIn: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := e.broker.GetToken(ctx, "valid")
	if err != nil || tok.AccessToken != access {
		t.Fatalf("valid token without refresh token: err %v", err)
	}
	// Inside the refresh window but not expired: still served.
	_, err = e.broker.CreateConnection(ctx, broker.Import{ID: "soon", Provider: "acme", AccessToken: access, ExpiresIn: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.broker.GetToken(ctx, "soon"); err != nil {
		t.Fatalf("token inside the window, no refresh token: %v", err)
	}
	_, err = e.broker.CreateConnection(ctx, broker.Import{ID: "gone", Provider: "acme", AccessToken: access, ExpiresAt: time.Now().Add(-time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.broker.GetToken(ctx, "gone")
	var oe *oauth.Error
	if !errors.As(err, &oe) || oe.Code != oauth.CodeNoRefreshToken || !oauth.Terminal(err) {
		t.Fatalf("expired token without refresh token = %v, want terminal no_refresh_token", err)
	}
	if e.ep.refreshes.Load() != 0 {
		t.Fatal("provider called without a refresh token")
	}
}

func TestExpiredRefreshTokenIsNotSent(t *testing.T) {
	e := newEnv(t, envOptions{})
	access, refresh, _ := e.srv.IssueTokens(t, "offline")
	_, err := e.broker.CreateConnection(context.Background(), broker.Import{
		ID: "c1", Provider: "acme", AccessToken: access, RefreshToken: refresh,
		ExpiresAt: time.Now().Add(-time.Minute), RefreshTokenExpiresAt: time.Now().Add(-time.Second),
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.broker.GetToken(context.Background(), "c1")
	var oe *oauth.Error
	if !errors.As(err, &oe) || oe.Code != oauth.CodeRefreshExpired {
		t.Fatalf("GetToken = %v, want refresh_token_expired", err)
	}
	if e.ep.refreshes.Load() != 0 {
		t.Fatal("an expired refresh token was sent to the provider")
	}
}

func TestDefaultExpiryIntrospectedOnce(t *testing.T) {
	e := newEnv(t, envOptions{
		authz:    authztest.Options{AccessTokenLifespan: 45 * time.Minute},
		provider: func(p *broker.Provider) { p.Policy.DefaultLifetime = 2 * time.Hour },
	})
	ctx := context.Background()
	access, refresh, _ := e.srv.IssueTokens(t, "offline")
	c, err := e.broker.CreateConnection(ctx, broker.Import{ID: "c1", Provider: "acme", AccessToken: access, RefreshToken: refresh})
	if err != nil {
		t.Fatal(err)
	}
	if c.ExpiryDefaulted {
		t.Fatal("expiry still defaulted after introspection")
	}
	if d := time.Until(c.ExpiresAt); d > 46*time.Minute || d < 40*time.Minute {
		t.Fatalf("expiry in %v, want the provider's 45m learned by introspection", d)
	}
	for range 20 {
		if _, err := e.broker.GetToken(ctx, "c1"); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.ep.introspects.Load(); n != 1 {
		t.Fatalf("%d introspections, want exactly 1", n)
	}
}

func TestDefaultExpiryWithoutIntrospection(t *testing.T) {
	e := newEnv(t, envOptions{provider: func(p *broker.Provider) {
		p.Policy.DefaultLifetime = 2 * time.Hour
		p.CanIntrospect = false
	}})
	access, _, _ := e.srv.IssueTokens(t, "offline")
	c, err := e.broker.CreateConnection(context.Background(), broker.Import{ID: "c1", Provider: "acme", AccessToken: access})
	if err != nil {
		t.Fatal(err)
	}
	if !c.ExpiryDefaulted || c.ExpiresAt.IsZero() {
		t.Fatal("a token with no expiry was treated as immortal")
	}
	if e.ep.introspects.Load() != 0 {
		t.Fatal("introspected a provider without introspection")
	}
}

func TestForcedRefreshOfReplacedTokenReturnsCurrent(t *testing.T) {
	e := newEnv(t, envOptions{})
	old, _ := e.importExpired("c1")
	fresh, err := e.broker.GetToken(context.Background(), "c1")
	if err != nil {
		t.Fatal(err)
	}
	// A caller that saw the old token fail asks for a refresh: the token
	// was already replaced, so no second refresh happens.
	got, err := e.broker.RefreshConnection(context.Background(), "c1", &old)
	if err != nil {
		t.Fatal(err)
	}
	if got.AccessToken != fresh.AccessToken {
		t.Fatal("forced refresh of a replaced token did not return the current token")
	}
	if n := e.srv.RefreshCalls(); n != 1 {
		t.Fatalf("%d refreshes, want 1", n)
	}
	// Forcing with the current token does refresh.
	cur := fresh.AccessToken
	again, err := e.broker.RefreshConnection(context.Background(), "c1", &cur)
	if err != nil {
		t.Fatal(err)
	}
	if again.AccessToken == cur || e.srv.RefreshCalls() != 2 {
		t.Fatal("forced refresh of the current token did not refresh")
	}
}

func TestForcedRefreshOfValidToken(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	access, refresh, _ := e.srv.IssueTokens(t, "offline")
	if _, err := e.broker.CreateConnection(ctx, broker.Import{ID: "c1", Provider: "acme", AccessToken: access, RefreshToken: refresh, ExpiresIn: time.Hour}); err != nil {
		t.Fatal(err)
	}
	got, err := e.broker.RefreshConnection(ctx, "c1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.AccessToken == access || e.srv.RefreshCalls() != 1 {
		t.Fatalf("forced refresh of a valid token: %d refreshes, token replaced %v", e.srv.RefreshCalls(), got.AccessToken != access)
	}
	// A forced refresh also ends a transient failure's cooldown early.
	e.srv.FailNext(1, 503, nil, "")
	if _, err := e.broker.RefreshConnection(ctx, "c1", nil); !errors.Is(err, oauth.ErrTransient) {
		t.Fatalf("refresh against a failing provider = %v, want transient", err)
	}
	if _, err := e.broker.RefreshConnection(ctx, "c1", nil); err != nil {
		t.Fatalf("forced refresh in a cooldown: %v", err)
	}
	if e.srv.RefreshCalls() != 3 {
		t.Fatalf("%d refreshes, want 3", e.srv.RefreshCalls())
	}
	c, _ := e.store.GetConnection(ctx, "c1")
	if c.Failure != nil {
		t.Fatal("a successful refresh did not clear the failure")
	}
	if e.events.count(broker.EventRecovered) != 1 {
		t.Fatal("no recovered event after the failure cleared")
	}
}

func TestDeadLeaseHolderBlocksOnlyUntilExpiry(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.importExpired("c1")
	// A replica took the lease and died.
	if _, err := e.store.AcquireLease(context.Background(), "c1", "dead-replica", 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	tok, err := e.broker.GetToken(context.Background(), "c1")
	if err != nil {
		t.Fatalf("GetToken after the dead lease lapsed: %v", err)
	}
	if tok.AccessToken == "" || e.srv.RefreshCalls() != 1 {
		t.Fatalf("want one refresh after the lease lapsed, got %d", e.srv.RefreshCalls())
	}
}

// flakyStore fails compare-and-swap writes while down is set, as a database
// that went away between the provider's answer and the save would. The
// write that marks a refresh as started (RefreshStartedAt set) goes
// through: the database was there when the refresh began.
type flakyStore struct {
	store.Backend
	down atomic.Bool
}

func (f *flakyStore) CompareAndSwap(ctx context.Context, c store.Connection, events ...store.Event) (store.Connection, error) {
	if f.down.Load() && c.RefreshStartedAt.IsZero() {
		return store.Connection{}, store.ErrUnavailable
	}
	return f.Backend.CompareAndSwap(ctx, c, events...)
}

func TestRotatedTokenNotLostWhenSaveFails(t *testing.T) {
	var flaky *flakyStore
	e := newEnv(t, envOptions{store: func(s store.Backend) store.Backend {
		flaky = &flakyStore{Backend: s}
		return flaky
	}})
	e.importExpired("c1")
	flaky.down.Store(true)
	tok, err := e.broker.GetToken(context.Background(), "c1")
	if err != nil {
		t.Fatalf("GetToken with the save failing: %v (the new token must still be handed out)", err)
	}
	flaky.down.Store(false)
	// The next flight saves the kept token before calling the provider.
	got, err := e.broker.RefreshConnection(context.Background(), "c1", &tok.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if e.srv.ReuseDetected() != 0 {
		t.Fatal("the spent refresh token was replayed: the unsaved rotation was lost")
	}
	if got.AccessToken == tok.AccessToken {
		t.Fatal("forced refresh did not refresh")
	}
	if e.srv.RefreshCalls() != 2 {
		t.Fatalf("%d refreshes, want 2", e.srv.RefreshCalls())
	}
}

func TestResealAfterRotation(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	for _, id := range []string{"a", "b", "c"} {
		e.importExpired(id)
	}
	oldPrimary := e.ring.PrimaryID()
	newID, err := seal.Rotate(e.keyPath)
	if err != nil {
		t.Fatal(err)
	}
	ring, err := seal.Load(e.keyPath)
	if err != nil {
		t.Fatal(err)
	}
	e.ring = ring
	b := e.newBroker(e.store, "replica-a", nil)
	n, err := b.Reseal(ctx)
	if err != nil || n != 3 {
		t.Fatalf("Reseal = %d, %v; want 3", n, err)
	}
	for _, id := range []string{"a", "b", "c"} {
		c, err := e.store.GetConnection(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		for _, sealed := range [][]byte{c.AccessToken, c.RefreshToken} {
			kid, err := ring.KeyID(sealed)
			if err != nil || kid != newID || kid == oldPrimary {
				t.Fatalf("%s sealed under %q after reseal, want the new primary %q (%v)", id, kid, newID, err)
			}
		}
		if _, err := b.GetToken(ctx, id); err != nil {
			t.Fatalf("token %s after reseal: %v", id, err)
		}
	}
}

func TestImportValidation(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	cases := []struct {
		name  string
		in    broker.Import
		field string
	}{
		{"bad id", broker.Import{ID: "../x", Provider: "acme", AccessToken: "a"}, "id"},
		{"empty id", broker.Import{Provider: "acme", AccessToken: "a"}, "id"},
		{"no provider", broker.Import{ID: "x", AccessToken: "a"}, "provider"},
		{"unknown provider", broker.Import{ID: "x", Provider: "nope", AccessToken: "a"}, "provider"},
		{"no access token", broker.Import{ID: "x", Provider: "acme"}, "access_token"},
		{"negative expiry", broker.Import{ID: "x", Provider: "acme", AccessToken: "a", ExpiresIn: -time.Second}, "expires_in"},
		{"both expiries", broker.Import{ID: "x", Provider: "acme", AccessToken: "a", ExpiresIn: time.Hour, ExpiresAt: time.Now()}, "expires_at"},
		{"bad metadata", broker.Import{ID: "x", Provider: "acme", AccessToken: "a", Metadata: []byte("{")}, "metadata"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.broker.CreateConnection(ctx, tc.in)
			var ve *broker.ValidationError
			if !errors.As(err, &ve) || ve.Field != tc.field {
				t.Fatalf("err = %v, want a ValidationError on %s", err, tc.field)
			}
		})
	}
	page, err := e.broker.ListConnections(ctx, store.ListOptions{})
	if err != nil || len(page.Connections) != 0 {
		t.Fatalf("bad imports stored something: %d rows, %v", len(page.Connections), err)
	}
	e.importExpired("dup")
	_, err = e.broker.CreateConnection(ctx, broker.Import{ID: "dup", Provider: "acme", AccessToken: "a"})
	if !errors.Is(err, broker.ErrAlreadyExists) {
		t.Fatalf("duplicate id: %v", err)
	}
}

func TestDeleteRevokesAtProvider(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	access, _ := e.importExpired("c1")
	revokeErr, err := e.broker.DeleteConnection(ctx, "c1")
	if err != nil || revokeErr != nil {
		t.Fatalf("delete: %v, revoke: %v", err, revokeErr)
	}
	if e.srv.Active(t, access) {
		t.Fatal("the grant is still active after delete")
	}
	if _, err := e.broker.GetConnection(ctx, "c1"); !errors.Is(err, broker.ErrNotFound) {
		t.Fatalf("connection still there: %v", err)
	}
	if e.events.count(broker.EventDeleted) != 1 {
		t.Fatal("no deleted event")
	}
}

func TestLogsCarryNoTokens(t *testing.T) {
	e := newEnv(t, envOptions{})
	access, refresh := e.importExpired("c1")
	tok, err := e.broker.GetToken(context.Background(), "c1")
	if err != nil {
		t.Fatal(err)
	}
	e.srv.FailNext(1, 400, nil, `{"error":"invalid_grant","error_description":"bad"}`)
	_, _ = e.broker.RefreshConnection(context.Background(), "c1", nil)
	logs := e.logs.String()
	if logs == "" {
		t.Fatal("nothing was logged")
	}
	for _, secret := range []string{access, refresh, tok.AccessToken} {
		if bytes.Contains([]byte(logs), []byte(secret)) {
			t.Fatal("a token value appears in the logs")
		}
	}
}

func TestStaleRefreshDoesNotOverwriteNewerToken(t *testing.T) {
	for _, tc := range []struct {
		name string
		// meddle writes to the row while the refresh is at the provider.
		meddle    func(t *testing.T, e *env)
		wantOurs  bool
		wantFresh string
	}{
		{
			name: "another refresh saved a newer token",
			meddle: func(t *testing.T, e *env) {
				sealed, err := e.ring.Seal([]byte("newer-access-token-from-another-replica"), []byte("conn:c1:access"))
				if err != nil {
					t.Fatal(err)
				}
				_, err = e.store.UpdateConnection(context.Background(), "c1", func(old store.Connection) (store.Connection, []store.Event, error) {
					old.AccessToken = sealed
					old.ExpiresAt = time.Now().Add(time.Hour)
					return old, nil, nil
				})
				if err != nil {
					t.Fatal(err)
				}
			},
			wantFresh: "newer-access-token-from-another-replica",
		},
		{
			name: "only bookkeeping changed",
			meddle: func(t *testing.T, e *env) {
				_, err := e.store.UpdateConnection(context.Background(), "c1", func(old store.Connection) (store.Connection, []store.Event, error) {
					old.Metadata = []byte(`{"team":"blue"}`)
					return old, nil, nil
				})
				if err != nil {
					t.Fatal(err)
				}
			},
			wantOurs: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{})
			e.importExpired("c1")
			gate := make(chan struct{})
			e.ep.refreshGate = gate
			done := make(chan broker.Token, 1)
			go func() {
				tok, err := e.broker.GetToken(context.Background(), "c1")
				if err != nil {
					t.Error(err)
				}
				done <- tok
			}()
			for e.ep.refreshes.Load() == 0 {
				time.Sleep(time.Millisecond)
			}
			tc.meddle(t, e)
			close(gate)
			got := <-done
			c, err := e.store.GetConnection(context.Background(), "c1")
			if err != nil {
				t.Fatal(err)
			}
			stored, err := e.ring.Open(c.AccessToken, []byte("conn:c1:access"))
			if err != nil {
				t.Fatal(err)
			}
			if string(stored) != got.AccessToken {
				t.Fatal("the caller got a different token than the one stored")
			}
			if tc.wantOurs {
				if !e.srv.Active(t, got.AccessToken) || string(c.Metadata) != `{"team":"blue"}` {
					t.Fatal("the refreshed token was not applied over the bookkeeping change")
				}
			} else if got.AccessToken != tc.wantFresh {
				t.Fatal("a refresh from an old snapshot overwrote a newer token")
			}
		})
	}
}

// Flights of different kinds for one connection in one process (a caller's
// on-demand refresh, the scheduler's, a proxy's after a 401) must exclude
// each other at the lease like flights in different processes do.
func TestFlightsOfDifferentKindsRefreshOnce(t *testing.T) {
	for _, second := range []struct {
		name string
		call func(b *broker.Broker, stale string) error
	}{
		{"scheduled", func(b *broker.Broker, _ string) error { return b.RefreshIfDue(context.Background(), "c1") }},
		{"stale token", func(b *broker.Broker, stale string) error {
			_, err := b.RefreshConnection(context.Background(), "c1", &stale)
			return err
		}},
	} {
		t.Run(second.name, func(t *testing.T) {
			e := newEnv(t, envOptions{})
			old, _ := e.importExpired("c1")
			gate := make(chan struct{})
			e.ep.refreshGate = gate
			first := make(chan error, 1)
			go func() {
				_, err := e.broker.GetToken(context.Background(), "c1")
				first <- err
			}()
			for e.ep.refreshes.Load() == 0 {
				time.Sleep(time.Millisecond)
			}
			// The on-demand flight is at the provider, holding the lease.
			done := make(chan error, 1)
			go func() { done <- second.call(e.broker, old) }()
			time.Sleep(50 * time.Millisecond)
			close(gate)
			if err := <-first; err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatalf("second flight: %v", err)
			}
			if n := e.srv.RefreshCalls(); n != 1 || e.srv.ReuseDetected() != 0 {
				t.Fatalf("%d refreshes, %d reuses; want 1 and 0", n, e.srv.ReuseDetected())
			}
		})
	}
}
