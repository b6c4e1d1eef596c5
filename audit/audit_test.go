package audit_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/audit"
	"github.com/tokenbroker/tokenbroker/internal/fakeclock"
	"github.com/tokenbroker/tokenbroker/store"
	"github.com/tokenbroker/tokenbroker/store/sqlite"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// countingStore counts AppendAudit calls on a real store.
type countingStore struct {
	*sqlite.Store
	mu      sync.Mutex
	appends int
}

func (c *countingStore) AppendAudit(ctx context.Context, e []store.AuditEntry) error {
	c.mu.Lock()
	c.appends++
	c.mu.Unlock()
	return c.Store.AppendAudit(ctx, e)
}

func open(t testing.TB, now func() time.Time) *countingStore {
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "a.db"), sqlite.Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &countingStore{Store: st}
}

func run(t *testing.T, r *audit.Recorder) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	return func() { cancel(); <-done }
}

// TestBatchesAndStreams: many entries recorded concurrently are written in
// a few transactions, all of them, and each is streamed as a JSON line.
func TestBatchesAndStreams(t *testing.T) {
	st := open(t, nil)
	var stream lockedBuffer
	r, err := audit.New(audit.Options{Store: st, Stream: &stream, BatchSize: 100, FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, r)
	var wg sync.WaitGroup
	for g := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				r.Record(store.AuditEntry{Actor: "svc", Action: "token.read", ConnectionID: "c", Outcome: "ok", Detail: string(rune('a'+g)) + string(rune('a'+i%26))})
			}
		}()
	}
	wg.Wait()
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if r.Written() != 1000 || r.Dropped() != 0 {
		t.Fatalf("written %d dropped %d, want 1000 and 0", r.Written(), r.Dropped())
	}
	st.mu.Lock()
	appends := st.appends
	st.mu.Unlock()
	if appends > 20 {
		t.Errorf("%d transactions for 1000 entries in batches of 100", appends)
	}
	n := 0
	sc := bufio.NewScanner(strings.NewReader(stream.String()))
	for sc.Scan() {
		var v map[string]any
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil || v["action"] != "token.read" || v["time"] == nil {
			t.Fatalf("stream line %q: %v", sc.Text(), err)
		}
		n++
	}
	if n != 1000 {
		t.Errorf("%d stream lines, want 1000", n)
	}
	stop()
	// Entries recorded before a stop are written by it.
	r.Record(store.AuditEntry{Action: "late"})
	stop = run(t, r)
	stop()
	got, err := st.ListAudit(t.Context(), store.AuditFilter{Action: "late"})
	if err != nil || len(got) != 1 {
		t.Errorf("entry recorded before stop: %d found, %v", len(got), err)
	}
}

// stallingStore's first AppendAudit hangs until its context ends, as a
// write does when the server stops in the middle of it.
type stallingStore struct {
	*sqlite.Store
	entered chan struct{}
	once    sync.Once
}

func (s *stallingStore) AppendAudit(ctx context.Context, e []store.AuditEntry) error {
	first := false
	s.once.Do(func() { first = true })
	if first {
		close(s.entered)
		<-ctx.Done()
		return ctx.Err()
	}
	return s.Store.AppendAudit(ctx, e)
}

