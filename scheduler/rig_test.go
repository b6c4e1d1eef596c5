package scheduler_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/oauth"
	"github.com/tokenbroker/tokenbroker/oauth/lifecycle"
	"github.com/tokenbroker/tokenbroker/scheduler"
	"github.com/tokenbroker/tokenbroker/seal"
	"github.com/tokenbroker/tokenbroker/store"
	"github.com/tokenbroker/tokenbroker/store/sqlite"
)

// pipeNet is an in-memory network: every dial is a net.Pipe whose far end
// the listener accepts. Under testing/synctest a goroutine blocked on it is
// durably blocked, so the bubble's clock can advance while idle keep-alive
// connections wait, which real sockets would prevent.
type pipeNet struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newPipeNet() *pipeNet {
	return &pipeNet{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (p *pipeNet) Accept() (net.Conn, error) {
	select {
	case c := <-p.conns:
		return c, nil
	case <-p.closed:
		return nil, net.ErrClosed
	}
}

func (p *pipeNet) Close() error {
	p.once.Do(func() { close(p.closed) })
	return nil
}

func (p *pipeNet) Addr() net.Addr { return pipeAddr{} }

func (p *pipeNet) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case p.conns <- server:
		return client, nil
	case <-p.closed:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "provider.test:80" }

// fakeProvider is a token endpoint that rotates refresh tokens on every
// use and refuses a spent one (as Hydra or Auth0 do), counts calls per
// connection and per second of the clock, and notes refreshes that came
// after the access token they replace had expired.
type fakeProvider struct {
	expiresIn time.Duration

	mu          sync.Mutex
	conns       map[string]*fakeConn
	perSecond   map[int64]int
	calls       int
	late        []string
	reused      int
	outageFrom  time.Time // 503 between outageFrom and outageUntil
	outageUntil time.Time
	dead        map[string]bool // answer invalid_grant
}

type fakeConn struct {
	gen       int
	expiresAt time.Time // of the access token issued last
	calls     int
	refreshed int // successful refreshes
}

func newFakeProvider(expiresIn time.Duration) *fakeProvider {
	return &fakeProvider{expiresIn: expiresIn, conns: map[string]*fakeConn{}, perSecond: map[int64]int{}, dead: map[string]bool{}}
}

// grant registers a connection's first tokens, the ones imported into the
// broker, and returns them.
func (f *fakeProvider) grant(id string, expiresAt time.Time) (access, refresh string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.conns[id] = &fakeConn{expiresAt: expiresAt}
	return "fake-at:" + id + ":0", "fake-rt:" + id + ":0"
}

func (f *fakeProvider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "refresh_token" {
		writeJSON(w, http.StatusBadRequest, `{"error":"invalid_request"}`)
		return
	}
	id, genStr, ok := strings.Cut(strings.TrimPrefix(r.PostForm.Get("refresh_token"), "fake-rt:"), ":")
	gen, err := strconv.Atoi(genStr)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.perSecond[now.Unix()]++
	c := f.conns[id]
	if !ok || err != nil || c == nil {
		writeJSON(w, http.StatusBadRequest, `{"error":"invalid_grant"}`)
		return
	}
	c.calls++
	if !now.Before(f.outageFrom) && now.Before(f.outageUntil) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("<html>down for maintenance</html>"))
		return
	}
	if f.dead[id] {
		writeJSON(w, http.StatusBadRequest, `{"error":"invalid_grant","error_description":"grant revoked (fake)"}`)
		return
	}
	if gen != c.gen {
		f.reused++
		writeJSON(w, http.StatusBadRequest, `{"error":"invalid_grant","error_description":"refresh token reused (fake)"}`)
		return
	}
	if !now.Before(c.expiresAt) {
		f.late = append(f.late, id)
	}
	c.gen++
	c.refreshed++
	c.expiresAt = now.Add(f.expiresIn)
	writeJSON(w, http.StatusOK, fmt.Sprintf(`{"access_token":"fake-at:%s:%d","refresh_token":"fake-rt:%s:%d","token_type":"Bearer","expires_in":%d}`,
		id, c.gen, id, c.gen, int(f.expiresIn/time.Second)))
}

