package scheduler

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/tokenbroker/tokenbroker/oauth"
	"github.com/tokenbroker/tokenbroker/store"

	"github.com/tokenbroker/tokenbroker/internal/wait"
)

// Refresher refreshes one connection if it is due. *broker.Broker
// satisfies it: RefreshIfDue goes through the broker's single flight, lease
// and save-first path, and does nothing for a connection that is not due,
// cooling down after a failure, or needing re-authentication.
type Refresher interface {
	RefreshIfDue(ctx context.Context, id string) error
}

// Limit is a provider's token endpoint rate limit.
type Limit struct {
	// Rate is requests per second; zero or less means unlimited.
	Rate float64
	// Burst is how many requests may go at once after a quiet spell;
	// at least 1.
	Burst int
}

// Metrics observes the scheduler. Implementations must be cheap and safe
// for concurrent use.
type Metrics interface {
	// ScheduledRefresh reports one claimed connection and what became of
	// it: "ok" (refreshed, or found not to need it), "transient" or
	// "terminal" (the refresh failed; the broker recorded why), "error" (the
	// store or something else failed), or "deferred" (the provider's rate
	// limit or Retry-After left it for a later cycle).
	ScheduledRefresh(provider, outcome string)
	// Claimed reports how many due connections one cycle claimed.
	Claimed(n int)
	// Lag reports how late the oldest due connection is: now minus its
	// NextRefreshAt, zero when none is overdue. It stays near zero while
	// the scheduler keeps up.
	Lag(d time.Duration)
}

type noMetrics struct{}

func (noMetrics) ScheduledRefresh(string, string) {}
func (noMetrics) Claimed(int)                     {}
func (noMetrics) Lag(time.Duration)               {}

// Outcomes passed to [Metrics.ScheduledRefresh].
const (
	OutcomeOK        = "ok"
	OutcomeTransient = "transient"
	OutcomeTerminal  = "terminal"
	OutcomeError     = "error"
	OutcomeDeferred  = "deferred"
)

// Defaults for zero [Options] fields.
const (
	DefaultInterval    = time.Second
	DefaultConcurrency = 8
	DefaultBatchSize   = 100
	DefaultClaimTTL    = time.Minute
)

// Options configures a [Scheduler]. Store and Refresher are required.
type Options struct {
	Store     store.Scheduling
	Refresher Refresher
	// Owner names this replica in claims; default a random id. Give it the
	// broker's owner so that logs tell which replica did what.
	Owner string
	// Interval is the pause between cycles that found less than a full
	// batch. Default [DefaultInterval].
	Interval time.Duration
	// Concurrency bounds the refreshes in flight. Default
	// [DefaultConcurrency].
	Concurrency int
	// BatchSize is how many due connections one cycle claims. Default
	// [DefaultBatchSize].
	BatchSize int
	// ClaimTTL is how long a claim keeps other replicas off a connection;
	// a replica that dies mid-cycle delays its claimed connections at most
	// this long. A connection whose turn under its provider's rate limit
	// is further away than half of it is left for a later cycle. Default
	// [DefaultClaimTTL].
	ClaimTTL time.Duration
	// Limits are per-provider token endpoint rate limits; providers not
	// listed are unlimited (but still paused by Retry-After).
	Limits map[string]Limit
	// Now is the clock; default [time.Now].
	Now func() time.Time
	// Sleep waits d or until ctx is done; default a timer. Under
	// testing/synctest the defaults already run on the bubble's clock.
	Sleep   func(ctx context.Context, d time.Duration) error
	Logger  *slog.Logger
	Metrics Metrics
}

// Scheduler refreshes due connections in the background. Run it once per
// process; several processes sharing a database share the work.
type Scheduler struct {
	store       store.Scheduling
	refresher   Refresher
	owner       string
	interval    time.Duration
	concurrency int
	batch       int
	claimTTL    time.Duration
	limits      map[string]Limit
	now         func() time.Time
	sleep       func(context.Context, time.Duration) error
	log         *slog.Logger
	metrics     Metrics

	mu       sync.Mutex
	buckets  map[string]*bucket
	inFlight map[string]bool
}