// TestStopDuringWriteLosesNothing: a batch whose write is cut short by the
// server stopping is written by the final flush, not dropped.
func TestStopDuringWriteLosesNothing(t *testing.T) {
	st := &stallingStore{Store: open(t, nil).Store, entered: make(chan struct{})}
	var logs lockedBuffer
	r, err := audit.New(audit.Options{Store: st, BatchSize: 10, FlushInterval: time.Hour,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, r)
	for i := range 10 {
		r.Record(store.AuditEntry{Actor: "svc", Action: "token.read", ConnectionID: "c" + strconv.Itoa(i), Outcome: "ok"})
	}
	<-st.entered // the batch of 10 is being written
	stop()
	got, err := st.ListAudit(t.Context(), store.AuditFilter{Action: "token.read"})
	if err != nil || len(got) != 10 {
		t.Fatalf("after a stop during the write: %d of 10 entries stored (%v); logs:\n%s", len(got), err, logs.String())
	}
	if r.Written() != 10 {
		t.Errorf("Written() = %d, want 10", r.Written())
	}
	if strings.Contains(logs.String(), "lost") {
		t.Errorf("entries reported lost:\n%s", logs.String())
	}
}

// unavailableStore answers ErrUnavailable to its first n AppendAudit calls,
// as during a database outage.
type unavailableStore struct {
	*sqlite.Store
	mu    sync.Mutex
	n     int
	calls int
}

func (s *unavailableStore) AppendAudit(ctx context.Context, e []store.AuditEntry) error {
	s.mu.Lock()
	s.calls++
	down := s.calls <= s.n
	s.mu.Unlock()
	if down {
		return fmt.Errorf("audit test: %w", store.ErrUnavailable)
	}
	return s.Store.AppendAudit(ctx, e)
}

// TestOutageLosesNothingQueued: a batch that cannot be written because the
// database is unavailable is held and written once it is back, however
// many attempts that takes; nothing queued is lost.
func TestOutageLosesNothingQueued(t *testing.T) {
	st := &unavailableStore{Store: open(t, nil).Store, n: 12} // well past the attempts a refused batch gets
	var logs lockedBuffer
	r, err := audit.New(audit.Options{Store: st, BatchSize: 10, FlushInterval: time.Hour, RetryDelay: time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, r)
	defer stop()
	for i := range 25 {
		r.Record(store.AuditEntry{Actor: "svc", Action: "token.read", ConnectionID: "c" + strconv.Itoa(i), Outcome: "ok"})
	}
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if r.Written() != 25 || r.Dropped() != 0 {
		t.Fatalf("written %d dropped %d, want 25 and 0; logs:\n%s", r.Written(), r.Dropped(), logs.String())
	}
	got, err := st.ListAudit(t.Context(), store.AuditFilter{Action: "token.read"})
	if err != nil || len(got) != 25 {
		t.Fatalf("%d of 25 entries stored (%v)", len(got), err)
	}
	if strings.Contains(logs.String(), "entries lost") {
		t.Errorf("entries reported lost during an outage:\n%s", logs.String())
	}
}

// TestQueueFullIsCounted: entries the queue has no room for are counted
// and the count itself lands in the trail.
func TestQueueFullIsCounted(t *testing.T) {
	st := open(t, nil)
	r, err := audit.New(audit.Options{Store: st, QueueSize: 5, FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for range 8 {
		r.Record(store.AuditEntry{Action: "token.read"})
	}
	if r.Dropped() != 3 {
		t.Fatalf("Dropped = %d, want 3", r.Dropped())
	}
	stop := run(t, r)
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	stop()
	got, err := st.ListAudit(t.Context(), store.AuditFilter{Action: audit.ActionDropped})
	if err != nil || len(got) != 1 || !strings.Contains(got[0].Detail, "3") {
		t.Errorf("dropped entry: %+v, %v", got, err)
	}
}

// TestRetention: entries older than the retention period are pruned.
func TestRetention(t *testing.T) {
	clk := fakeclock.New(time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC))
	st := open(t, clk.Now)
	if err := st.AppendAudit(t.Context(), []store.AuditEntry{
		{Time: clk.Now().Add(-48 * time.Hour), Action: "old"},
		{Time: clk.Now().Add(-time.Hour), Action: "recent"},
	}); err != nil {
		t.Fatal(err)
	}
	r, err := audit.New(audit.Options{Store: st, Retention: 24 * time.Hour, FlushInterval: time.Millisecond, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, r)
	defer stop()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, err := st.ListAudit(t.Context(), store.AuditFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 1 && got[0].Action == "recent" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("old entries were not pruned: %d left", len(got))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := audit.New(audit.Options{}); err == nil {
		t.Error("New without a store succeeded")
	}
	if _, err := audit.New(audit.Options{Store: open(t, nil), Retention: -time.Hour}); err == nil {
		t.Error("New with a negative retention succeeded")
	}
}

// TestFullBatchWakesWriter: a full batch is written without waiting for
// the flush interval (here an hour) or a Flush call.
func TestFullBatchWakesWriter(t *testing.T) {
	st := open(t, nil)
	r, err := audit.New(audit.Options{Store: st, BatchSize: 10, FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, r)
	defer stop()
	for range 10 {
		r.Record(store.AuditEntry{Actor: "svc", Action: "token.read", Outcome: "ok"})
	}
	for r.Written() < 10 {
		select {
		case <-t.Context().Done():
			t.Fatalf("written %d of a full batch of 10", r.Written())
		case <-time.After(time.Millisecond):
		}
	}
	if r.Written() != 10 {
		t.Errorf("written %d, want 10", r.Written())
	}
}
