package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/oauth"
	"github.com/tokenbroker/tokenbroker/store"
	"github.com/tokenbroker/tokenbroker/store/sqlite"
	"github.com/tokenbroker/tokenbroker/store/storetest"
)

var testSecret = []byte("whsec_obviously_fake_test_secret")

// received is one request a receiver got.
type received struct {
	header http.Header
	body   []byte
	at     time.Time // the test clock's time
}

// receiver is a webhook endpoint on 127.0.0.1 that answers with the
// statuses queued in it, then 200.
type receiver struct {
	t   *testing.T
	srv *httptest.Server
	now func() time.Time

	mu       sync.Mutex
	statuses []int
	header   http.Header // sent with queued statuses
	got      []received
}

func newReceiver(t *testing.T, now func() time.Time) *receiver {
	r := &receiver{t: t, now: now}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.got = append(r.got, received{header: req.Header.Clone(), body: body, at: r.now()})
		status := http.StatusOK
		if len(r.statuses) > 0 {
			status, r.statuses = r.statuses[0], r.statuses[1:]
			for k, v := range r.header {
				w.Header()[k] = v
			}
		}
		r.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) answer(header http.Header, statuses ...int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.statuses, r.header = statuses, header
}

func (r *receiver) requests() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.got...)
}

// verified checks every request's signature, as of when it arrived, and
// decodes its payload.
func (r *receiver) verified() []Payload {
	r.t.Helper()
	var out []Payload
	for i, got := range r.requests() {
		if err := Verify(testSecret, got.header.Get(HeaderSignature), got.body, got.at, 0); err != nil {
			r.t.Errorf("request %d: signature: %v", i, err)
		}
		var p Payload
		if err := json.Unmarshal(got.body, &p); err != nil {
			r.t.Fatalf("request %d: payload is not JSON: %v", i, err)
		}
		if got.header.Get(HeaderEventID) != p.ID || p.ID == "" {
			r.t.Errorf("request %d: %s header %q, payload id %q", i, HeaderEventID, got.header.Get(HeaderEventID), p.ID)
		}
		out = append(out, p)
	}
	return out
}

type outcomeRecorder struct {
	mu       sync.Mutex
	outcomes []string
	backlog  int
}

func (m *outcomeRecorder) DeliveryFinished(endpoint, outcome string, _ time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.outcomes = append(m.outcomes, endpoint+":"+outcome)
}

func (m *outcomeRecorder) Backlog(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.backlog = n
}

func (m *outcomeRecorder) list() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.outcomes...)
}