func writeJSON(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

func (f *fakeProvider) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// maxPerSecond is the most calls the provider saw in one second.
func (f *fakeProvider) maxPerSecond() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := 0
	for _, n := range f.perSecond {
		m = max(m, n)
	}
	return m
}

func (f *fakeProvider) conn(id string) fakeConn {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c := f.conns[id]; c != nil {
		return *c
	}
	return fakeConn{}
}

// rig is a real broker on a real SQLite store talking HTTP to a fake
// provider over an in-memory network, with a scheduler in front.
type rig struct {
	t        *testing.T
	provider *fakeProvider
	store    *sqlite.Store
	broker   *broker.Broker
	sched    *scheduler.Scheduler
	net      *pipeNet
	srv      *http.Server
	tr       *http.Transport
	served   chan struct{}
}

type rigOptions struct {
	expiresIn time.Duration // of refreshed tokens
	limit     scheduler.Limit
	sched     func(*scheduler.Options)
	brokerOpt func(*broker.Options)
}

// newRig must be called inside a synctest bubble: it starts goroutines
// (the provider's server) that stop in the cleanup.
func newRig(t *testing.T, o rigOptions) *rig {
	t.Helper()
	ctx := t.Context()
	dir := t.TempDir()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "tb.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ring, _, err := seal.LoadOrCreate(filepath.Join(dir, "keys"))
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, provider: newFakeProvider(o.expiresIn), store: st, net: newPipeNet(), served: make(chan struct{})}
	r.srv = &http.Server{Handler: r.provider}
	go func() {
		defer close(r.served)
		_ = r.srv.Serve(r.net)
	}()
	r.tr = &http.Transport{DialContext: r.net.dial, MaxIdleConnsPerHost: 32}
	ep, err := oauth.NewEndpoint(oauth.Config{
		ClientID: "fake-client", ClientSecret: "fake-secret", TokenURL: "http://provider.test/token",
		AuthStyle: oauth.AuthStyleHeader, HTTPClient: &http.Client{Transport: r.tr},
	})
	if err != nil {
		t.Fatal(err)
	}
	bo := broker.Options{
		Store: st, Sealer: ring, Owner: "replica-a",
		Providers: map[string]broker.Provider{"acme": {Endpoint: ep, Policy: lifecycle.Policy{Window: 5 * time.Minute}}},
	}
	if o.brokerOpt != nil {
		o.brokerOpt(&bo)
	}
	if r.broker, err = broker.New(bo); err != nil {
		t.Fatal(err)
	}
	so := scheduler.Options{
		Store: st, Refresher: r.broker, Owner: "replica-a",
		Limits: map[string]scheduler.Limit{"acme": o.limit},
	}
	if o.sched != nil {
		o.sched(&so)
	}
	if r.sched, err = scheduler.New(so); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.close)
	return r
}

func (r *rig) close() {
	_ = r.srv.Close()
	<-r.served
	r.tr.CloseIdleConnections()
	_ = r.store.Close()
}

// add imports a connection whose access token expires at expiresAt.
func (r *rig) add(id string, expiresAt time.Time) {
	r.t.Helper()
	access, refresh := r.provider.grant(id, expiresAt)
	if _, err := r.broker.CreateConnection(r.t.Context(), broker.Import{
		ID: id, Provider: "acme", AccessToken: access, RefreshToken: refresh, ExpiresAt: expiresAt,
	}); err != nil {
		r.t.Fatalf("import %s: %v", id, err)
	}
}

// run runs the scheduler for d of the bubble's time.
func (r *rig) run(d time.Duration) {
	ctx, cancel := context.WithCancel(r.t.Context())
	done := make(chan error, 1)
	go func() { done <- r.sched.Run(ctx) }()
	time.Sleep(d)
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		r.t.Errorf("Run: %v", err)
	}
}

func (r *rig) get(id string) store.Connection {
	r.t.Helper()
	c, err := r.store.GetConnection(r.t.Context(), id)
	if err != nil {
		r.t.Fatalf("get %s: %v", id, err)
	}
	return c
}
