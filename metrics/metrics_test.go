package metrics

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/scheduler"
	"github.com/tokenbroker/tokenbroker/server"
	"github.com/tokenbroker/tokenbroker/webhook"
)

// The interfaces of the packages this one reports for.
var (
	_ broker.Metrics    = (*Metrics)(nil)
	_ server.Metrics    = (*Metrics)(nil)
	_ scheduler.Metrics = (*Metrics)(nil)
	_ webhook.Metrics   = (*Metrics)(nil)
)

func TestNewNeedsRegisterer(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Fatal("New without a Registerer: no error")
	}
}

// TestNewRegistersOnce: the collectors go on the given registry only, so a
// second set on the same registry is refused while another registry takes
// its own.
func TestNewRegistersOnce(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := New(Options{Registerer: reg}); err != nil {
		t.Fatalf("New: %v", err)
	}
	if _, err := New(Options{Registerer: reg}); err == nil {
		t.Error("second New on the same registry: no error")
	}
	if _, err := New(Options{Registerer: prometheus.NewRegistry()}); err != nil {
		t.Errorf("New on a fresh registry: %v", err)
	}
}

// TestProvidersStartAtZero: every configured provider has its refresh
// series from the start, so a rate or an alert sees 0 rather than nothing.
func TestProvidersStartAtZero(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := New(Options{Registerer: reg, Providers: []string{"acme", "beta"}}); err != nil {
		t.Fatal(err)
	}
	fams := families(t, reg)
	for _, p := range []string{"acme", "beta"} {
		for _, o := range refreshOutcomes {
			if v := value(t, fams, "tokenbroker_refresh_attempts_total", labels{"provider", p, "outcome", o}); v != 0 {
				t.Errorf("%s/%s starts at %v", p, o, v)
			}
		}
	}
	if n := seriesCount(fams, "tokenbroker_refresh_attempts_total"); n != 6 {
		t.Errorf("%d refresh series, want 6", n)
	}
	if v := value(t, fams, "tokenbroker_token_requests_total", labels{"result", "ok"}); v != 0 {
		t.Errorf("token ok starts at %v", v)
	}
}

