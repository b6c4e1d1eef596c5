package webhook

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/oauth"
	"github.com/tokenbroker/tokenbroker/oauth/lifecycle"
	"github.com/tokenbroker/tokenbroker/store"
)

// Defaults for zero fields of [Options].
const (
	DefaultTimeout       = 10 * time.Second
	DefaultConcurrency   = 4
	DefaultPollInterval  = 2 * time.Second
	DefaultMaxAge        = 72 * time.Hour
	DefaultMaxRejections = 3
	DefaultRetention     = 30 * 24 * time.Hour
	DefaultBackoffBase   = 10 * time.Second
	DefaultBackoffMax    = time.Hour
)

// EventTypes are the event types the broker queues, in the order the docs
// list them.
func EventTypes() []string {
	return []string{broker.EventCreated, broker.EventDeleted, broker.EventRefreshFailed,
		broker.EventReauthRequired, broker.EventRecovered, broker.EventScopeRequired}
}

// ValidEventType reports whether t is one of [EventTypes].
func ValidEventType(t string) bool { return slices.Contains(EventTypes(), t) }

// Endpoint is one webhook receiver.
type Endpoint struct {
	// Name identifies the endpoint in the outbox and in logs and metrics;
	// renaming it makes it a new endpoint.
	Name string
	// URL receives the POSTs. It appears in no log line or error: some
	// receivers put a credential in it.
	URL string
	// Secret keys the HMAC in [HeaderSignature].
	Secret []byte
	// Events filters the event types sent; empty means all.
	Events []string
}

// LogValue keeps the secret and URL out of logs.
func (e Endpoint) LogValue() slog.Value { return slog.StringValue(e.Name) }

func (e *Endpoint) wants(typ string) bool {
	return len(e.Events) == 0 || slices.Contains(e.Events, typ)
}

// Metrics observes deliveries. Implementations must be cheap and safe for
// concurrent use.
type Metrics interface {
	// DeliveryFinished reports one delivery attempt to endpoint and its
	// outcome: "delivered", "retry" or "abandoned".
	DeliveryFinished(endpoint, outcome string, d time.Duration)
	// Backlog reports the deliveries neither delivered nor abandoned yet.
	Backlog(n int)
}

type noMetrics struct{}

func (noMetrics) DeliveryFinished(string, string, time.Duration) {}
func (noMetrics) Backlog(int)                                    {}

// Options configures a [Dispatcher]. Outbox is required.
type Options struct {
	Outbox    store.Outbox
	Endpoints []Endpoint
	// Owner names this process in delivery claims; default a random id.
	// Each replica must have its own.
	Owner string
	// HTTPClient sends the POSTs; default a client with Timeout. Redirects
	// are never followed, whatever the client's CheckRedirect: a 3xx is a
	// rejection.
	HTTPClient *http.Client
	// Timeout bounds one POST. Default 10s.
	Timeout time.Duration
	// Concurrency bounds the POSTs in flight. Default 4.
	Concurrency int
	// PollInterval is how often the outbox is looked at when nothing woke
	// the dispatcher sooner. Default 2s.
	PollInterval time.Duration
	// Backoff spaces out retries: attempt n waits between half and all of
	// min(Max, Base·2^(n-1)). Default base 10s, cap 1h. MaxAttempts is
	// ignored (MaxAge bounds retries).
	Backoff oauth.Backoff
	// MaxAge: a delivery failing after its event is this old is abandoned.
	// Default 72h.
	MaxAge time.Duration
	// MaxRejections: a delivery answered with a 4xx other than 408 and 429
	// (or a 3xx) on its this-many-th attempt is abandoned. Default 3.
	MaxRejections int
	// Retention: events older than this are pruned from the outbox (they
	// are the connections' event history too). Default 30 days.
	Retention time.Duration
	Now       func() time.Time
	Rand      func() float64
	Logger    *slog.Logger
	Metrics   Metrics
}

