package metrics

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenbroker/tokenbroker/store"
)

// ConnectionCounter counts the stored connections per provider and status.
// Both store backends satisfy it (see [store.ConnectionCounter]).
type ConnectionCounter interface {
	CountConnections(ctx context.Context) (map[store.ConnectionGroup]int, error)
}

const (
	defaultCountCacheFor = 5 * time.Second
	defaultCountTimeout  = 5 * time.Second
	// countCostFactor stretches the cache by the count's own cost: a count
	// that took d is reused for at least countCostFactor×d, so counting
	// takes at most a tenth of the time however large the table (a second
	// or more per million rows: BENCHMARKS.md, "A million connections").
	countCostFactor = 10

	opCountConnections = "count_connections"
)

// connectionStatuses are reported, at zero when there are none, for every
// configured provider: an alert on needs_reauth must see a 0, not no data.
var connectionStatuses = []string{
	string(store.StatusActive), store.CountedFailing, string(store.StatusNeedsReauth), string(store.StatusRevoked),
}

// connectionsCollector computes tokenbroker_connections when scraped, from
// a count the store makes, reused for a few seconds. A count that fails
// leaves the last good one in place and is counted in
// tokenbroker_store_errors_total, which this collector also serves so that
// one scrape shows both consistently.
type connectionsCollector struct {
	counter   ConnectionCounter
	providers []string
	cacheFor  time.Duration
	timeout   time.Duration
	now       func() time.Time
	log       *slog.Logger
	desc      *prometheus.Desc
	errors    *prometheus.CounterVec

	// mu is held while counting, so concurrent scrapes wait for one count
	// instead of each starting their own.
	mu      sync.Mutex
	counts  map[store.ConnectionGroup]int // last good count; nil before the first
	tried   bool
	triedAt time.Time
	took    time.Duration // how long the last count took
}

func newConnectionsCollector(opts Options) *connectionsCollector {
	c := &connectionsCollector{
		counter:   opts.Connections,
		providers: append([]string(nil), opts.Providers...),
		cacheFor:  opts.CountCacheFor,
		timeout:   opts.CountTimeout,
		now:       opts.Now,
		log:       opts.Logger,
		desc: prometheus.NewDesc(namespace+"_connections",
			"Stored connections by provider and status: active, failing (active, but its last refresh failed and it is backing off), needs_reauth, revoked. Counted at scrape time.",
			[]string{"provider", "status"}, nil),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "store_errors_total",
			Help: "Store reads made for metrics that failed, by operation; the gauges they feed keep their last known values.",
		}, []string{"operation"}),
	}
	if c.cacheFor == 0 {
		c.cacheFor = defaultCountCacheFor
	}
	if c.timeout <= 0 {
		c.timeout = defaultCountTimeout
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.errors.WithLabelValues(opCountConnections)
	return c
}

func (c *connectionsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.desc
	c.errors.Describe(ch)
}

func (c *connectionsCollector) Collect(ch chan<- prometheus.Metric) {
	if counts := c.current(); counts != nil {
		values := make(map[store.ConnectionGroup]int, len(c.providers)*len(connectionStatuses)+len(counts))
		for _, p := range c.providers {
			for _, s := range connectionStatuses {
				values[store.ConnectionGroup{Provider: p, Status: s}] = 0
			}
		}
		for g, n := range counts {
			values[g] = n
		}
		for g, n := range values {
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), g.Provider, g.Status)
		}
	}
	c.errors.Collect(ch)
}

// current returns the counts to report: a fresh count, or the last good one
// while the cache holds or when counting fails; nil if no count ever
// succeeded.
func (c *connectionsCollector) current() map[store.ConnectionGroup]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	// A negative cacheFor (tests) counts on every scrape.
	if age := now.Sub(c.triedAt); c.tried && c.cacheFor >= 0 && age >= 0 && age < max(c.cacheFor, countCostFactor*c.took) {
		return c.counts
	}
	// A failed count is cached too: a database that is down is asked once
	// per interval, not once per scraper.
	c.tried, c.triedAt = true, now
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	counts, err := c.counter.CountConnections(ctx)
	c.took = max(c.now().Sub(now), 0)
	if err != nil {
		c.errors.WithLabelValues(opCountConnections).Inc()
		// Store errors name the operation and the database's complaint,
		// never token values.
		c.log.Warn("metrics: cannot count connections; tokenbroker_connections keeps the last count", "error", err)
		return c.counts
	}
	c.counts = counts
	return counts
}
