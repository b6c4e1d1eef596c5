package invariant

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/authztest"
)

// Target is a running tokenbroker deployment: one process or several
// replicas sharing a database, configured with one provider named
// Provider whose token endpoint is the authorization server handed to Run
// and whose API is the Upstream.
type Target interface {
	// Replicas is how many processes serve the API.
	Replicas() int
	// URL is replica i's base URL; it may change after a restart.
	URL(i int) string
	// AdminKey is an admin API key valid on every replica.
	AdminKey() string
	// Stored reads connection id as stored, its refresh token opened.
	Stored(t testing.TB, id string) (Row, bool)
	// Events is connection id's lifecycle history from the outbox, oldest
	// first, across all its incarnations.
	Events(t testing.TB, id string) []string
	// Kill stops replica i with SIGKILL and Restart starts it again; Kill
	// reports false when the target cannot kill (one in-process server).
	Kill(t testing.TB, i int) bool
	Restart(t testing.TB, i int)
	// RotateKeys rotates the encryption key file every replica shares.
	RotateKeys(t testing.TB)
}

// Row is what the checks need of a stored connection.
type Row struct {
	Status       string
	FailureCode  string
	RefreshToken string
	// RefreshInFlight: a refresh was marked as started and has not written
	// its answer yet (or its process died): the stored refresh token may
	// already be spent at the provider.
	RefreshInFlight bool
}

// Provider is the provider's name in the target's configuration.
const Provider = "acme"

// Config shapes one run.
type Config struct {
	Seed int64
	Ops  int
	// IDs is the number of connection ids the run plays with; few ids make
	// deletes and re-creates collide with refreshes often.
	IDs int
	// RefreshTimeout is the target's refresh.timeout: an injected provider
	// delay longer than it makes a timeout after the request was sent.
	RefreshTimeout time.Duration
	// OnErrorInterval is the target's refresh.on_error_interval.
	OnErrorInterval time.Duration
	// Kills caps how many replicas the run kills mid-refresh (multi-process
	// targets only).
	Kills int
}

// Upstream is the provider's API behind the proxy. It answers 401 to a
// random share of calls, and records every token it was shown, with the
// connection id the call was for.
type Upstream struct {
	*httptest.Server
	mu     sync.Mutex
	rnd    *rand.Rand
	reject float64
	seen   []shown
}

type shown struct{ id, token string }

