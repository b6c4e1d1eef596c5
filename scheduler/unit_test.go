package scheduler_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokenbroker/tokenbroker/oauth"
	"github.com/tokenbroker/tokenbroker/scheduler"
	"github.com/tokenbroker/tokenbroker/store"
)

// memScheduling is an in-memory store.Scheduling: every connection stays
// due until the test says otherwise, so each lapse of a claim hands it out
// again.
type memScheduling struct {
	mu      sync.Mutex
	due     []store.Claim
	claimed map[string]time.Time
}

func newMemScheduling(claims ...store.Claim) *memScheduling {
	return &memScheduling{due: claims, claimed: map[string]time.Time{}}
}

func (m *memScheduling) ClaimDue(_ context.Context, _ string, now time.Time, limit int, ttl time.Duration) ([]store.Claim, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []store.Claim
	for _, c := range m.due {
		if len(out) == limit {
			break
		}
		if c.NextRefreshAt.After(now) || now.Before(m.claimed[c.ID]) {
			continue
		}
		m.claimed[c.ID] = now.Add(ttl)
		out = append(out, c)
	}
	return out, nil
}

// ReleaseClaim is a no-op: in these tests a refreshed connection leaves
// due (done) rather than being claimed again.
func (m *memScheduling) ReleaseClaim(context.Context, string, string) error { return nil }

func (m *memScheduling) OldestDue(_ context.Context, now time.Time) (time.Time, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.due {
		if !c.NextRefreshAt.After(now) {
			return c.NextRefreshAt, true, nil
		}
	}
	return time.Time{}, false, nil
}

func (m *memScheduling) done(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.due = slices.DeleteFunc(m.due, func(c store.Claim) bool { return c.ID == id })
}

// fakeRefresher records calls; answer decides each call's result.
type fakeRefresher struct {
	mu       sync.Mutex
	calls    map[string][]time.Time
	inFlight int
	maxIn    int
	work     time.Duration
	answer   func(id string, n int) error
	onOK     func(id string)
}

func (f *fakeRefresher) RefreshIfDue(_ context.Context, id string) error {
	f.mu.Lock()
	f.calls[id] = append(f.calls[id], time.Now())
	n := len(f.calls[id])
	f.inFlight++
	f.maxIn = max(f.maxIn, f.inFlight)
	f.mu.Unlock()
	time.Sleep(f.work)
	f.mu.Lock()
	f.inFlight--
	f.mu.Unlock()
	var err error
	if f.answer != nil {
		err = f.answer(id, n)
	}
	if err == nil && f.onOK != nil {
		f.onOK(id)
	}
	return err
}

type recordingMetrics struct {
	mu       sync.Mutex
	outcomes map[string]int
	claimed  int
	lags     []time.Duration
}

func (m *recordingMetrics) ScheduledRefresh(provider, outcome string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.outcomes[provider+"/"+outcome]++
}

func (m *recordingMetrics) Claimed(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.claimed += n
}

func (m *recordingMetrics) Lag(d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lags = append(m.lags, d)
}

func claimsFor(provider string, due time.Time, ids ...string) []store.Claim {
	out := make([]store.Claim, len(ids))
	for i, id := range ids {
		out[i] = store.Claim{ID: id, Provider: provider, NextRefreshAt: due}
	}
	return out
}

