package metrics

import (
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Outcomes of a delivery attempt the webhook dispatcher reports (see
// webhook.Metrics).
var deliveryOutcomes = []string{"delivered", "retry", "abandoned"}

// Buckets of the webhook delivery duration: a receiver answers in
// milliseconds when well; the dispatcher gives up on a POST after its
// timeout (10s by default).
var deliveryBuckets = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// webhookMetrics are the families of the webhook dispatcher; the methods of
// webhook.Metrics on [Metrics] feed them.
type webhookMetrics struct {
	deliveries *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	backlog    prometheus.Gauge
}

func newWebhookMetrics() webhookMetrics {
	return webhookMetrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "webhook", Name: "deliveries_total",
			Help: "Webhook delivery attempts by endpoint and result: delivered, retry (failed, will be tried again), abandoned (failed for good).",
		}, []string{"endpoint", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "webhook", Name: "delivery_duration_seconds",
			Help:    "How long a webhook endpoint took to answer a delivery attempt.",
			Buckets: deliveryBuckets,
		}, []string{"endpoint"}),
		backlog: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: "webhook", Name: "backlog",
			Help: "Webhook deliveries neither delivered nor abandoned yet, as of the dispatcher's last look at the outbox.",
		}),
	}
}

func (w webhookMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{w.deliveries, w.duration, w.backlog}
}

// DeliveryFinished records one webhook delivery attempt. It implements
// webhook.Metrics.
func (m *Metrics) DeliveryFinished(endpoint, outcome string, d time.Duration) {
	if !slices.Contains(deliveryOutcomes, outcome) {
		outcome = labelOther
	}
	m.webhook.deliveries.WithLabelValues(endpoint, outcome).Inc()
	m.webhook.duration.WithLabelValues(endpoint).Observe(d.Seconds())
}

// Backlog records the deliveries still pending. It implements
// webhook.Metrics.
func (m *Metrics) Backlog(n int) { m.webhook.backlog.Set(float64(max(n, 0))) }