// Dispatcher delivers the store's outbox to webhook endpoints, at least
// once: it claims due deliveries, POSTs them, and acks those answered with a
// 2xx. A crash between the POST and the ack sends the event again once the
// claim lapses, so receivers deduplicate on the event id. It keeps nothing
// in memory that a delivery needs: every event is in the store before the
// dispatcher hears of it.
type Dispatcher struct {
	outbox      store.Outbox
	endpoints   map[string]*Endpoint
	names       []string
	owner       string
	client      *http.Client
	timeout     time.Duration
	concurrency int
	poll        time.Duration
	backoff     oauth.Backoff
	maxAge      time.Duration
	rejections  int
	retention   time.Duration
	now         func() time.Time
	rand        func() float64
	log         *slog.Logger
	metrics     Metrics

	wake chan struct{}

	mu         sync.Mutex
	lastPruned time.Time
}

// New returns a Dispatcher. It checks the endpoints: unique non-empty
// names, absolute http(s) URLs, non-empty secrets, known event types.
func New(opts Options) (*Dispatcher, error) {
	if opts.Outbox == nil {
		return nil, errors.New("webhook: Options.Outbox is required")
	}
	d := &Dispatcher{
		outbox:      opts.Outbox,
		endpoints:   make(map[string]*Endpoint, len(opts.Endpoints)),
		owner:       opts.Owner,
		timeout:     opts.Timeout,
		concurrency: opts.Concurrency,
		poll:        opts.PollInterval,
		backoff:     opts.Backoff,
		maxAge:      opts.MaxAge,
		rejections:  opts.MaxRejections,
		retention:   opts.Retention,
		now:         opts.Now,
		rand:        opts.Rand,
		log:         opts.Logger,
		metrics:     opts.Metrics,
		wake:        make(chan struct{}, 1),
	}
	for i, e := range opts.Endpoints {
		if err := checkEndpoint(e); err != nil {
			return nil, fmt.Errorf("webhook: endpoint %d: %w", i, err)
		}
		if _, dup := d.endpoints[e.Name]; dup {
			return nil, fmt.Errorf("webhook: endpoint name %q is used twice", e.Name)
		}
		e.Events = slices.Clone(e.Events)
		d.endpoints[e.Name] = &e
		d.names = append(d.names, e.Name)
	}
	if d.owner == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		d.owner = "wh-" + hex.EncodeToString(b[:])
	}
	if d.timeout <= 0 {
		d.timeout = DefaultTimeout
	}
	client := opts.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: d.timeout}
	}
	// A copy, so that the caller's client keeps following redirects
	// elsewhere. A webhook that redirects is misconfigured; following it
	// would also turn the POST into a GET.
	c := *client
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	d.client = &c
	if d.concurrency <= 0 {
		d.concurrency = DefaultConcurrency
	}
	if d.poll <= 0 {
		d.poll = DefaultPollInterval
	}
	if d.backoff.Base <= 0 {
		d.backoff.Base = DefaultBackoffBase
	}
	if d.backoff.Max <= 0 {
		d.backoff.Max = DefaultBackoffMax
	}
	if d.maxAge <= 0 {
		d.maxAge = DefaultMaxAge
	}
	if d.rejections <= 0 {
		d.rejections = DefaultMaxRejections
	}
	if d.retention <= 0 {
		d.retention = DefaultRetention
	}
	if d.now == nil {
		d.now = time.Now
	}
	if d.rand == nil {
		d.rand = mrand.Float64
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if d.metrics == nil {
		d.metrics = noMetrics{}
	}
	return d, nil
}

func checkEndpoint(e Endpoint) error {
	if e.Name == "" {
		return errors.New("name is empty")
	}
	u, err := url.Parse(e.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("endpoint %q: url is not an absolute http or https URL", e.Name)
	}
	if len(e.Secret) == 0 {
		return fmt.Errorf("endpoint %q: secret is empty", e.Name)
	}
	for _, t := range e.Events {
		if !ValidEventType(t) {
			return fmt.Errorf("endpoint %q: unknown event type %q", e.Name, t)
		}
	}
	return nil
}

// Owner is the name this dispatcher claims deliveries under.
func (d *Dispatcher) Owner() string { return d.owner }

// Notify wakes the delivery loop: an event was just queued. It never
// blocks.
func (d *Dispatcher) Notify() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

var _ broker.EventSink = (*Dispatcher)(nil)