func openStore(t *testing.T, path string, now func() time.Time) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(t.Context(), path, sqlite.Options{Now: now})
	if err != nil {
		t.Fatalf("sqlite.Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// queue writes a connection with one event, as the broker does.
func queue(t *testing.T, s store.Backend, id, typ string, at time.Time) {
	t.Helper()
	_, err := s.CreateConnection(t.Context(), store.Connection{
		ID: id, Provider: "acme", Status: store.StatusActive, AccessToken: []byte("sealed-fake"),
	}, store.Event{Type: typ, ConnectionID: id, Provider: "acme", Code: "invalid_grant", At: at})
	if err != nil {
		t.Fatalf("CreateConnection: %v", err)
	}
}

func newDispatcher(t *testing.T, o store.Outbox, clk *storetest.Clock, r *receiver, tweak func(*Options)) *Dispatcher {
	t.Helper()
	opts := Options{
		Outbox:    o,
		Endpoints: []Endpoint{{Name: "ops", URL: r.srv.URL + "/hooks", Secret: testSecret}},
		Owner:     "dispatcher-a",
		Now:       clk.Now,
		Rand:      func() float64 { return 0 }, // equal jitter: wait exactly half the limit
		Backoff:   oauth.Backoff{Base: 10 * time.Second, Max: time.Hour},
	}
	if tweak != nil {
		tweak(&opts)
	}
	d, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return d
}

func deliverDue(t *testing.T, d *Dispatcher) int {
	t.Helper()
	n, err := d.DeliverDue(t.Context())
	if err != nil {
		t.Fatalf("DeliverDue: %v", err)
	}
	return n
}

// TestFailingReceiverGetsEventOnFourthAttempt: three 503s, then the event
// goes through; each retry waits its backoff (5s, 10s, 20s with this
// configuration) and not a moment less.
func TestFailingReceiverGetsEventOnFourthAttempt(t *testing.T) {
	clk := storetest.NewClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	s := openStore(t, filepath.Join(t.TempDir(), "tb.db"), clk.Now)
	r := newReceiver(t, clk.Now)
	r.answer(nil, 503, 503, 503)
	m := &outcomeRecorder{}
	d := newDispatcher(t, s, clk, r, func(o *Options) { o.Metrics = m })
	queue(t, s, "conn-1", "connection.reauth_required", clk.Now())

	if n := deliverDue(t, d); n != 1 {
		t.Fatalf("first round claimed %d deliveries, want 1", n)
	}
	for i, wait := range []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second} {
		clk.Advance(wait - time.Millisecond)
		if n := deliverDue(t, d); n != 0 {
			t.Fatalf("retry %d was sent before its backoff of %v had passed", i+1, wait)
		}
		clk.Advance(time.Millisecond)
		if n := deliverDue(t, d); n != 1 {
			t.Fatalf("retry %d was not sent once its backoff of %v had passed", i+1, wait)
		}
	}
	clk.Advance(24 * time.Hour)
	if n := deliverDue(t, d); n != 0 {
		t.Fatalf("an acked delivery was claimed again")
	}

	reqs := r.requests()
	if len(reqs) != 4 {
		t.Fatalf("receiver got %d requests, want 4", len(reqs))
	}
	payloads := r.verified()
	for i, got := range reqs {
		if a := got.header.Get(HeaderAttempt); a != strconv.Itoa(i+1) {
			t.Errorf("request %d: %s = %q", i, HeaderAttempt, a)
		}
		if payloads[i].ID != payloads[0].ID {
			t.Errorf("request %d carries event %s, want the same event %s every time", i, payloads[i].ID, payloads[0].ID)
		}
	}
	if gaps := []time.Duration{reqs[1].at.Sub(reqs[0].at), reqs[2].at.Sub(reqs[1].at), reqs[3].at.Sub(reqs[2].at)}; fmt.Sprint(gaps) != "[5s 10s 20s]" {
		t.Errorf("gaps between attempts = %v, want growing backoff [5s 10s 20s]", gaps)
	}
	want := "[ops:retry ops:retry ops:retry ops:delivered]"
	if got := fmt.Sprint(m.list()); got != want {
		t.Errorf("metrics outcomes = %s, want %s", got, want)
	}
	if n, err := s.OutboxBacklog(t.Context()); err != nil || n != 0 {
		t.Errorf("backlog after delivery = %d, %v; want 0", n, err)
	}
}

// TestAttemptOutcomes: which answers deliver, which are retried and which
// are rejections (given up on after MaxRejections, here 1).
func TestAttemptOutcomes(t *testing.T) {
	tests := []struct {
		status int
		want   string
	}{
		{200, "delivered"}, {202, "delivered"}, {204, "delivered"},
		{301, "abandoned"}, {302, "abandoned"},
		{400, "abandoned"}, {401, "abandoned"}, {404, "abandoned"}, {410, "abandoned"},
		{408, "retry"}, {429, "retry"}, {500, "retry"}, {502, "retry"}, {503, "retry"},
	}
	for _, tc := range tests {
		t.Run(strconv.Itoa(tc.status), func(t *testing.T) {
			clk := storetest.NewClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
			s := openStore(t, filepath.Join(t.TempDir(), "tb.db"), clk.Now)
			r := newReceiver(t, clk.Now)
			r.answer(http.Header{"Location": {"http://127.0.0.1:1/elsewhere"}}, tc.status)
			m := &outcomeRecorder{}
			d := newDispatcher(t, s, clk, r, func(o *Options) { o.Metrics = m; o.MaxRejections = 1 })
			queue(t, s, "conn-1", "connection.refresh_failed", clk.Now())
			deliverDue(t, d)
			if got := fmt.Sprint(m.list()); got != "[ops:"+tc.want+"]" {
				t.Errorf("answer %d: outcomes %s, want [ops:%s]", tc.status, got, tc.want)
			}
			if n := len(r.requests()); n != 1 {
				t.Errorf("receiver got %d requests, want 1 (redirects are not followed)", n)
			}
			backlog, _ := s.OutboxBacklog(t.Context())
			if wantBacklog := map[bool]int{true: 1, false: 0}[tc.want == "retry"]; backlog != wantBacklog {
				t.Errorf("backlog = %d, want %d", backlog, wantBacklog)
			}
		})
	}
}

// TestRejectedThreeTimesIsAbandoned: a receiver answering 400 gets the event
// three times, then never again.
func TestRejectedThreeTimesIsAbandoned(t *testing.T) {
	clk := storetest.NewClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	s := openStore(t, filepath.Join(t.TempDir(), "tb.db"), clk.Now)
	r := newReceiver(t, clk.Now)
	r.answer(nil, 400, 400, 400, 400, 400)
	d := newDispatcher(t, s, clk, r, nil)
	queue(t, s, "conn-1", "connection.created", clk.Now())
	for range 10 {
		deliverDue(t, d)
		clk.Advance(time.Hour)
	}
	if n := len(r.requests()); n != DefaultMaxRejections {
		t.Errorf("a rejecting receiver got %d requests, want %d", n, DefaultMaxRejections)
	}
	if n, _ := s.OutboxBacklog(t.Context()); n != 0 {
		t.Errorf("backlog = %d after giving up, want 0", n)
	}
}

// TestRetryAfterHonoured: a 429 asking for two minutes is not retried
// sooner, though the backoff alone would allow it after 5s.
func TestRetryAfterHonoured(t *testing.T) {
	clk := storetest.NewClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	s := openStore(t, filepath.Join(t.TempDir(), "tb.db"), clk.Now)
	r := newReceiver(t, clk.Now)
	r.answer(http.Header{"Retry-After": {"120"}}, 429)
	d := newDispatcher(t, s, clk, r, nil)
	queue(t, s, "conn-1", "connection.created", clk.Now())
	deliverDue(t, d)
	clk.Advance(119 * time.Second)
	if n := deliverDue(t, d); n != 0 {
		t.Fatal("retried before Retry-After had passed")
	}
	clk.Advance(time.Second)
	if n := deliverDue(t, d); n != 1 || len(r.requests()) != 2 {
		t.Fatalf("not retried once Retry-After had passed")
	}
}

// TestGivesUpAfterMaxAge: an event still failing MaxAge after it happened
// is abandoned.
func TestGivesUpAfterMaxAge(t *testing.T) {
	clk := storetest.NewClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	s := openStore(t, filepath.Join(t.TempDir(), "tb.db"), clk.Now)
	r := newReceiver(t, clk.Now)
	r.answer(nil, 503, 503)
	m := &outcomeRecorder{}
	d := newDispatcher(t, s, clk, r, func(o *Options) { o.Metrics = m; o.MaxAge = time.Hour })
	queue(t, s, "conn-1", "connection.created", clk.Now())
	deliverDue(t, d)
	clk.Advance(time.Hour)
	deliverDue(t, d)
	if got := fmt.Sprint(m.list()); got != "[ops:retry ops:abandoned]" {
		t.Errorf("outcomes = %s, want a retry, then abandoned after MaxAge", got)
	}
}

// TestEventFilter: an endpoint gets only the types it asked for; the others
// are settled without a request.
func TestEventFilter(t *testing.T) {
	clk := storetest.NewClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	s := openStore(t, filepath.Join(t.TempDir(), "tb.db"), clk.Now)
	all, some := newReceiver(t, clk.Now), newReceiver(t, clk.Now)
	d := newDispatcher(t, s, clk, all, func(o *Options) {
		o.Endpoints = append(o.Endpoints, Endpoint{Name: "pager", URL: some.srv.URL, Secret: testSecret,
			Events: []string{"connection.reauth_required"}})
	})
	queue(t, s, "conn-1", "connection.created", clk.Now())
	queue(t, s, "conn-2", "connection.reauth_required", clk.Now())
	for deliverDue(t, d) > 0 {
	}
	if n := len(all.requests()); n != 2 {
		t.Errorf("the unfiltered endpoint got %d events, want 2", n)
	}
	got := some.verified()
	if len(got) != 1 || got[0].Type != "connection.reauth_required" {
		t.Errorf("the filtered endpoint got %+v, want only the reauth_required event", got)
	}
	if n, _ := s.OutboxBacklog(t.Context()); n != 0 {
		t.Errorf("backlog = %d, want 0: filtered deliveries are settled too", n)
	}
}

// lostAcks is an outbox whose acks fail, as if the process died between
// sending an event and recording it.
type lostAcks struct{ store.Outbox }

func (lostAcks) AckDelivery(context.Context, string, string) error {
	return errors.New("crashed before the ack")
}

// TestLostAckRedelivers: at least once. A dispatcher that sent an event but
// could not ack it leaves the claim to lapse; another dispatcher then sends
// the same event, with the same id, again.
func TestLostAckRedelivers(t *testing.T) {
	clk := storetest.NewClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	s := openStore(t, filepath.Join(t.TempDir(), "tb.db"), clk.Now)
	r := newReceiver(t, clk.Now)
	crashing := newDispatcher(t, lostAcks{s}, clk, r, nil)
	other := newDispatcher(t, s, clk, r, func(o *Options) { o.Owner = "dispatcher-b" })
	queue(t, s, "conn-1", "connection.recovered", clk.Now())

	deliverDue(t, crashing)
	if n := deliverDue(t, other); n != 0 {
		t.Fatal("a delivery under a live claim was sent by another dispatcher")
	}
	clk.Advance(2*DefaultTimeout + 30*time.Second)
	if n := deliverDue(t, other); n != 1 {
		t.Fatal("the unacked delivery was not sent again after its claim lapsed")
	}
	got := r.verified()
	if len(got) != 2 || got[0].ID != got[1].ID {
		t.Fatalf("receiver got %d events, want the same one twice", len(got))
	}
	if n, _ := s.OutboxBacklog(t.Context()); n != 0 {
		t.Errorf("backlog = %d, want 0 after the second dispatcher's ack", n)
	}
}

func TestNewRejectsBadEndpoints(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "tb.db"), nil)
	tests := []struct {
		name string
		eps  []Endpoint
	}{
		{"no name", []Endpoint{{URL: "https://hooks.example/x", Secret: testSecret}}},
		{"relative url", []Endpoint{{Name: "a", URL: "/hooks", Secret: testSecret}}},
		{"ftp url", []Endpoint{{Name: "a", URL: "ftp://hooks.example/x", Secret: testSecret}}},
		{"no secret", []Endpoint{{Name: "a", URL: "https://hooks.example/x"}}},
		{"unknown event", []Endpoint{{Name: "a", URL: "https://hooks.example/x", Secret: testSecret, Events: []string{"connection.exploded"}}}},
		{"duplicate name", []Endpoint{{Name: "a", URL: "https://hooks.example/x", Secret: testSecret}, {Name: "a", URL: "https://hooks.example/y", Secret: testSecret}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(Options{Outbox: s, Endpoints: tc.eps}); err == nil {
				t.Error("New accepted a bad endpoint")
			}
		})
	}
}
