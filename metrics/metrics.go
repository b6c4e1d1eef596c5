package metrics

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const namespace = "tokenbroker"

// Label values standing in for ones that were not given or not expected:
// an unexpected value never becomes a new series of its own, so a bug
// elsewhere cannot blow up the label cardinality.
const (
	labelOther     = "other"
	labelUnmatched = "unmatched" // a request no route matched
	resultOK       = "ok"
)

// Refresh outcomes the broker reports (see broker.Metrics).
var refreshOutcomes = []string{"success", "transient", "terminal"}

// resultPattern matches the API's error codes ("reauth_required"); the
// server writes them from a fixed list, this only keeps a stray value from
// creating a series per distinct string.
var resultPattern = regexp.MustCompile(`^[a-z][a-z_]{0,39}$`)

// Buckets of the refresh duration histogram: a token endpoint answers in
// tens of milliseconds when well, and the broker gives up on one after its
// refresh timeout (30s by default).
var refreshBuckets = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30}

// Buckets of the lease wait histogram: a wait lasts one refresh of another
// holder, or up to the lease TTL (30s by default) when that holder died.
var leaseBuckets = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60}

// Options configures [New]. Registerer is required.
type Options struct {
	// Registerer receives every collector. Use one registry per app
	// (prometheus.NewRegistry), not the global default one, so tests and
	// several apps in one process do not share series.
	Registerer prometheus.Registerer
	// Providers are the configured provider names. Their refresh series are
	// created at zero up front, so rates and alerts have data before the
	// first refresh, and the connections gauge reports zero for them.
	Providers []string
	// Connections counts the stored connections for
	// tokenbroker_connections at scrape time; nil leaves that gauge out.
	Connections ConnectionCounter
	// CountCacheFor is how long one count of the connections answers
	// later scrapes, so that several scrapers do not each cost the database
	// a full scan. Default 5s, and at least ten times the last count's
	// duration (a large table is counted less often); negative counts on
	// every scrape.
	CountCacheFor time.Duration
	// CountTimeout bounds one count. Default 5s.
	CountTimeout time.Duration
	// Now is the clock of the count cache. Default [time.Now].
	Now func() time.Time
	// Logger hears about failed counts. Default: discard.
	Logger *slog.Logger
}

// Metrics records tokenbroker's work. It satisfies broker.Metrics,
// server.Metrics, scheduler.Metrics and webhook.Metrics and is safe for
// concurrent use.
// Create it with [New].
type Metrics struct {
	refreshes       *prometheus.CounterVec
	refreshDuration *prometheus.HistogramVec
	leaseWait       *prometheus.HistogramVec
	tokenRequests   *prometheus.CounterVec
	proxyRequests   *prometheus.CounterVec
	httpRequests    *prometheus.CounterVec
	// The counters of the label sets the request path has used (served.go).
	httpServed  counterCache[routeStatus]
	tokenServed counterCache[string]
	proxyServed counterCache[string]
	scheduler   schedulerMetrics
	webhook     webhookMetrics
}

// New creates tokenbroker's collectors and registers them on
// opts.Registerer. It fails if any is already registered there.
func New(opts Options) (*Metrics, error) {
	if opts.Registerer == nil {
		return nil, errors.New("metrics: Options.Registerer is required")
	}
	m := &Metrics{
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "refresh_attempts_total",
			Help: "Calls to a provider's token endpoint to refresh a connection, by outcome (success, transient, terminal).",
		}, []string{"provider", "outcome"}),
		refreshDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "refresh_duration_seconds",
			Help:    "How long a provider's token endpoint took to answer a refresh.",
			Buckets: refreshBuckets,
		}, []string{"provider"}),
		leaseWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "lease_wait_seconds",
			Help:    "How long a refresh waited for another holder of the connection's refresh lease.",
			Buckets: leaseBuckets,
		}, []string{"provider"}),
		tokenRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "token_requests_total",
			Help: `Answers to GET /v1/connections/{id}/token, by result: "ok" or the API error code.`,
		}, []string{"result"}),
		proxyRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "proxy_requests_total",
			Help: `Answers of /v1/proxy, by result: "ok" (the provider answered) or the API error code.`,
		}, []string{"result"}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "http_requests_total",
			Help: "Answers of the HTTP API, by route pattern and status code.",
		}, []string{"route", "code"}),
		scheduler: newSchedulerMetrics(),
		webhook:   newWebhookMetrics(),
	}
	for _, p := range opts.Providers {
		for _, o := range refreshOutcomes {
			m.refreshes.WithLabelValues(p, o)
		}
	}
	m.tokenRequests.WithLabelValues(resultOK)
	m.proxyRequests.WithLabelValues(resultOK)

	cs := []prometheus.Collector{m.refreshes, m.refreshDuration, m.leaseWait, m.tokenRequests, m.proxyRequests, m.httpRequests}
	cs = append(cs, m.scheduler.collectors()...)
	cs = append(cs, m.webhook.collectors()...)
	if opts.Connections != nil {
		cs = append(cs, newConnectionsCollector(opts))
	}
	for _, c := range cs {
		if err := opts.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
	}
	return m, nil
}

// RefreshFinished records one call to a provider's token endpoint. It
// implements broker.Metrics.
func (m *Metrics) RefreshFinished(provider, outcome string, d time.Duration) {
	if !slices.Contains(refreshOutcomes, outcome) {
		outcome = labelOther
	}
	m.refreshes.WithLabelValues(provider, outcome).Inc()
	m.refreshDuration.WithLabelValues(provider).Observe(d.Seconds())
}

// LeaseWaited records a wait for another holder's refresh lease. It
// implements broker.Metrics.
func (m *Metrics) LeaseWaited(provider string, d time.Duration) {
	m.leaseWait.WithLabelValues(provider).Observe(d.Seconds())
}

// RequestServed records one answer of the HTTP API: route is its pattern
// ("" when no route matched), code the status sent. It implements
// server.Metrics.
func (m *Metrics) RequestServed(route string, code int) {
	if route == "" {
		route = labelUnmatched
	}
	m.httpServed.get(routeStatus{route, code}, func() prometheus.Counter {
		return m.httpRequests.WithLabelValues(route, statusLabel(code))
	}).Inc()
}

// TokenServed records the result of a token request. It implements
// server.Metrics.
func (m *Metrics) TokenServed(result string) {
	m.tokenServed.get(result, func() prometheus.Counter {
		return m.tokenRequests.WithLabelValues(resultLabel(result))
	}).Inc()
}

// ProxyServed records the result of a proxied call. It implements
// server.Metrics.
func (m *Metrics) ProxyServed(result string) {
	m.proxyServed.get(result, func() prometheus.Counter {
		return m.proxyRequests.WithLabelValues(resultLabel(result))
	}).Inc()
}

// Handler serves g's metrics in the Prometheus exposition formats. A
// collector that fails is logged and left out; the rest are served.
func Handler(g prometheus.Gatherer, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
	})
}

func resultLabel(result string) string {
	switch {
	case result == "":
		return resultOK
	case resultPattern.MatchString(result):
		return result
	}
	return labelOther
}

func statusLabel(code int) string {
	if code < 100 || code > 999 {
		return labelOther
	}
	return strconv.Itoa(code)
}
