package broker

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/tokenbroker/tokenbroker/oauth/lifecycle"
	"github.com/tokenbroker/tokenbroker/store"
)

// Tracing lives here, apart from the refresh algorithm: refresh.go and
// lease.go each call one helper of this file, so the algorithm reads the
// same with tracing on or off. With no tracer nothing is wrapped and no
// span is made.

// Span attributes. No token, key or provider error text is ever recorded.
const (
	attrConnection = attribute.Key("tokenbroker.connection")
	attrReason     = attribute.Key("tokenbroker.refresh.reason")
	attrOp         = attribute.Key("db.operation.name")
)

// reasonName is the refresh reason as operators read it: due (a caller
// needs a token and the current one is due), on-error (an API rejected the
// token), scheduled, forced.
func reasonName(r lifecycle.Reason) string {
	switch r {
	case lifecycle.OnDemand:
		return "due"
	case lifecycle.Rejected:
		return "on-error"
	}
	return r.String()
}

// tracedFlight is refreshFlight in a "tokenbroker.refresh" span carrying
// the connection and the reason, and the outcome.
func (b *Broker) tracedFlight(ctx context.Context, id string, reason lifecycle.Reason, stale *string) (Token, error) {
	if b.tracer == nil {
		return b.refreshFlight(ctx, id, reason, stale)
	}
	ctx, span := b.tracer.Start(ctx, "tokenbroker.refresh", trace.WithAttributes(attrConnection.String(id), attrReason.String(reasonName(reason))))
	defer span.End()
	tok, err := b.refreshFlight(ctx, id, reason, stale)
	if err != nil {
		// The outcome class only: provider error text may be sensitive.
		span.SetStatus(codes.Error, outcome(err))
	}
	return tok, err
}

// leaseWaitSpan records a "tokenbroker.lease_wait" span for the time a
// flight spent waiting on another refresher's lease, ending now.
func (b *Broker) leaseWaitSpan(ctx context.Context, id string, waited time.Duration) {
	if b.tracer == nil {
		return
	}
	now := time.Now()
	_, span := b.tracer.Start(ctx, "tokenbroker.lease_wait", trace.WithTimestamp(now.Add(-waited)), trace.WithAttributes(attrConnection.String(id)))
	span.End(trace.WithTimestamp(now))
}

// traceStore wraps st so each call is a "store.<Method>" span; with no
// tracer it returns st itself.
func traceStore(st Store, t trace.Tracer) Store {
	if t == nil || st == nil {
		return st
	}
	return &tracedStore{Store: st, t: t}
}

// tracedStore is a [Store] whose calls are spans. It embeds the store so
// the connect-session methods pass through untraced.
type tracedStore struct {
	Store
	t trace.Tracer
}

func (s *tracedStore) span(ctx context.Context, op, id string) (context.Context, trace.Span) {
	attrs := []attribute.KeyValue{attrOp.String(op)}
	if id != "" {
		attrs = append(attrs, attrConnection.String(id))
	}
	return s.t.Start(ctx, "store."+op, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
}

func end(span trace.Span, err error) {
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

func (s *tracedStore) CreateConnection(ctx context.Context, c store.Connection, events ...store.Event) (store.Connection, error) {
	ctx, span := s.span(ctx, "CreateConnection", c.ID)
	out, err := s.Store.CreateConnection(ctx, c, events...)
	end(span, err)
	return out, err
}

func (s *tracedStore) CreateConnections(ctx context.Context, cs []store.Connection, events []store.Event) error {
	ctx, span := s.span(ctx, "CreateConnections", "")
	err := s.Store.CreateConnections(ctx, cs, events)
	end(span, err)
	return err
}

func (s *tracedStore) GetConnection(ctx context.Context, id string) (store.Connection, error) {
	ctx, span := s.span(ctx, "GetConnection", id)
	out, err := s.Store.GetConnection(ctx, id)
	end(span, err)
	return out, err
}

func (s *tracedStore) UpdateConnection(ctx context.Context, id string, update store.Updater) (store.Connection, error) {
	ctx, span := s.span(ctx, "UpdateConnection", id)
	out, err := s.Store.UpdateConnection(ctx, id, update)
	end(span, err)
	return out, err
}

func (s *tracedStore) CompareAndSwap(ctx context.Context, c store.Connection, events ...store.Event) (store.Connection, error) {
	ctx, span := s.span(ctx, "CompareAndSwap", c.ID)
	out, err := s.Store.CompareAndSwap(ctx, c, events...)
	end(span, err)
	return out, err
}

func (s *tracedStore) DeleteConnection(ctx context.Context, id string, events ...store.Event) error {
	ctx, span := s.span(ctx, "DeleteConnection", id)
	err := s.Store.DeleteConnection(ctx, id, events...)
	end(span, err)
	return err
}

func (s *tracedStore) ListConnections(ctx context.Context, opts store.ListOptions) (store.Page, error) {
	ctx, span := s.span(ctx, "ListConnections", "")
	out, err := s.Store.ListConnections(ctx, opts)
	end(span, err)
	return out, err
}

func (s *tracedStore) AcquireLease(ctx context.Context, id, owner string, ttl time.Duration) (store.Connection, error) {
	ctx, span := s.span(ctx, "AcquireLease", id)
	out, err := s.Store.AcquireLease(ctx, id, owner, ttl)
	end(span, err)
	return out, err
}

func (s *tracedStore) ReleaseLease(ctx context.Context, id, owner string) error {
	ctx, span := s.span(ctx, "ReleaseLease", id)
	err := s.Store.ReleaseLease(ctx, id, owner)
	end(span, err)
	return err
}
