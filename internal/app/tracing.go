package app

import (
	"net/http"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/trace"

	"github.com/tokenbroker/tokenbroker/internal/tracing"
)

// instrumentation names tokenbroker's tracer.
const instrumentation = "github.com/tokenbroker/tokenbroker"

func tracer(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		return nil
	}
	return tp.Tracer(instrumentation)
}

// traceTransport makes each outgoing call a client span and writes the W3C
// trace context into its headers, so a provider that traces sees the
// caller's trace. With no provider, rt is returned as is.
func traceTransport(rt http.RoundTripper, tp trace.TracerProvider) http.RoundTripper {
	if tp == nil {
		return rt
	}
	return otelhttp.NewTransport(rt, otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(tracing.Propagator),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return "provider " + r.Method }))
}

// traceClient is hc with a tracing transport (a copy; hc is not changed).
func traceClient(hc *http.Client, tp trace.TracerProvider) *http.Client {
	if tp == nil {
		return hc
	}
	c := *hc
	base := c.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	c.Transport = traceTransport(base, tp)
	return &c
}

// Handler is the server's handler as ServeGraceful serves it: with tracing
// on, each request is a server span named by its route, continuing the
// caller's W3C trace context.
func (a *App) Handler() http.Handler {
	h := a.Server.Handler()
	if a.tp == nil {
		return h
	}
	// The server renames the span to the route once it has matched it
	// ("GET /v1/connections/{id}/token"); until then it is the method.
	return otelhttp.NewHandler(h, "tokenbroker", otelhttp.WithTracerProvider(a.tp), otelhttp.WithPropagators(tracing.Propagator),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method }))
}