// TestLabels: what each observation counts under, including the values
// that must not open a series of their own.
func TestLabels(t *testing.T) {
	type sample struct {
		family string
		ls     labels
		want   float64
	}
	tests := []struct {
		name    string
		observe func(m *Metrics)
		want    []sample
		// hist: histogram series and their expected observation counts.
		hist []sample
	}{
		{
			name: "refresh outcomes",
			observe: func(m *Metrics) {
				m.RefreshFinished("acme", "success", 20*time.Millisecond)
				m.RefreshFinished("acme", "success", 40*time.Millisecond)
				m.RefreshFinished("acme", "transient", time.Second)
				m.RefreshFinished("beta", "terminal", time.Second)
			},
			want: []sample{
				{"tokenbroker_refresh_attempts_total", labels{"provider", "acme", "outcome", "success"}, 2},
				{"tokenbroker_refresh_attempts_total", labels{"provider", "acme", "outcome", "transient"}, 1},
				{"tokenbroker_refresh_attempts_total", labels{"provider", "beta", "outcome", "terminal"}, 1},
			},
			hist: []sample{
				{"tokenbroker_refresh_duration_seconds", labels{"provider", "acme"}, 3},
				{"tokenbroker_refresh_duration_seconds", labels{"provider", "beta"}, 1},
			},
		},
		{
			name:    "unknown outcome",
			observe: func(m *Metrics) { m.RefreshFinished("acme", "exploded: something free-form", time.Second) },
			want:    []sample{{"tokenbroker_refresh_attempts_total", labels{"provider", "acme", "outcome", "other"}, 1}},
		},
		{
			name:    "lease wait",
			observe: func(m *Metrics) { m.LeaseWaited("acme", 3*time.Second) },
			hist:    []sample{{"tokenbroker_lease_wait_seconds", labels{"provider", "acme"}, 1}},
		},
		{
			name: "token results",
			observe: func(m *Metrics) {
				m.TokenServed("")
				m.TokenServed("")
				m.TokenServed("reauth_required")
				m.TokenServed("provider_unavailable")
				m.TokenServed("Not A Code {with} spaces")
			},
			want: []sample{
				{"tokenbroker_token_requests_total", labels{"result", "ok"}, 2},
				{"tokenbroker_token_requests_total", labels{"result", "reauth_required"}, 1},
				{"tokenbroker_token_requests_total", labels{"result", "provider_unavailable"}, 1},
				{"tokenbroker_token_requests_total", labels{"result", "other"}, 1},
			},
		},
		{
			name: "proxy results",
			observe: func(m *Metrics) {
				m.ProxyServed("")
				m.ProxyServed("bad_gateway")
			},
			want: []sample{
				{"tokenbroker_proxy_requests_total", labels{"result", "ok"}, 1},
				{"tokenbroker_proxy_requests_total", labels{"result", "bad_gateway"}, 1},
			},
		},
		{
			name: "scheduler",
			observe: func(m *Metrics) {
				m.Claimed(3)
				m.Claimed(0)
				m.Claimed(2)
				m.ScheduledRefresh("acme", scheduler.OutcomeOK)
				m.ScheduledRefresh("acme", scheduler.OutcomeOK)
				m.ScheduledRefresh("acme", scheduler.OutcomeDeferred)
				m.ScheduledRefresh("beta", scheduler.OutcomeTerminal)
				m.ScheduledRefresh("beta", "some new outcome")
				m.Lag(90 * time.Second)
				m.Lag(1500 * time.Millisecond) // a gauge: the last cycle's lag
			},
			want: []sample{
				{"tokenbroker_scheduler_claimed_total", labels{}, 5},
				{"tokenbroker_scheduler_refreshes_total", labels{"provider", "acme", "outcome", "ok"}, 2},
				{"tokenbroker_scheduler_refreshes_total", labels{"provider", "acme", "outcome", "deferred"}, 1},
				{"tokenbroker_scheduler_refreshes_total", labels{"provider", "beta", "outcome", "terminal"}, 1},
				{"tokenbroker_scheduler_refreshes_total", labels{"provider", "beta", "outcome", "other"}, 1},
				{"tokenbroker_scheduler_lag_seconds", labels{}, 1.5},
			},
		},
		{
			name: "webhooks",
			observe: func(m *Metrics) {
				m.DeliveryFinished("ops", "delivered", 30*time.Millisecond)
				m.DeliveryFinished("ops", "retry", 10*time.Second)
				m.DeliveryFinished("ops", "delivered", 40*time.Millisecond)
				m.DeliveryFinished("audit", "abandoned", time.Second)
				m.DeliveryFinished("audit", "exploded", time.Second)
				m.Backlog(12)
				m.Backlog(4) // a gauge: the last look at the outbox
			},
			want: []sample{
				{"tokenbroker_webhook_deliveries_total", labels{"endpoint", "ops", "result", "delivered"}, 2},
				{"tokenbroker_webhook_deliveries_total", labels{"endpoint", "ops", "result", "retry"}, 1},
				{"tokenbroker_webhook_deliveries_total", labels{"endpoint", "audit", "result", "abandoned"}, 1},
				{"tokenbroker_webhook_deliveries_total", labels{"endpoint", "audit", "result", "other"}, 1},
				{"tokenbroker_webhook_backlog", labels{}, 4},
			},
			hist: []sample{
				{"tokenbroker_webhook_delivery_duration_seconds", labels{"endpoint", "ops"}, 3},
				{"tokenbroker_webhook_delivery_duration_seconds", labels{"endpoint", "audit"}, 2},
			},
		},
		{
			name: "http requests",
			observe: func(m *Metrics) {
				m.RequestServed("GET /healthz", 200)
				m.RequestServed("GET /healthz", 200)
				m.RequestServed("", 404)
				m.RequestServed("GET /v1/connections/{id}/token", 499)
				m.RequestServed("GET /readyz", 0)
			},
			want: []sample{
				{"tokenbroker_http_requests_total", labels{"route", "GET /healthz", "code", "200"}, 2},
				{"tokenbroker_http_requests_total", labels{"route", "unmatched", "code", "404"}, 1},
				{"tokenbroker_http_requests_total", labels{"route", "GET /v1/connections/{id}/token", "code", "499"}, 1},
				{"tokenbroker_http_requests_total", labels{"route", "GET /readyz", "code", "other"}, 1},
			},
		},
		{
			// Counted through the cache of counters (served.go): the
			// second and later calls must land on the same series.
			name: "token and proxy results",
			observe: func(m *Metrics) {
				for range 3 {
					m.TokenServed("")
					m.ProxyServed("bad_gateway")
					m.ProxyServed("free form: not a code")
				}
				m.TokenServed("reauth_required")
			},
			want: []sample{
				{"tokenbroker_token_requests_total", labels{"result", "ok"}, 3},
				{"tokenbroker_token_requests_total", labels{"result", "reauth_required"}, 1},
				{"tokenbroker_proxy_requests_total", labels{"result", "bad_gateway"}, 3},
				{"tokenbroker_proxy_requests_total", labels{"result", "other"}, 3},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			m, err := New(Options{Registerer: reg})
			if err != nil {
				t.Fatal(err)
			}
			tc.observe(m)
			fams := families(t, reg)
			for _, s := range tc.want {
				if got := value(t, fams, s.family, s.ls); got != s.want {
					t.Errorf("%s%v = %v, want %v", s.family, s.ls, got, s.want)
				}
			}
			for _, s := range tc.hist {
				if got := histogramCount(fams, s.family, s.ls); got != uint64(s.want) {
					t.Errorf("%s%v: %d observations, want %v", s.family, s.ls, got, s.want)
				}
			}
		})
	}
}

// TestServedAllocatesNothing: counting an answer on the request path is
// a cached counter's increment once its labels have been seen.
func TestServedAllocatesNothing(t *testing.T) {
	m, err := New(Options{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() {
		m.RequestServed("GET /v1/connections/{id}/token", 200)
		m.TokenServed("")
		m.ProxyServed("bad_gateway")
	}); n != 0 {
		t.Errorf("%v allocations per answer, want 0", n)
	}
}

// TestRefreshBuckets: the histogram resolves the range a token endpoint
// answers in, from 10ms to the 30s refresh timeout.
func TestRefreshBuckets(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := New(Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	m.RefreshFinished("acme", "success", 15*time.Millisecond)
	m.RefreshFinished("acme", "success", 25*time.Second)
	h, ok := series(families(t, reg), "tokenbroker_refresh_duration_seconds", labels{"provider", "acme"})
	if !ok {
		t.Fatal("no duration series")
	}
	var bounds []float64
	cum := map[float64]uint64{}
	for _, b := range h.GetHistogram().GetBucket() {
		bounds = append(bounds, b.GetUpperBound())
		cum[b.GetUpperBound()] = b.GetCumulativeCount()
	}
	if bounds[0] != 0.01 || bounds[len(bounds)-1] != 30 {
		t.Errorf("buckets %v: want 0.01 … 30", bounds)
	}
	if cum[0.01] != 0 || cum[0.025] != 1 || cum[20] != 1 || cum[30] != 2 {
		t.Errorf("cumulative counts %v: 15ms belongs in le=0.025 and 25s in le=30", cum)
	}
}