// NewUpstream starts the API on 127.0.0.1. Calls for connection id must use
// the path /calls/{id}.
func NewUpstream(t testing.TB, seed int64) *Upstream {
	u := &Upstream{rnd: rand.New(rand.NewPCG(uint64(seed), 0x75707374))}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		u.mu.Lock()
		u.seen = append(u.seen, shown{id, tok})
		reject := u.rnd.Float64() < u.reject
		u.mu.Unlock()
		if reject {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *Upstream) setReject(p float64) {
	u.mu.Lock()
	u.reject = p
	u.mu.Unlock()
}

// drain returns and forgets what the API was shown.
func (u *Upstream) drain() []shown {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := u.seen
	u.seen = nil
	return s
}

// conn is the model of one connection id.
type conn struct {
	exists bool
	grant  string // the provider's grant of the current incarnation
	// The events its lifecycle must have produced, by type.
	created, deleted int
	killed           bool // a replica died mid-refresh of it
}

// budget counts, per grant, the refreshes the run allowed.
type budget struct {
	forced, rejected, faults, kills int
	since                           time.Time
}

type run struct {
	t      *testing.T
	cfg    Config
	tgt    Target
	authz  *authztest.Server
	api    *Upstream
	rnd    *rand.Rand
	conns  map[string]*conn
	grants map[string]*budget
	client *http.Client
	step   int
	op     string
	kills  int
	counts map[string]int // operations and faults played, by kind
	final  bool           // the checks after the last operation
}

// Run plays cfg.Ops random operations against tgt and checks the
// invariants after every one and at the end (docs/architecture.md):
//
//   - no refresh token is ever presented to the provider twice;
//   - no caller, and no API behind the proxy, ever gets a token of a
//     deleted or replaced incarnation of a connection;
//   - an active connection's stored refresh token is the provider's live
//     one for its grant: no rotation is lost; a connection whose refresh
//     was cut off ends needs_reauth (refresh_outcome_unknown), never
//     silently broken;
//   - a grant is refreshed no more often than the run allowed: forced
//     refreshes, the on-error budget, injected faults and tokens coming due;
//   - every lifecycle change emitted exactly its event.
//
// The seed is logged, and on failure printed with the step that failed.
func Run(t *testing.T, tgt Target, authz *authztest.Server, api *Upstream, cfg Config) {
	t.Logf("invariant run: seed %d, %d operations over %d ids, %d replicas", cfg.Seed, cfg.Ops, cfg.IDs, tgt.Replicas())
	r := &run{
		t: t, cfg: cfg, tgt: tgt, authz: authz, api: api,
		rnd:    rand.New(rand.NewPCG(uint64(cfg.Seed), 0x696e7661)),
		conns:  map[string]*conn{},
		grants: map[string]*budget{},
		client: &http.Client{Timeout: 30 * time.Second},
		counts: map[string]int{},
	}
	for i := range cfg.IDs {
		r.conns[fmt.Sprintf("c%02d", i)] = &conn{}
	}
	for r.step = 1; r.step <= cfg.Ops; r.step++ {
		id := fmt.Sprintf("c%02d", r.rnd.IntN(cfg.IDs))
		r.play(id)
		r.checkTokensShown()
		r.checkStored(id)
		if n := authz.ReuseDetected(); n != 0 {
			r.fail("the provider saw a refresh token presented twice (%d reuses)", n)
		}
	}
	r.final = true
	r.settle()
	for id, c := range r.conns {
		if c.exists && c.killed {
			// A refresh cut off by a kill is resolved by the next use of
			// the connection: it must end honest, not silently broken.
			r.op = "final read " + id
			status, body := r.call(0, "GET", "/v1/connections/"+id+"/token", nil)
			r.expectServed(id, status, body)
		}
		r.checkStored(id)
		r.checkEvents(id)
	}
	r.checkRefreshCounts()
	reauth := 0
	for id := range r.conns {
		if row, ok := tgt.Stored(t, id); ok && row.Status == "needs_reauth" {
			reauth++
		}
	}
	t.Logf("invariants held: %v; %d provider refreshes, %d grants, %d connections left needing a person",
		r.counts, authz.RefreshCalls(), len(r.grants), reauth)
}

func (r *run) fail(format string, args ...any) {
	r.t.Helper()
	r.t.Fatalf("seed %d, step %d (%s): %s", r.cfg.Seed, r.step, r.op, fmt.Sprintf(format, args...))
}

// play runs one random operation on id, sometimes with a provider fault.
func (r *run) play(id string) {
	c := r.conns[id]
	replica := r.rnd.IntN(r.tgt.Replicas())
	fault := ""
	// withFault arms a provider fault, sometimes, for an operation that may
	// refresh (never for an import, whose grant the test gets first).
	withFault := func() {
		fault = r.armFault()
	}
	defer func() { r.disarm(fault) }()
	switch p := r.rnd.IntN(100); {
	case !c.exists || p < 8:
		r.op = "import " + id
		r.importGrant(id, replica, !c.exists && r.rnd.IntN(2) == 0)
	case p < 14:
		r.op = "delete " + id
		status, _ := r.call(replica, "DELETE", "/v1/connections/"+id, nil)
		if status != http.StatusOK {
			r.fail("delete: status %d", status)
		}
		c.exists = false
		c.deleted++
	case p < 55:
		r.op = "token " + id
		withFault()
		status, body := r.call(replica, "GET", "/v1/connections/"+id+"/token", nil)
		r.expectServed(id, status, body)
	case p < 80:
		r.op = "proxy " + id
		withFault()
		r.api.setReject(0.3)
		status, _ := r.call(replica, "GET", "/v1/proxy/"+id+"/calls/"+id, nil)
		r.api.setReject(0)
		switch status {
		case http.StatusNoContent, http.StatusUnauthorized:
			if status == http.StatusUnauthorized {
				r.budgetOf(c.grant).rejected++
			}
		case http.StatusConflict, http.StatusServiceUnavailable:
		default:
			r.fail("proxied call: status %d", status)
		}
	case p < 90 && r.usable(id):
		r.op = "forced refresh " + id
		r.budgetOf(c.grant).forced++
		withFault()
		// The answer is the connection's view, without tokens.
		status, _ := r.call(replica, "POST", "/v1/connections/"+id+"/refresh", nil)
		r.expectServed(id, status, nil)
	case p < 93:
		r.op = "rotate keys"
		r.tgt.RotateKeys(r.t)
	case p < 96 && r.kills < r.cfg.Kills && r.tgt.Replicas() > 1 && r.usable(id):
		r.op = "kill mid-refresh " + id
		r.killDuringRefresh(id, replica)
	default:
		r.op = "re-import " + id
		r.importGrant(id, replica, false)
	}
	kind, _, _ := strings.Cut(r.op, " c")
	r.counts[kind]++
	if fault != "" {
		r.op += " with " + fault
		r.counts[fault]++
		r.budgetOf(c.grant).faults++
	}
}

// usable reports whether id's connection is active with no refresh in
// flight. A forced refresh of one whose last refresh had an unknown outcome
// is a person's call to make (the provider may have spent the token), and
// the run never makes it; nor does it force one that may be about to.
func (r *run) usable(id string) bool {
	row, ok := r.tgt.Stored(r.t, id)
	return ok && row.Status == "active" && !row.RefreshInFlight
}

// armFault injects a provider fault for the next operation, sometimes: a
// 503 (transient), a gateway's 504 (outcome unknown, token not spent), a
// delay past the refresh timeout (outcome unknown, token spent), or plain
// latency.
func (r *run) armFault() string {
	switch p := r.rnd.IntN(200); {
	case p < 6:
		r.authz.FailNext(1, http.StatusServiceUnavailable, http.Header{"Retry-After": {"1"}}, "")
		return "503"
	case p < 8:
		r.authz.FailNext(1, http.StatusGatewayTimeout, nil, "gateway timeout")
		return "504"
	case p < 9:
		r.authz.SetTokenDelay(r.cfg.RefreshTimeout + 500*time.Millisecond)
		return "timeout after send"
	case p < 25:
		r.authz.SetTokenDelay(time.Duration(10+r.rnd.IntN(140)) * time.Millisecond)
		return "latency"
	}
	return ""
}

func (r *run) disarm(fault string) {
	switch fault {
	case "503", "504":
		r.authz.FailNext(0, http.StatusOK, nil, "")
	case "timeout after send", "latency":
		r.authz.SetTokenDelay(0)
	}
}

// importGrant gives id a new grant from the provider: POST when the id is
// free (or create says so), else PUT (re-import).
func (r *run) importGrant(id string, replica int, expired bool) {
	c := r.conns[id]
	access, refresh, _ := r.authz.IssueTokens(r.t, "offline")
	grant, _ := r.authz.GrantOf(access)
	body := map[string]any{"id": id, "provider": Provider, "access_token": access, "refresh_token": refresh, "expires_in": 3600}
	if expired {
		// Due soon: the scheduler, or the next read, refreshes it.
		body["expires_in"] = 1 + r.rnd.IntN(3)
	}
	method, path, want := "POST", "/v1/connections", http.StatusCreated
	if c.exists {
		method, path, want = "PUT", "/v1/connections/"+id, http.StatusOK
	}
	status, _ := r.call(replica, method, path, body)
	if status != want {
		r.fail("%s %s: status %d, want %d", method, path, status, want)
	}
	if !c.exists {
		c.created++
	}
	c.exists, c.grant, c.killed = true, grant, false
	r.grants[grant] = &budget{since: time.Now()}
	if expired {
		r.grants[grant].forced++ // its first refresh is due at once
	}
}

// expectServed checks a token answer: a token of the current grant, or an
// honest error.
func (r *run) expectServed(id string, status int, body map[string]any) {
	c := r.conns[id]
	switch status {
	case http.StatusOK:
		if body == nil {
			return
		}
		tok, _ := body["access_token"].(string)
		if g, ok := r.authz.GrantOf(tok); !ok || g != c.grant {
			r.fail("handed out a token of grant %q, want the current grant %q", g, c.grant)
		}
	case http.StatusConflict, http.StatusServiceUnavailable:
		// reauth_required after an injected fault, provider_unavailable.
	default:
		r.fail("status %d", status)
	}
}

// killDuringRefresh has replica start a refresh of id, waits until the
// provider has processed it (the refresh token is spent) and kills the
// replica before it hears the answer; then starts it again.
func (r *run) killDuringRefresh(id string, replica int) {
	c := r.conns[id]
	held := make(chan struct{}, 1)
	r.authz.OnHold(func() {
		select {
		case held <- struct{}{}:
		default:
		}
	})
	r.authz.SetTokenDelay(time.Minute)
	answered := make(chan struct{})
	go func() {
		defer close(answered)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "POST", r.tgt.URL(replica)+"/v1/connections/"+id+"/refresh", nil)
		req.Header.Set("Authorization", "Bearer "+r.tgt.AdminKey())
		if resp, err := r.client.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	select {
	case <-held:
	case <-answered:
		// Another replica's refresh answered this one (it waited for that
		// one's lease): there was nothing in flight to kill.
		r.authz.OnHold(nil)
		r.authz.SetTokenDelay(0)
		r.op += " (answered without a refresh)"
		return
	case <-time.After(30 * time.Second):
		r.fail("the refresh to be interrupted never reached the provider")
	}
	r.authz.OnHold(nil)
	if !r.tgt.Kill(r.t, replica) {
		r.fail("the target cannot kill replicas")
	}
	r.authz.SetTokenDelay(0)
	r.tgt.Restart(r.t, replica)
	r.kills++
	c.killed = true
	r.budgetOf(c.grant).kills++
}

// settle waits, bounded, for refreshes in flight in the background (the
// schedulers') to write their answers, so that the final checks see rows
// at rest. A mark left by a killed replica stays; the final read resolves
// it.
func (r *run) settle() {
	deadline := time.Now().Add(time.Minute)
	for id, c := range r.conns {
		for c.exists && !c.killed {
			row, ok := r.tgt.Stored(r.t, id)
			if !ok || !row.RefreshInFlight {
				break
			}
			if time.Now().After(deadline) {
				r.fail("%s: a refresh stayed in flight for a minute", id)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// checkTokensShown: every token the API behind the proxy saw belongs to
// the connection's current grant.
func (r *run) checkTokensShown() {
	for _, s := range r.api.drain() {
		c, ok := r.conns[s.id]
		if !ok {
			r.fail("the API was called for an unknown connection %q", s.id)
		}
		if g, ok := r.authz.GrantOf(s.token); !ok || g != c.grant {
			r.fail("the API was shown a token of grant %q for %s, whose grant is %q", g, s.id, c.grant)
		}
	}
}

// checkStored: an active connection holds its grant's live refresh token;
// one that cannot be used says why.
func (r *run) checkStored(id string) {
	c := r.conns[id]
	row, found := r.tgt.Stored(r.t, id)
	if found != c.exists {
		r.fail("%s stored: %v, want %v", id, found, c.exists)
	}
	if !found {
		return
	}
	if g, ok := r.authz.GrantOf(row.RefreshToken); !ok || g != c.grant {
		r.fail("%s stores a refresh token of grant %q, want %q", id, g, c.grant)
	}
	switch row.Status {
	case "active":
		if row.RefreshInFlight && !r.final {
			// A refresh is in flight (a scheduled one, say), or its replica
			// died: the row holds the token it sent, marked as sent, until
			// the answer is written or the next use resolves it (checked at
			// the end).
			return
		}
		if !r.authz.IsLiveRefresh(row.RefreshToken) {
			r.fail("%s is active with a refresh token the provider has spent or revoked: a rotation was lost", id)
		}
	case "needs_reauth":
		if row.FailureCode != "refresh_outcome_unknown" {
			r.fail("%s needs reauth with failure %q; only an unknown refresh outcome may cost a grant here", id, row.FailureCode)
		}
	default:
		r.fail("%s has status %q", id, row.Status)
	}
}

// checkEvents walks id's history: each create, delete and state change
// emitted exactly its event, and the history ends where the row is.
func (r *run) checkEvents(id string) {
	c := r.conns[id]
	state := "none"
	created, deleted := 0, 0
	for i, e := range r.tgt.Events(r.t, id) {
		bad := func() { r.fail("%s: event %d %q in state %q", id, i, e, state) }
		switch e {
		case "connection.created":
			if state != "none" {
				bad()
			}
			created++
			state = "active"
		case "connection.deleted":
			if state == "none" {
				bad()
			}
			deleted++
			state = "none"
		case "connection.refresh_failed":
			if state != "active" && state != "failing" {
				bad()
			}
			state = "failing"
		case "connection.reauth_required":
			if state != "active" && state != "failing" {
				bad()
			}
			state = "needs_reauth"
		case "connection.recovered":
			if state != "failing" && state != "needs_reauth" {
				bad()
			}
			state = "active"
		default:
			bad()
		}
	}
	if created != c.created || deleted != c.deleted {
		r.fail("%s: %d created and %d deleted events for %d creates and %d deletes", id, created, deleted, c.created, c.deleted)
	}
	row, found := r.tgt.Stored(r.t, id)
	switch {
	case !found && state != "none",
		found && row.Status == "needs_reauth" && state != "needs_reauth",
		found && row.Status == "active" && state != "active" && state != "failing":
		r.fail("%s: the history ends %q but the row is %+v (found %v)", id, state, row.Status, found)
	}
}

// checkRefreshCounts: no grant was refreshed more often than the run
// allowed it, which a refresh per read or per proxied call would exceed.
func (r *run) checkRefreshCounts() {
	for g, b := range r.grants {
		alive := time.Since(b.since)
		onError := min(b.rejected, int(alive/r.cfg.OnErrorInterval)+1)
		allowed := b.forced + onError + b.faults + b.kills + 1
		if n := r.authz.Refreshes(g); n > allowed {
			r.fail("grant %s was refreshed %d times; the run allowed %d (%+v)", g, n, allowed, *b)
		}
	}
}

func (r *run) budgetOf(grant string) *budget {
	b, ok := r.grants[grant]
	if !ok {
		b = &budget{since: time.Now()}
		r.grants[grant] = b
	}
	return b
}

// call sends one API request to replica and decodes the JSON answer.
func (r *run) call(replica int, method, path string, body any) (int, map[string]any) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, r.tgt.URL(replica)+path, rd)
	if err != nil {
		r.fail("request: %v", err)
	}
	req.Header.Set("Authorization", "Bearer "+r.tgt.AdminKey())
	resp, err := r.client.Do(req)
	if err != nil {
		r.fail("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}