// New checks opts and returns a Scheduler.
func New(opts Options) (*Scheduler, error) {
	if opts.Store == nil {
		return nil, errors.New("scheduler: Options.Store is required")
	}
	if opts.Refresher == nil {
		return nil, errors.New("scheduler: Options.Refresher is required")
	}
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"Interval", int64(opts.Interval)}, {"Concurrency", int64(opts.Concurrency)},
		{"BatchSize", int64(opts.BatchSize)}, {"ClaimTTL", int64(opts.ClaimTTL)},
	} {
		if f.v < 0 {
			return nil, fmt.Errorf("scheduler: Options.%s is negative", f.name)
		}
	}
	for name, l := range opts.Limits {
		if l.Rate < 0 || l.Burst < 0 || l.Rate != l.Rate {
			return nil, fmt.Errorf("scheduler: limit of provider %q: rate and burst must not be negative", name)
		}
	}
	s := &Scheduler{
		store:       opts.Store,
		refresher:   opts.Refresher,
		owner:       opts.Owner,
		interval:    opts.Interval,
		concurrency: opts.Concurrency,
		batch:       opts.BatchSize,
		claimTTL:    opts.ClaimTTL,
		limits:      opts.Limits,
		now:         opts.Now,
		sleep:       opts.Sleep,
		log:         opts.Logger,
		metrics:     opts.Metrics,
		buckets:     make(map[string]*bucket),
		inFlight:    make(map[string]bool),
	}
	if s.owner == "" {
		var buf [8]byte
		_, _ = rand.Read(buf[:])
		s.owner = "sched-" + hex.EncodeToString(buf[:])
	}
	if s.interval == 0 {
		s.interval = DefaultInterval
	}
	if s.concurrency == 0 {
		s.concurrency = DefaultConcurrency
	}
	if s.batch == 0 {
		s.batch = DefaultBatchSize
	}
	if s.claimTTL == 0 {
		s.claimTTL = DefaultClaimTTL
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.sleep == nil {
		s.sleep = wait.Sleep
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.metrics == nil {
		s.metrics = noMetrics{}
	}
	return s, nil
}

// Owner is the name this scheduler claims connections under.
func (s *Scheduler) Owner() string { return s.owner }

// Run runs cycles until ctx is done, then waits for the refreshes in
// flight (they run detached in the broker, bounded by its timeout) and
// returns nil. A cycle that claimed a full batch is followed at once by the
// next, so a backlog drains as fast as the limits allow; otherwise the
// scheduler sleeps Interval.
func (s *Scheduler) Run(ctx context.Context) error {
	s.log.InfoContext(ctx, "scheduler started", "owner", s.owner, "interval", s.interval,
		"concurrency", s.concurrency, "batch_size", s.batch)
	for ctx.Err() == nil {
		st, err := s.RunOnce(ctx)
		if err != nil && ctx.Err() == nil {
			s.log.WarnContext(ctx, "scheduler cycle failed", "error", err)
		}
		if err == nil && st.Claimed == s.batch && st.Deferred == 0 {
			continue
		}
		_ = s.sleep(ctx, s.interval)
	}
	s.log.InfoContext(ctx, "scheduler stopped", "owner", s.owner)
	return nil
}

// CycleStats says what one cycle did.
type CycleStats struct {
	Claimed   int // due connections claimed
	OK        int // refreshed, or found not to need it
	Failed    int // the refresh failed (transient, terminal or other)
	Deferred  int // left for a later cycle by a rate limit or Retry-After
	Lag       time.Duration
	OldestDue time.Time // zero when nothing was due
}

// RunOnce runs one cycle: it reports the lag, claims up to BatchSize due
// connections, and refreshes them, each no earlier than its provider's
// rate limit allows and at most Concurrency at a time. It returns when all
// are done. Connections that would wait longer than half the claim for
// their turn are left claimed; another cycle takes them once the claim
// lapses.
func (s *Scheduler) RunOnce(ctx context.Context) (CycleStats, error) {
	var st CycleStats
	now := s.now()
	oldest, ok, err := s.store.OldestDue(ctx, now)
	if err != nil {
		return st, fmt.Errorf("scheduler: %w", err)
	}
	if ok {
		st.OldestDue, st.Lag = oldest, max(now.Sub(oldest), 0)
	}
	s.metrics.Lag(st.Lag)

	claims, err := s.store.ClaimDue(ctx, s.owner, now, s.batch, s.claimTTL)
	if err != nil {
		return st, fmt.Errorf("scheduler: %w", err)
	}
	st.Claimed = len(claims)
	s.metrics.Claimed(len(claims))
	if len(claims) == 0 {
		return st, nil
	}

	// Reserve every claim's turn up front, in due order, so that a big
	// batch is spread over time by the rate limit rather than sent at once.
	type job struct {
		claim store.Claim
		wait  time.Duration
	}
	jobs := make([]job, 0, len(claims))
	maxWait := s.claimTTL / 2
	for _, c := range claims {
		if !s.begin(c.ID) {
			// Still being refreshed from an earlier claim that lapsed.
			continue
		}
		wait, ok := s.bucket(c.Provider, now).reserve(now, maxWait)
		if !ok {
			s.end(c.ID)
			st.Deferred++
			s.metrics.ScheduledRefresh(c.Provider, OutcomeDeferred)
			continue
		}
		jobs = append(jobs, job{c, wait})
	}

	// Start them in the order of their turns (due order within a
	// provider), each when its turn comes and a worker is free.
	slices.SortStableFunc(jobs, func(a, b job) int { return cmp.Compare(a.wait, b.wait) })
	var (
		wg      sync.WaitGroup
		sem     = make(chan struct{}, s.concurrency)
		countMu sync.Mutex
	)
	count := func(provider, outcome string) {
		s.metrics.ScheduledRefresh(provider, outcome)
		countMu.Lock()
		defer countMu.Unlock()
		switch outcome {
		case OutcomeOK:
			st.OK++
		case OutcomeDeferred:
			st.Deferred++
		default:
			st.Failed++
		}
	}
	for i, j := range jobs {
		err := s.sleep(ctx, now.Add(j.wait).Sub(s.now()))
		if err == nil {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				err = ctx.Err()
			}
		}
		if err != nil {
			// Stopping: the rest stay claimed until their claims lapse.
			for _, rest := range jobs[i:] {
				s.end(rest.claim.ID)
			}
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			defer s.end(j.claim.ID)
			b := s.bucket(j.claim.Provider, now)
			if b.paused(s.now()) {
				// The provider asked us to wait after this turn was given.
				count(j.claim.Provider, OutcomeDeferred)
				return
			}
			outcome := s.refresh(ctx, j.claim, b)
			if outcome == OutcomeOK {
				// Done: the broker moved NextRefreshAt past now. A token that
				// lives less than the claim must be claimable when it is due
				// again, not when the claim lapses. Failures keep the claim,
				// so a connection that cannot be refreshed is tried at most
				// once per claim.
				if err := s.store.ReleaseClaim(context.WithoutCancel(ctx), s.owner, j.claim.ID); err != nil {
					s.log.WarnContext(ctx, "could not release a scheduling claim; it lapses by itself",
						"connection", j.claim.ID, "error", err)
				}
			}
			count(j.claim.Provider, outcome)
		})
	}
	wg.Wait()
	return st, ctx.Err()
}