// TestRetryAfterPausesOnlyThatProvider: a 429 with Retry-After from one
// provider stops calls for its connections until the time is up; another
// provider's go on, and a connection's own cooldown pauses nobody.
func TestRetryAfterPausesOnlyThatProvider(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		st := newMemScheduling(append(claimsFor("slow", start, "s1", "s2", "s3"),
			claimsFor("fast", start, "f1", "f2", "cooling")...)...)
		ref := &fakeRefresher{calls: map[string][]time.Time{}, answer: func(id string, n int) error {
			switch {
			case id == "s1" && n == 1:
				return &oauth.Error{Op: "refresh", StatusCode: 429, Code: "http_429", RetryAfter: 2 * time.Minute, Kind: oauth.KindTransient}
			case id == "cooling" && n == 1:
				// The broker's answer for a connection in its own cooldown.
				return &oauth.Error{Op: "refresh", Code: "http_503", RetryAfter: time.Hour, Kind: oauth.KindTransient}
			}
			return nil
		}}
		ref.onOK = st.done
		m := &recordingMetrics{outcomes: map[string]int{}}
		s, err := scheduler.New(scheduler.Options{
			Store: st, Refresher: ref, Concurrency: 1, ClaimTTL: 10 * time.Second, Metrics: m,
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); _ = s.Run(ctx) }()
		time.Sleep(5 * time.Minute)
		cancel()
		<-done

		pauseEnd := start.Add(2 * time.Minute)
		for _, id := range []string{"s2", "s3"} {
			calls := ref.calls[id]
			if len(calls) != 1 || calls[0].Before(pauseEnd) {
				t.Errorf("%s called at %v; want once, not before the Retry-After ended at %v", id, calls, pauseEnd.Sub(start))
			}
		}
		if calls := ref.calls["s1"]; len(calls) != 2 || calls[1].Before(pauseEnd) {
			t.Errorf("s1 called %d times; want the 429 and one call after the pause", len(calls))
		}
		for _, id := range []string{"f1", "f2"} {
			if calls := ref.calls[id]; len(calls) != 1 || calls[0].Sub(start) > time.Second {
				t.Errorf("%s of an unpaused provider called at %v, want at once", id, calls)
			}
		}
		if m.outcomes["slow/"+scheduler.OutcomeDeferred] == 0 || m.outcomes["slow/"+scheduler.OutcomeTransient] != 1 {
			t.Errorf("metrics outcomes %v; want slow's 429 as transient and its waiting connections as deferred", m.outcomes)
		}
		if m.outcomes["fast/"+scheduler.OutcomeDeferred] != 0 {
			t.Errorf("a connection's own cooldown deferred its provider's others: %v", m.outcomes)
		}
		if m.claimed == 0 || len(m.lags) == 0 || m.lags[0] != 0 {
			t.Errorf("metrics claimed %d, lags %v; want claims counted and no lag at the start", m.claimed, m.lags)
		}
	})
}

// TestConcurrencyBoundAndBatchSpread: no more than Concurrency refreshes
// run at once, and a rate-limited batch is spread over time in due order.
func TestConcurrencyBoundAndBatchSpread(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var ids []string
		for i := range 40 {
			ids = append(ids, string(rune('a'+i/26))+string(rune('a'+i%26)))
		}
		st := newMemScheduling(claimsFor("acme", start, ids...)...)
		ref := &fakeRefresher{calls: map[string][]time.Time{}, work: time.Second}
		ref.onOK = st.done
		s, err := scheduler.New(scheduler.Options{
			Store: st, Refresher: ref, Concurrency: 3, BatchSize: 40,
			Limits: map[string]scheduler.Limit{"acme": {Rate: 4, Burst: 2}},
		})
		if err != nil {
			t.Fatal(err)
		}
		stats, err := s.RunOnce(t.Context())
		if err != nil || stats.Claimed != 40 || stats.OK != 40 {
			t.Fatalf("RunOnce = %+v, %v; want 40 claimed and refreshed", stats, err)
		}
		if ref.maxIn != 3 {
			t.Errorf("at most %d refreshes ran at once, want the bound 3", ref.maxIn)
		}
		// 2 at once, then 4 a second: the 40th starts 9.5s in.
		var starts []time.Time
		for _, id := range ids {
			starts = append(starts, ref.calls[id][0])
		}
		if !slices.IsSortedFunc(starts, func(a, b time.Time) int { return a.Compare(b) }) {
			t.Error("the batch was not started in due order")
		}
		if last := starts[len(starts)-1].Sub(start); last < 9*time.Second {
			t.Errorf("the last of 40 started %v in; at 4/s with burst 2 it cannot start before 9.5s", last)
		}
		perSecond := map[int64]int{}
		for _, at := range starts {
			perSecond[at.Unix()]++
		}
		for sec, n := range perSecond {
			if n > 4+2 {
				t.Errorf("%d refreshes started in second %d", n, sec-start.Unix())
			}
		}
	})
}

func TestNewValidation(t *testing.T) {
	st, ref := newMemScheduling(), &fakeRefresher{}
	for _, tc := range []struct {
		name string
		opts scheduler.Options
	}{
		{"no store", scheduler.Options{Refresher: ref}},
		{"no refresher", scheduler.Options{Store: st}},
		{"negative interval", scheduler.Options{Store: st, Refresher: ref, Interval: -time.Second}},
		{"negative concurrency", scheduler.Options{Store: st, Refresher: ref, Concurrency: -1}},
		{"negative batch", scheduler.Options{Store: st, Refresher: ref, BatchSize: -1}},
		{"negative rate", scheduler.Options{Store: st, Refresher: ref, Limits: map[string]scheduler.Limit{"acme": {Rate: -1}}}},
	} {
		if _, err := scheduler.New(tc.opts); err == nil {
			t.Errorf("%s: New succeeded, want an error", tc.name)
		}
	}
	if _, err := scheduler.New(scheduler.Options{Store: st, Refresher: ref}); err != nil {
		t.Errorf("New with only the required options: %v", err)
	}
}
