package metrics

import (
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Outcomes the scheduler reports (see scheduler.Metrics).
var schedulerOutcomes = []string{"ok", "transient", "terminal", "error", "deferred"}

// schedulerMetrics are the families of the background scheduler; the
// methods of scheduler.Metrics on [Metrics] feed them.
type schedulerMetrics struct {
	refreshes *prometheus.CounterVec
	claimed   prometheus.Counter
	lag       prometheus.Gauge
}

func newSchedulerMetrics() schedulerMetrics {
	return schedulerMetrics{
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "scheduler", Name: "refreshes_total",
			Help: "Connections the scheduler claimed, by provider and what became of them: ok, transient, terminal, error, deferred (left for a later cycle by a rate limit).",
		}, []string{"provider", "outcome"}),
		claimed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "scheduler", Name: "claimed_total",
			Help: "Due connections the scheduler claimed.",
		}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: "scheduler", Name: "lag_seconds",
			Help: "How far past its due time the oldest due connection was at the scheduler's last cycle; near zero while it keeps up.",
		}),
	}
}

func (s schedulerMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{s.refreshes, s.claimed, s.lag}
}

// ScheduledRefresh records one connection the scheduler claimed and its
// outcome. It implements scheduler.Metrics.
func (m *Metrics) ScheduledRefresh(provider, outcome string) {
	if !slices.Contains(schedulerOutcomes, outcome) {
		outcome = labelOther
	}
	m.scheduler.refreshes.WithLabelValues(provider, outcome).Inc()
}

// Claimed records how many due connections one scheduler cycle claimed. It
// implements scheduler.Metrics.
func (m *Metrics) Claimed(n int) {
	if n > 0 {
		m.scheduler.claimed.Add(float64(n))
	}
}

// Lag records how late the oldest due connection was at the scheduler's
// cycle. It implements scheduler.Metrics.
func (m *Metrics) Lag(d time.Duration) { m.scheduler.lag.Set(max(d, 0).Seconds()) }