// refresh asks the broker to refresh one claimed connection and reads the
// provider's Retry-After from a failure.
func (s *Scheduler) refresh(ctx context.Context, c store.Claim, b *bucket) string {
	err := s.refresher.RefreshIfDue(ctx, c.ID)
	if err == nil {
		return OutcomeOK
	}
	var oe *oauth.Error
	if errors.As(err, &oe) {
		// Only an answer from the provider speaks for the whole provider; a
		// connection's own cooldown (no status code) does not.
		if oe.StatusCode != 0 && (oe.RetryAfter > 0 || oe.StatusCode == 429) {
			wait := max(oe.RetryAfter, time.Second)
			now := s.now()
			b.pause(now, now.Add(wait))
			s.log.WarnContext(ctx, "provider asked to slow down; pausing its scheduled refreshes",
				"provider", c.Provider, "status", oe.StatusCode, "retry_after", wait)
		}
		if oauth.Terminal(err) {
			return OutcomeTerminal
		}
		if errors.Is(err, oauth.ErrTransient) {
			return OutcomeTransient
		}
	}
	if ctx.Err() == nil {
		s.log.WarnContext(ctx, "scheduled refresh failed", "connection", c.ID, "provider", c.Provider, "error", err)
	}
	return OutcomeError
}

// bucket returns the provider's token bucket, creating it on first use.
func (s *Scheduler) bucket(provider string, now time.Time) *bucket {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.buckets[provider]
	if !ok {
		l := s.limits[provider]
		b = newBucket(l.Rate, l.Burst, now)
		s.buckets[provider] = b
	}
	return b
}

func (s *Scheduler) begin(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inFlight[id] {
		return false
	}
	s.inFlight[id] = true
	return true
}

func (s *Scheduler) end(id string) {
	s.mu.Lock()
	delete(s.inFlight, id)
	s.mu.Unlock()
}