// Emit makes the dispatcher a [broker.EventSink]: the broker's events are
// already in the outbox when it hears of them, so all it does is [Notify].
func (d *Dispatcher) Emit(context.Context, broker.Event) { d.Notify() }

// Run delivers until ctx ends, then returns ctx's error. Deliveries in
// flight when ctx ends are cut off and their claims lapse, so another
// dispatcher (or this one after a restart) sends them again.
func (d *Dispatcher) Run(ctx context.Context) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
		case <-d.wake:
		}
		// Keep going while batches come back full: there is more due.
		for {
			n, err := d.DeliverDue(ctx)
			if err != nil && ctx.Err() == nil {
				d.log.WarnContext(ctx, "webhook: cannot read the outbox", "error", err)
			}
			if err != nil || n < d.concurrency {
				break
			}
		}
		d.housekeep(ctx)
		timer.Reset(d.poll)
	}
}

// housekeep reports the backlog and, once an hour, prunes old events.
func (d *Dispatcher) housekeep(ctx context.Context) {
	if n, err := d.outbox.OutboxBacklog(ctx); err == nil {
		d.metrics.Backlog(n)
	}
	now := d.now()
	d.mu.Lock()
	due := now.Sub(d.lastPruned) >= time.Hour
	if due {
		d.lastPruned = now
	}
	d.mu.Unlock()
	if !due {
		return
	}
	if n, err := d.outbox.PruneOutbox(ctx, now.Add(-d.retention)); err != nil {
		d.log.WarnContext(ctx, "webhook: cannot prune the outbox", "error", err)
	} else if n > 0 {
		d.log.InfoContext(ctx, "webhook: pruned old events", "events", n)
	}
}

// DeliverDue claims up to Concurrency due deliveries, sends them in
// parallel and records each outcome. It returns how many it claimed. With
// no endpoints it does nothing.
func (d *Dispatcher) DeliverDue(ctx context.Context) (int, error) {
	if len(d.names) == 0 {
		return 0, nil
	}
	claimTTL := 2*d.timeout + 30*time.Second
	ds, err := d.outbox.ClaimDeliveries(ctx, d.owner, d.names, d.now(), d.concurrency, claimTTL)
	if err != nil {
		return 0, err
	}
	var wg sync.WaitGroup
	for _, del := range ds {
		wg.Go(func() { d.deliver(ctx, del) })
	}
	wg.Wait()
	return len(ds), nil
}

// Payload is the JSON body of a webhook POST. It carries codes, never
// tokens or the provider's own error text.
type Payload struct {
	ID         string            `json:"id"`
	Type       string            `json:"type"`
	CreatedAt  time.Time         `json:"created_at"`
	Connection PayloadConnection `json:"connection"`
	// Code is the sanitized failure code ("invalid_grant", "http_503"), ""
	// for events without one.
	Code string `json:"code"`
}

// PayloadConnection names the connection an event is about.
type PayloadConnection struct {
	ID       string `json:"id"`
	Provider string `json:"provider"`
}

// Body returns the JSON body sent for e.
func Body(e store.Event) ([]byte, error) {
	return json.Marshal(Payload{
		ID: e.ID, Type: e.Type, CreatedAt: e.At.UTC(), Code: e.Code,
		Connection: PayloadConnection{ID: e.ConnectionID, Provider: e.Provider},
	})
}

// outcome of one attempt.
type outcome struct {
	ok         bool
	rejected   bool          // 3xx or 4xx other than 408/429
	retryAfter time.Duration // from the answer's Retry-After
	reason     string        // for the outbox and logs: "http 503", "network"
}

func (d *Dispatcher) deliver(ctx context.Context, del store.Delivery) {
	ep := d.endpoints[del.Endpoint]
	log := d.log.With("endpoint", del.Endpoint, "event", del.Event.ID, "type", del.Event.Type,
		"connection", del.Event.ConnectionID, "attempt", del.Attempt)
	if ep == nil || !ep.wants(del.Event.Type) {
		// Filtered out: done without sending.
		if err := d.outbox.AckDelivery(ctx, del.Event.ID, del.Endpoint); err != nil {
			log.WarnContext(ctx, "webhook: cannot record a filtered event as done", "error", err)
		}
		return
	}
	start := d.now()
	out := d.send(ctx, ep, del)
	elapsed := d.now().Sub(start)
	if out.ok {
		d.metrics.DeliveryFinished(del.Endpoint, "delivered", elapsed)
		// Record it even while shutting down: the receiver has it, and
		// every ack saved is a duplicate it does not get.
		ackCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := d.outbox.AckDelivery(ackCtx, del.Event.ID, del.Endpoint); err != nil {
			log.WarnContext(ctx, "webhook: delivered but cannot record it; it will be sent again", "error", err)
			return
		}
		log.DebugContext(ctx, "webhook: delivered")
		return
	}
	if ctx.Err() != nil {
		// Shutting down cut the attempt off: the claim lapses and the event
		// is sent again, without counting this as the receiver's failure.
		return
	}
	now := d.now()
	giveUp := ""
	switch {
	case out.rejected && del.Attempt >= d.rejections:
		giveUp = fmt.Sprintf("rejected on attempt %d", del.Attempt)
	case now.Sub(del.Event.At) >= d.maxAge:
		giveUp = fmt.Sprintf("still failing %s after the event", d.maxAge)
	}
	if giveUp != "" {
		d.metrics.DeliveryFinished(del.Endpoint, "abandoned", elapsed)
		log.WarnContext(ctx, "webhook: giving up on a delivery", "reason", out.reason, "why", giveUp)
		if err := d.outbox.AbandonDelivery(ctx, del.Event.ID, del.Endpoint, d.owner, out.reason); err != nil {
			log.WarnContext(ctx, "webhook: cannot record giving up", "error", err)
		}
		return
	}
	wait := d.retryDelay(del.Attempt, out.retryAfter)
	d.metrics.DeliveryFinished(del.Endpoint, "retry", elapsed)
	log.InfoContext(ctx, "webhook: delivery failed; will retry", "reason", out.reason, "retry_in", wait)
	if err := d.outbox.RetryDelivery(ctx, del.Event.ID, del.Endpoint, d.owner, now.Add(wait), out.reason); err != nil {
		log.WarnContext(ctx, "webhook: cannot schedule the retry; the claim will lapse instead", "error", err)
	}
}

// retryDelay is the wait after failed attempt number attempt (1-based):
// tokenbroker's one cooldown (lifecycle.Policy.CooldownAfter) on the
// dispatcher's Backoff, so retries of many events that failed together
// spread out but never come back at once. A Retry-After longer than that is
// honoured up to Backoff.Max.
func (d *Dispatcher) retryDelay(attempt int, retryAfter time.Duration) time.Duration {
	return lifecycle.Policy{Cooldown: d.backoff}.CooldownAfter(attempt, retryAfter, d.rand())
}

func (d *Dispatcher) send(ctx context.Context, ep *Endpoint, del store.Delivery) outcome {
	body, err := Body(del.Event)
	if err != nil {
		return outcome{reason: "cannot encode the event"}
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.URL, bytes.NewReader(body))
	if err != nil {
		return outcome{rejected: true, reason: "bad endpoint url"}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "tokenbroker-webhooks/1")
	req.Header.Set(HeaderEventID, del.Event.ID)
	req.Header.Set(HeaderEventType, del.Event.Type)
	req.Header.Set(HeaderAttempt, strconv.Itoa(del.Attempt))
	req.Header.Set(HeaderSignature, Sign(ep.Secret, d.now(), body))
	resp, err := d.client.Do(req)
	if err != nil {
		// The error would name the URL; keep only what went wrong.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		reason := "network error"
		if errors.Is(err, context.DeadlineExceeded) {
			reason = "timeout"
		}
		return outcome{reason: reason}
	}
	// Drain a little so the connection can be reused; the body is the
	// receiver's business and is never logged.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	s := resp.StatusCode
	out := outcome{reason: "http " + strconv.Itoa(s)}
	switch {
	case s >= 200 && s < 300:
		out.ok = true
	case s == http.StatusRequestTimeout, s == http.StatusTooManyRequests, s >= 500:
		out.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), d.now())
	default:
		out.rejected = true
	}
	return out
}

// parseRetryAfter reads delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		return time.Duration(min(n, int64(7*24*3600))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
